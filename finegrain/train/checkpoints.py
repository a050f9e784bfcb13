"""The checkpoint store of a run: the last checkpoint plus the best k by the task's metric.

`checkpoints/state.json` names the last and best checkpoints, holds the epoch history and the
running totals of a part-done epoch (plain numbers, so they live in JSON, not in TensorFlow
variables). Each checkpoint is a `tf.train.Checkpoint` written into a temporary directory that is
renamed into place (atomic on POSIX); only then does `state.json` (itself written atomically) point
at it; stale directories go last. A kill at any moment therefore leaves `state.json` naming a
complete checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tensorflow as tf

from finegrain.errors import UserError, first_line
from finegrain.models.card import CHECKPOINT_STATE
from finegrain.train.rundir import CheckpointInfo, read_state
from finegrain.utils.io import atomic_dir, atomic_write_json


class CheckpointStore:
    """The last and best-k checkpoints of a run, named by `state.json`.

    Non-chief workers of a multi-worker run must take part in saving (tf.distribute may need every
    worker), but their copy is written to a scratch directory and thrown away; they read the chief's
    checkpoints (the run directory is on storage every worker sees) to resume from the same step."""

    def __init__(self, directory: Path, checkpoint: tf.train.Checkpoint, *, keep_best: int = 3,
                 is_chief: bool = True) -> None:
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.keep_best = keep_best
        self.is_chief = is_chief
        self.state: dict[str, Any] = {"last": None, "best": [], "history": []}
        if is_chief:
            self.directory.mkdir(parents=True, exist_ok=True)
        if (self.directory / CHECKPOINT_STATE).is_file():
            self.state = read_state(self.directory)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.state["history"]

    @property
    def last(self) -> CheckpointInfo | None:
        return CheckpointInfo(**self.state["last"]) if self.state["last"] else None

    @property
    def best(self) -> list[CheckpointInfo]:
        return [CheckpointInfo(**b) for b in self.state["best"]]

    def save(self, info: CheckpointInfo, epoch_metrics: dict[str, Any] | None = None) -> None:
        """Save the current state as the last checkpoint; with a metric, also enter it into the best k."""
        if not self.is_chief:
            scratch = tempfile.mkdtemp(prefix="finegrain-worker-ckpt-")
            try:
                self.checkpoint.write(os.path.join(scratch, "ckpt"))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        target = self.directory / info.name
        if not target.exists():
            with atomic_dir(target) as tmp:
                self.checkpoint.write(str(tmp / "ckpt"))
        state = {"last": asdict(info), "best": list(self.state["best"]), "history": list(self.state["history"])}
        if epoch_metrics is not None:
            state["history"] = [h for h in state["history"] if h["epoch"] < epoch_metrics["epoch"]] + [epoch_metrics]
        if info.metric is not None:
            best = [b for b in state["best"] if b["name"] != info.name] + [asdict(info)]
            best.sort(key=lambda b: (-b["metric"], b["step"]))
            state["best"] = best[: self.keep_best]
        atomic_write_json(self.directory / CHECKPOINT_STATE, state)
        self.state = state
        self.remove_stale()

    def remove_stale(self) -> None:
        """Remove checkpoints no longer named, and temporary directories a kill left behind (chief only)."""
        if not self.is_chief:
            return
        keep = {b["name"] for b in self.state["best"]} | ({self.state["last"]["name"]} if self.state["last"] else set())
        for path in self.directory.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)

    def restore_last(self) -> CheckpointInfo:
        info = self.last
        if info is None:
            raise UserError(f"no checkpoint in {self.directory}")
        path = self.directory / info.name / "ckpt"
        try:
            self.checkpoint.read(str(path)).assert_existing_objects_matched()
        except Exception as e:  # damaged files surface as OpError, ValueError, IndexError, AssertionError
            raise UserError(f"the last checkpoint {path} is damaged ({first_line(e)}): restore the run directory "
                            "from a copy, or start a new run") from None
        return info
