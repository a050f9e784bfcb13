"""A run directory: everything one fine-tuning run writes, laid out so nothing is ever lost.

```
RUN_DIR/
  recipe.yaml          the resolved recipe (defaults + file + overrides + CLI runtime options)
  classes.json         class names, in logit order
  metrics.jsonl        one JSON line per epoch (rewritten from state.json on resume)
  tensorboard/         TensorBoard event files
  checkpoints/
    state.json         which checkpoint is the last, which are the best k, and the epoch history
    step-00000120/     tf.train.Checkpoint (model + optimizer + counters), one directory per save
  model.weights.h5     final Keras weights (written at the end)
  export/              SavedModel for serving: uint8 images -> probabilities/logits; `embedding` signature
  curves.png           learning curves
  summary.json         final figures (best metric and epoch, last epoch's metrics)
```

Checkpoints are written into a temporary directory that is renamed into place (atomic on POSIX),
and only then does `state.json` (itself written atomically) point at them; stale directories are
removed last. A kill at any moment therefore leaves `state.json` naming a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finegrain.errors import UserError
from finegrain.utils.io import append_line, atomic_path, atomic_write_json, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import tensorflow as tf

    from finegrain.train.recipe import Recipe

RECIPE = "recipe.yaml"
CLASSES = "classes.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
STATE = "state.json"
WEIGHTS = "model.weights.h5"
EXPORT = "export"
CURVES = "curves.png"
SUMMARY = "summary.json"


def default_run_dir(recipe_name: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<recipe-name>-<YYYYmmdd-HHMMSS>."""
    import time

    return Path(root) / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def is_run_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / RECIPE).is_file() and ((path / CHECKPOINTS / STATE).is_file() or (path / WEIGHTS).is_file())


def prepare_new(run_dir: str | os.PathLike) -> Path:
    """Create a fresh run directory; an existing non-empty one is refused (it would be overwritten)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(
            f"run directory {run_dir} already exists: continue it with --resume {run_dir}, or choose another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def check_resumable(run_dir: str | os.PathLike) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file():
        raise UserError(f"cannot resume {run_dir}: it is not a finegrain run directory (no {RECIPE})")
    if not (run_dir / CHECKPOINTS / STATE).is_file():
        raise UserError(f"cannot resume {run_dir}: it holds no checkpoint yet; start it again with a new --run-dir")
    return run_dir


def save_recipe(recipe: Recipe, run_dir: Path) -> None:
    from finegrain.train.recipe import save_recipe as save

    save(recipe, run_dir / RECIPE)


def read_recipe(run_dir: str | os.PathLike) -> Recipe:
    from finegrain.train.recipe import load_recipe

    return load_recipe(str(Path(run_dir) / RECIPE))


def save_classes(class_names: list[str], run_dir: Path) -> None:
    atomic_write_json(run_dir / CLASSES, list(class_names))


def read_classes(run_dir: str | os.PathLike) -> list[str]:
    return json.loads((Path(run_dir) / CLASSES).read_text())


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


@dataclass
class CheckpointInfo:
    name: str
    epoch: int  # completed epochs at save time
    step: int  # global step at save time
    metric: float | None = None


class CheckpointStore:
    """The last checkpoint plus the best `keep_best` by a metric (higher is better), saved atomically.

    Non-chief workers of a multi-worker run must take part in saving (tf.distribute may need every
    worker), but their copy is written to a scratch directory and thrown away.
    """

    def __init__(self, directory: Path, checkpoint: tf.train.Checkpoint, *, keep_best: int = 3,
                 is_chief: bool = True) -> None:
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.keep_best = keep_best
        self.is_chief = is_chief
        self.state: dict[str, Any] = {"last": None, "best": [], "history": []}
        if is_chief:
            self.directory.mkdir(parents=True, exist_ok=True)
            if (self.directory / STATE).is_file():
                self.state = json.loads((self.directory / STATE).read_text())

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state["history"]

    @property
    def last(self) -> CheckpointInfo | None:
        return CheckpointInfo(**self.state["last"]) if self.state["last"] else None

    @property
    def best(self) -> list[CheckpointInfo]:
        return [CheckpointInfo(**b) for b in self.state["best"]]

    def save(self, *, epoch: int, step: int, metric: float | None = None,
             epoch_metrics: dict[str, Any] | None = None) -> CheckpointInfo:
        """Save the current state as the last checkpoint; with `metric`, also enter it into the best k."""
        info = CheckpointInfo(name=f"step-{step:08d}", epoch=epoch, step=step, metric=metric)
        if not self.is_chief:
            scratch = tempfile.mkdtemp(prefix="finegrain-worker-ckpt-")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return info
        target = self.directory / info.name
        if not target.exists():
            tmp = Path(tempfile.mkdtemp(dir=self.directory, prefix=".tmp-"))
            self.checkpoint.write(str(tmp / "ckpt"))
            os.rename(tmp, target)  # atomic: the directory appears complete or not at all
        state = {k: (list(v) if isinstance(v, list) else v) for k, v in self.state.items()}
        state["last"] = vars(info)
        if epoch_metrics is not None:
            state["history"] = [h for h in state["history"] if h["epoch"] < epoch_metrics["epoch"]] + [epoch_metrics]
        if metric is not None:
            best = [b for b in state["best"] if b["name"] != info.name] + [vars(info)]
            best.sort(key=lambda b: (-b["metric"], b["step"]))
            state["best"] = best[: self.keep_best]
        atomic_write_json(self.directory / STATE, state)
        self.state = state
        self._remove_stale()
        return info

    def _remove_stale(self) -> None:
        keep = {self.state["last"]["name"]} | {b["name"] for b in self.state["best"]}
        for path in self.directory.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def path_of(self, info: CheckpointInfo) -> str:
        return str(self.directory / info.name / "ckpt")

    def restore_last(self) -> CheckpointInfo:
        info = self.last
        if info is None:
            raise UserError(f"no checkpoint in {self.directory}")
        self.checkpoint.read(self.path_of(info)).assert_existing_objects_matched()
        return info


def last_checkpoint_path(run_dir: str | os.PathLike) -> str | None:
    state_file = Path(run_dir) / CHECKPOINTS / STATE
    if not state_file.is_file():
        return None
    state = json.loads(state_file.read_text())
    return str(Path(run_dir) / CHECKPOINTS / state["last"]["name"] / "ckpt") if state.get("last") else None


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """PNG of train loss / accuracy and the evaluation metric per epoch (matplotlib, Agg backend)."""
    import matplotlib

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


def load_run(run_dir: str | os.PathLike) -> tuple[keras.Model, list[str], Recipe]:
    """The trained model of a run (final weights, else its last checkpoint), its class names and recipe."""
    import tensorflow as tf

    from finegrain.train.engine import build_model

    run_dir = Path(run_dir)
    if not (run_dir / RECIPE).is_file() or not (run_dir / CLASSES).is_file():
        raise UserError(f"{run_dir} is not a finegrain run directory (needs {RECIPE} and {CLASSES})")
    recipe = read_recipe(run_dir)
    class_names = read_classes(run_dir)
    model = build_model(recipe, len(class_names), init=None)
    if (run_dir / WEIGHTS).is_file():
        model.load_weights(run_dir / WEIGHTS)
    else:
        ckpt = last_checkpoint_path(run_dir)
        if ckpt is None:
            raise UserError(f"{run_dir} holds neither final weights nor a checkpoint")
        tf.train.Checkpoint(model=model).read(ckpt).expect_partial()
    return model, class_names, recipe
