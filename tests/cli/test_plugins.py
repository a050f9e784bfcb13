"""FINEGRAIN_PLUGINS: a user's own architectures registered before any command runs (the installed
script training one is in tests/train/test_distill.py)."""

from __future__ import annotations

from tests.cli.conftest import run


def test_a_plugin_that_cannot_be_imported_is_one_line(capsys, monkeypatch):
    monkeypatch.setenv("FINEGRAIN_PLUGINS", "no_such_module_here")
    code, out, err = run(capsys, "models")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot import no_such_module_here named in FINEGRAIN_PLUGINS: ModuleNotFoundError" in err
