"""The training loop: epochs of steps, evaluation, checkpoint cadence. Nothing task-specific.

Everything that decides what happens at a step is a function of checkpointed state: the LR comes
from the optimizer's `iterations`, the DropBlock keep probability from the global step, the data
order from `task.train_batches(split, epoch).skip(step_in_epoch)`, and dropout/DropBlock noise from
the model's seed-generator variables. The global step is the one counter (a variable in the
checkpoint); epoch and step-in-epoch are derived from it. So a resumed run continues where it stopped.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from tensorflow.core.framework.summary_pb2 import SummaryMetadata

from finegrain.data import Split
from finegrain.errors import UserError
from finegrain.models import set_dropblock_keep_prob
from finegrain.train import rundir
from finegrain.train.checkpoints import CheckpointInfo, CheckpointStore
from finegrain.train.progress import Reporter
from finegrain.train.schedules import keep_prob_at
from finegrain.train.tasks.base import Task


@dataclass
class EpochTotals:
    """Running sums of the epoch in progress (saved with a mid-epoch checkpoint)."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    seconds: float = 0.0

    def add(self, loss_sum: float, correct: float, seen: int, seconds: float) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += seen
        self.seconds += seconds

    def logs(self) -> dict[str, float]:
        seen = max(self.seen, 1.0)
        return {"loss": self.loss_sum / seen, "accuracy": self.correct / seen,
                "images_per_s": self.seen / max(self.seconds, 1e-9)}


def write_scalars(writer: Any, step: int, scalars: dict[str, float]) -> None:
    """TensorBoard scalars through the core summary op.

    Hand-written because `tf.summary.scalar` needs the tensorboard package, which is not a
    dependency; the event records are the same (plugin "scalars", float32 scalar tensors).
    """
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    with writer.as_default(step=step):
        for key, value in scalars.items():
            tf.summary.write(key, tf.constant(value, tf.float32), metadata=metadata)
    writer.flush()


def release_in_background(refs: list[Any]) -> None:
    """Empty `refs` on a daemon thread, so that objects whose last references it holds are torn down there.

    An epoch's tf.data iterator is released this way: with tf.data autotuning on, its teardown waited
    2.5-2.9 s in about a third of the epochs while training kept the CPU busy (measured on 2 cores,
    TF 2.21; autotuning off avoids it but slowed the pipeline), time in which the next epoch could run.
    """
    threading.Thread(target=refs.clear, name="finegrain-release", daemon=True).start()


def evaluates_after(epochs_done: int, epochs: int, every: int, every_epoch_from: float) -> bool:
    """Whether to evaluate after `epochs_done` epochs: every `every` epochs, after each epoch past
    int(epochs * every_epoch_from) (the original's ratio_fine_eval), and after the last."""
    return epochs_done % every == 0 or epochs_done > int(epochs * every_epoch_from) or epochs_done == epochs


@dataclass
class TrainLoop:
    task: Task
    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    strategy: tf.distribute.Strategy
    train_step: Callable[[Any], Any]
    train_split: Split
    evaluate: Callable[[], dict[str, float]]  # the task's evaluation of the current model
    store: CheckpointStore
    global_step: tf.Variable  # the one step counter, in the checkpoint
    steps_per_epoch: int
    run_dir: Path
    work_dir: Path  # run_dir on the chief, a scratch directory on other workers
    chief: bool
    reporter: Reporter
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float = 600.0
    writer: Any = field(init=False)  # TensorBoard event writer

    def __post_init__(self) -> None:
        self.writer = tf.summary.create_file_writer(str(self.work_dir / rundir.TENSORBOARD))

    @property
    def epochs(self) -> int:
        return self.task.recipe.train.epochs

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def lr(self) -> float:
        return float(self.optimizer.learning_rate)

    def keep_prob(self, step: int) -> float | None:
        t = self.task.recipe.train
        if not self.task.recipe.model.dropblock:
            return None
        return keep_prob_at(step, self.total_steps, t.dropblock_keep_prob_start, t.dropblock_keep_prob_end)

    def run(self, totals: EpochTotals) -> None:
        """Train from the global step in the checkpoint to the end of the last epoch."""
        step = int(self.global_step.numpy())
        for epoch in range(step // self.steps_per_epoch, self.epochs):
            start = step - epoch * self.steps_per_epoch
            totals = totals if start else EpochTotals()
            step = self._train_epoch(epoch, start, totals)
            self._end_epoch(epoch, step, totals)

    def _train_epoch(self, epoch: int, start: int, totals: EpochTotals) -> int:
        batch_size = self.task.recipe.train.batch_size
        batches = self.task.train_batches(self.train_split, epoch).take(self.steps_per_epoch).skip(start)
        self.reporter.on_epoch_begin(epoch, self.steps_per_epoch, start)
        step, last_save = epoch * self.steps_per_epoch + start, time.monotonic()
        tick = last_save
        # a one-item list holds the epoch's only reference to its iterator (see release_in_background)
        iterator = [iter(self.strategy.experimental_distribute_dataset(batches))]
        for batch in iterator[0]:
            keep = self.keep_prob(step)
            if keep is not None:
                set_dropblock_keep_prob(self.model, keep)
            loss_sum, correct = self.train_step(batch)
            step += 1
            now = time.monotonic()
            totals.add(float(loss_sum), float(correct), batch_size, now - tick)
            tick = now
            in_epoch = step - epoch * self.steps_per_epoch
            self.reporter.on_step(epoch, in_epoch, {**totals.logs(), "lr": self.lr()})
            every = self.checkpoint_every_steps
            if in_epoch < self.steps_per_epoch and ((every and in_epoch % every == 0)
                                                    or now - last_save >= self.checkpoint_every_seconds):
                self._save(CheckpointInfo(f"step-{step:08d}", epoch, step, totals=asdict(totals)), step)
                last_save = time.monotonic()
        release_in_background(iterator)
        if not math.isfinite(totals.loss_sum):
            raise UserError(f"the loss diverged in epoch {epoch + 1} (NaN/inf): lower train.base_lr")
        return step

    def _end_epoch(self, epoch: int, step: int, totals: EpochTotals) -> None:
        logs = totals.logs()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": logs["loss"],
                                   "train_accuracy": logs["accuracy"], "lr": self.lr(),
                                   "images_per_s": logs["images_per_s"], "time": time.time()}
        keep = self.keep_prob(step)
        if keep is not None:
            metrics["dropblock_keep_prob"] = keep
        metric = None
        if evaluates_after(epoch + 1, self.epochs, self.task.recipe.eval.every_epochs,
                           self.task.recipe.eval.every_epoch_from):
            results = self.evaluate()
            metrics.update({f"eval_{k}": v for k, v in results.items()})
            metric = results[self.task.best_metric]
        write_scalars(self.writer, epoch + 1, {k: v for k, v in metrics.items() if k not in ("epoch", "step", "time")})
        self._save(CheckpointInfo(f"step-{step:08d}", epoch + 1, step, metric), step, metrics)
        if self.chief:
            rundir.append_metrics(metrics, self.run_dir)
        self.reporter.on_epoch_end(epoch, metrics)

    def _save(self, info: CheckpointInfo, step: int, epoch_metrics: dict[str, Any] | None = None) -> None:
        self.global_step.assign(step)
        self.store.save(info, epoch_metrics)
