"""The package's layering, read off every module's imports (AST, function-level imports included):
no import cycle between files or between packages, the library never imports the CLI, evaluation
never imports training, and the layers go one way: cli -> train -> evaluate -> data, models -> utils -> errors."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import finegrain

ROOT = Path(finegrain.__file__).parent
# Each package may import only from packages of a lower layer (and itself).
LAYERS = {"cli": 4, "train": 3, "evaluate": 2, "data": 1, "models": 1, "utils": 0, "errors": -1, "__init__": -1,
          "__main__": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """finegrain modules that `path` imports (`from finegrain.x import y` counts y when y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            # A package that re-exports lazily (finegrain.models) maps each name to its defining module.
            lazy = getattr(importlib.import_module(node.module), "_EXPORTS", {}) if node.module in modules else {}
            names += [f"{node.module}.{lazy[a.name]}" for a in node.names if a.name in lazy]
        else:
            continue
        found |= {n for n in names if n in modules}
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    edges = {name: imports_of(path, modules) - {name} for name, path in files.items()}
    # `import finegrain.a.b` runs finegrain/a/__init__.py: a package's own __init__ is not an edge of its modules.
    return {name: {t for t in targets if not name.startswith(t + ".")} for name, targets in edges.items()}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_cycle_between_files():
    assert find_cycle(graph()) is None


def test_no_cycle_between_packages_and_layers_go_one_way():
    edges = graph()
    wrong = sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                   if package(a) != package(b) and LAYERS[package(b)] >= LAYERS[package(a)])
    assert wrong == []
    packages: dict[str, set[str]] = {}
    for a, targets in edges.items():
        packages.setdefault(package(a), set()).update(package(b) for b in targets if package(b) != package(a))
    assert find_cycle(packages) is None


@pytest.mark.parametrize("forbidden, allowed_from", [("finegrain.cli", "finegrain.cli"),
                                                      ("finegrain.train", ("finegrain.train", "finegrain.cli"))])
def test_library_never_imports_the_cli_and_evaluation_never_imports_training(forbidden, allowed_from):
    offenders = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets
                       if b.startswith(forbidden) and not a.startswith(allowed_from) and a != "finegrain.__main__")
    assert offenders == []


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_re_exports_and_function_level_imports():
    edges = graph()
    assert "finegrain.models.refs" in edges["finegrain.train.engine"]  # from finegrain.models import build_model
    assert "finegrain.train.engine" in edges["finegrain.cli.train"]  # imported inside the command
