"""A run directory: everything one training run writes, laid out so nothing is ever lost.

```
RUN_DIR/
  .claimed             made first, exclusively (O_EXCL): two runs started at once never share a directory
  model.json           the model card: arch, head, image size, eval preprocessing, classes, logit scale
  recipe.yaml          the resolved recipe (defaults + file + overrides + CLI runtime options)
  classes.json         class names, in logit order
  metrics.jsonl        one JSON line per epoch (rewritten from state.json on resume)
  skipped_images.txt   unreadable images left out of the run (only when there were some)
  tensorboard/         TensorBoard event files
  checkpoints/         state.json + one tf.train.Checkpoint per directory (finegrain.train.checkpoints)
  model.weights.h5     final Keras weights (written at the end)
  export/              SavedModel for serving: uint8 images -> probabilities/logits; `embedding` signature
  curves.png           learning curves
  summary.json         final figures (best metric and epoch, last epoch's metrics)
```

A run directory is a model directory (finegrain.models.card): `finegrain.models.load_model(RUN_DIR)`
loads it without the recipe parser or the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finegrain.data.folder import skipped_report
from finegrain.errors import UserError
from finegrain.models.card import CARD_FILE, CHECKPOINT_STATE, CHECKPOINTS_DIR, WEIGHTS_FILE, ModelCard, write_card
from finegrain.train.recipe import Recipe, load_recipe, save_recipe
from finegrain.utils.io import append_line, atomic_path, atomic_write_json, atomic_write_text

CARD = CARD_FILE
RECIPE = "recipe.yaml"
CLASSES = "classes.json"
METRICS = "metrics.jsonl"
SKIPPED = "skipped_images.txt"
TENSORBOARD = "tensorboard"
CHECKPOINTS = CHECKPOINTS_DIR
STATE = CHECKPOINT_STATE
WEIGHTS = WEIGHTS_FILE
EXPORT = "export"
CURVES = "curves.png"
SUMMARY = "summary.json"
CLAIM = ".claimed"

# Directories this process claimed: the CLI claims before TensorFlow's start-up, the engine again.
_claimed_here: set[Path] = set()


def default_run_dir(recipe_name: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<recipe-name>-<YYYYmmdd-HHMMSS> (`claim_default` numbers it when that is taken)."""
    return Path(root) / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new(run_dir: str | os.PathLike) -> Path:
    """Refuse a run directory that would overwrite something; checked before TensorFlow starts."""
    run_dir = Path(run_dir)
    if str(run_dir).strip() == "":
        raise UserError("--run-dir is empty: name a new directory")
    _check_no_file_in_the_way(run_dir)
    if not _is_free(run_dir):
        if (run_dir / RECIPE).is_file():
            hint = f"continue it with --resume {run_dir}"
        elif _holds_only_the_claim(run_dir):
            hint = f"another run took it (it holds only {CLAIM}); choose a new --run-dir"
        else:
            hint = "it holds other files; choose a new --run-dir"
        raise UserError(f"run directory {run_dir} already exists: {hint}")
    return run_dir


def claim_new(run_dir: str | os.PathLike) -> Path:
    """Take `run_dir` (absent or empty) for a new run, or raise UserError.

    Checking that a directory is free and then writing to it is a race: two runs started in the
    same second (a sweep started in a loop) would share it and overwrite each other. The claim file
    is created with O_EXCL, so exactly one of them gets the directory. Claiming it again in this
    process before anything else was written there returns it again.
    """
    run_dir = Path(run_dir)
    if run_dir.resolve() in _claimed_here and _holds_only_the_claim(run_dir):
        return run_dir
    if not _take(check_new(run_dir)):
        raise UserError(f"run directory {run_dir} was just taken by another run: choose a new --run-dir")
    return run_dir


def claim_default(recipe_name: str, root: str | os.PathLike = "runs") -> Path:
    """Claim runs/<recipe-name>-<YYYYmmdd-HHMMSS>, or -2, -3, ... after it if runs started that second took it."""
    base = candidate = default_run_dir(recipe_name, root)
    _check_no_file_in_the_way(base)
    n = 1
    while not (_is_free(candidate) and _take(candidate)):  # not free, or taken in between: the next number
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def release_unused(run_dir: str | os.PathLike) -> None:
    """Give back a claimed directory in which nothing was written (a command that failed before training)."""
    run_dir = Path(run_dir)
    if run_dir.resolve() not in _claimed_here:  # another process's claim (a multi-worker chief) is not ours to drop
        return
    _claimed_here.discard(run_dir.resolve())
    if _holds_only_the_claim(run_dir):
        shutil.rmtree(run_dir, ignore_errors=True)


def _check_no_file_in_the_way(run_dir: Path) -> None:
    for parent in (run_dir, *run_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"cannot create run directory {run_dir}: {parent} is a file")


def _is_free(run_dir: Path) -> bool:
    """Absent, or an empty directory."""
    return not (run_dir.exists() and any(run_dir.iterdir()))


def _holds_only_the_claim(run_dir: Path) -> bool:
    return run_dir.is_dir() and [p.name for p in run_dir.iterdir()] == [CLAIM]


def _take(run_dir: Path) -> bool:
    """Create `run_dir` if needed and its claim file exclusively; False when another run holds it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        os.close(os.open(run_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror or e}") from None
    _claimed_here.add(run_dir.resolve())
    return True


def check_resumable(run_dir: str | os.PathLike) -> Path:
    """A run directory that --resume can continue (checked before TensorFlow starts)."""
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file():
        raise UserError(f"cannot resume {run_dir}: it is not a finegrain run directory (no {RECIPE})")
    if has_checkpoint(run_dir):
        read_state(run_dir / CHECKPOINTS)
    return run_dir


def has_checkpoint(run_dir: str | os.PathLike) -> bool:
    return (Path(run_dir) / CHECKPOINTS / STATE).is_file()


def save_new(run_dir: Path, recipe: Recipe, card: ModelCard, skipped: list[tuple[str, str]]) -> None:
    """What a run knows before its first step: recipe, classes, model card, skipped images."""
    save_recipe(recipe, run_dir / RECIPE)
    atomic_write_json(run_dir / CLASSES, list(card.class_names or ()))
    write_card(card, run_dir)
    if skipped:
        atomic_write_text(run_dir / SKIPPED, skipped_report(skipped) + "\n")


def read_recipe(run_dir: str | os.PathLike) -> Recipe:
    return load_recipe(str(Path(run_dir) / RECIPE))


def read_classes(run_dir: str | os.PathLike) -> list[str]:
    return json.loads((Path(run_dir) / CLASSES).read_text())


def clean_temporaries(run_dir: Path) -> None:
    """Remove the temporary files and directories (`.NAME.tmp-*`) a killed run left at the top."""
    for path in run_dir.glob(".*.tmp*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def write_metrics(history: list[dict[str, Any]], run_dir: Path) -> None:
    """Rewrite metrics.jsonl from the checkpointed history (used on resume: drops lines past the checkpoint)."""
    atomic_write_text(run_dir / METRICS, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def append_metrics(metrics: dict[str, Any], run_dir: Path) -> None:
    """One fsynced JSON line per epoch."""
    append_line(run_dir / METRICS, json.dumps(metrics, sort_keys=True))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """PNG of train loss / accuracy and the evaluation metrics per epoch (matplotlib, Agg backend)."""
    import matplotlib  # here, not at the top: matplotlib.use must run before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], marker="o", label="train accuracy")
    for key in sorted({k for h in history for k in h if k.startswith("eval_")}):
        points = [(h["epoch"], h[key]) for h in history if key in h]
        ax_acc.plot([p[0] for p in points], [p[1] for p in points], marker="s", label=key.replace("eval_", "eval "))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# The checkpoint store's index (finegrain.train.checkpoints), readable without TensorFlow.


@dataclass
class CheckpointInfo:
    name: str
    epoch: int  # completed epochs at save time
    step: int  # global step at save time
    metric: float | None = None
    totals: dict[str, float] = field(default_factory=dict)  # the part-done epoch's running sums


def read_state(directory: Path) -> dict[str, Any]:
    """`state.json`, checked: a damaged one is a UserError, never a traceback."""
    path = Path(directory) / CHECKPOINT_STATE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("history", []), list):
            raise ValueError
        state = {"last": state.get("last"), "best": list(state.get("best", [])), "history": state["history"]}
        for entry in [state["last"], *state["best"]] if state["last"] else state["best"]:
            CheckpointInfo(**entry)
        return state
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is damaged (not the JSON finegrain writes): restore the run directory from a "
                        "copy, or start a new run") from None
