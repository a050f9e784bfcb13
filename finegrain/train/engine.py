"""`tune`: set up a run (runtime, strategy, data, model, optimizer, checkpoints), hand it to the loop,
then finish it (final weights, export, curves, summary).

The pieces live apart: the task (finegrain.train.tasks) says what is trained and how it is scored,
the loop (finegrain.train.loop) steps through epochs, the step (finegrain.train.step) runs under any
tf.distribute strategy, the checkpoint store (finegrain.train.checkpoints) keeps nothing half-written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config

from finegrain.data import Split, load_split, pipeline
from finegrain.errors import UserError
from finegrain.models import ModelCard, build_model, create_model, load_weights, model_entry
from finegrain.models.refs import keras_forward
from finegrain.models.weights import save_weights
from finegrain.train import rundir
from finegrain.train.checkpoints import CheckpointStore
from finegrain.train.export import export_saved_model
from finegrain.train.loop import EpochTotals, TrainLoop
from finegrain.train.progress import Reporter
from finegrain.train.recipe import PRECISIONS, SCRATCH, Recipe, pretraining_recipe
from finegrain.train.schedules import bn_momentum_for, learning_rate
from finegrain.train.step import make_train_step
from finegrain.train.strategy import is_chief, is_mirrored, is_multiworker, make_strategy
from finegrain.train.tasks import get_task
from finegrain.train.tasks.base import Task
from finegrain.utils.io import atomic_write_json


@dataclass
class TuneResult:
    run_dir: Path
    model: keras.Model
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def with_runtime(recipe: Recipe, strategy: str | None, precision: str | None, xla: bool | None) -> Recipe:
    """The recipe with the command line's runtime options (they may differ on resume)."""
    changes = {k: v for k, v in (("strategy", strategy), ("precision", precision), ("xla", xla)) if v is not None}
    if "precision" in changes and changes["precision"] not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}' (choose one of {', '.join(PRECISIONS)})")
    return dataclasses.replace(recipe, runtime=dataclasses.replace(recipe.runtime, **changes)) if changes else recipe


@contextlib.contextmanager
def runtime_settings(recipe: Recipe) -> Iterator[None]:
    """Process-wide settings for the run, put back afterwards so a library caller's later work is unaffected."""
    determinism_was_on = tf_config.is_op_determinism_enabled()
    if recipe.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(recipe.train.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(recipe.runtime.precision)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if recipe.runtime.deterministic and not determinism_was_on:
            tf_config.disable_op_determinism()


def tune(recipe: Recipe | None, run_dir: str | Path, *, resume: bool = False, strategy: str | None = None,
         precision: str | None = None, xla: bool | None = None, reporter: Reporter | None = None,
         checkpoint_every_steps: int | None = None, checkpoint_every_seconds: float = 600.0) -> TuneResult:
    """Train `recipe` into `run_dir` (new), or continue the run in `run_dir` (`resume=True`).

    On resume the recipe stored in the run directory is used (a given `recipe` is ignored), except
    for the runtime options strategy/precision/xla given here; a run killed before its first
    checkpoint starts again from its beginning. Checkpoints are written after every epoch and,
    within an epoch, every `checkpoint_every_steps` steps / `checkpoint_every_seconds`.
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    if resume:
        recipe = rundir.read_recipe(rundir.check_resumable(run_dir))
    elif recipe is None:
        raise UserError("give a recipe to start a run (or resume=True with an existing run directory)")
    recipe = with_runtime(recipe, strategy, precision, xla)
    # The strategy first: MultiWorkerMirroredStrategy must exist before any TensorFlow op runs.
    strat = make_strategy(recipe.runtime.strategy)
    chief = is_chief(strat)
    if not resume and chief:
        rundir.claim_new(run_dir)
    work_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="finegrain-worker-"))
    try:
        with runtime_settings(recipe):
            return _tune(get_task(recipe.task)(recipe), run_dir, work_dir, strat, chief, resume, reporter,
                         checkpoint_every_steps, checkpoint_every_seconds)
    except BaseException:
        if not resume and chief and not rundir.has_checkpoint(run_dir):
            # Nothing to resume yet: leave no half-made run directory that would block a retry.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)


def steps_per_epoch(recipe: Recipe, split: Split, replicas: int, reporter: Reporter) -> int:
    t = recipe.train
    available = pipeline.steps_per_epoch(split.num_examples, t.batch_size, recipe.data.mixup_type)
    if available < 1:
        raise UserError(f"train.batch_size={t.batch_size} is too large for the {split.num_examples} "
                        f"training images (mixup type 1 uses two images per example): lower it")
    if t.batch_size % replicas:
        raise UserError(f"train.batch_size={t.batch_size} must divide by the {replicas} replicas")
    if t.steps_per_epoch and t.steps_per_epoch > available:
        reporter.message(f"train.steps_per_epoch={t.steps_per_epoch} exceeds one pass over the data: using {available}")
    return min(t.steps_per_epoch or available, available)


def _pretraining_hint(arch: str) -> str:
    """Where pretrained weights of `arch` come from when none were released (the retrieval backbone)."""
    recipe = pretraining_recipe(arch)
    if model_entry(arch).has_official_weights or recipe is None:
        return ""
    return (f"; no weights of {arch} were released: pretrain it with `finegrain tune --recipe {recipe}` "
            f"and set model.init to that run directory")


def _model_and_optimizer(task: Task, card: ModelCard, steps: int, resume: bool,
                         reporter: Reporter) -> tuple[keras.Model, keras.optimizers.Optimizer]:
    recipe = task.recipe
    m, t = recipe.model, recipe.train
    init = None if resume else m.init  # a resumed run restores every weight next
    if init == "official":
        init = f"official:{m.arch}"
    if init is None and not resume:
        reporter.message(f"warning: model.init is not set: training {m.arch} from scratch (no pretrained weights)"
                         + _pretraining_hint(m.arch))
    if init == SCRATCH:
        init = None
    model, fresh = build_model(card, init, dropblock=m.dropblock, bn_momentum=bn_momentum_for(steps, t.bn_momentum))
    if fresh and init is not None:
        reporter.message(f"model.init {init}: {len(fresh)} head weight(s) of another shape start fresh")
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate(t, steps), momentum=t.momentum)
    if recipe.runtime.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _tune(task: Task, run_dir: Path, work_dir: Path, strat: tf.distribute.Strategy, chief: bool, resume: bool,
          reporter: Reporter, checkpoint_every_steps: int | None, checkpoint_every_seconds: float) -> TuneResult:
    recipe = task.recipe
    d, t = recipe.data, recipe.train
    model_entry(recipe.model.arch)  # an unknown name fails before any work or message
    train_split = load_split(d.source, d.train_split, data_dir=d.data_dir, seed=t.seed)
    if train_split.num_classes < 2:
        raise UserError(f"{d.source} has {train_split.num_classes} class in split {d.train_split}: "
                        "a classifier needs at least 2")
    task.prepare(train_split)  # distillation targets checked before the run directory is written
    steps = steps_per_epoch(recipe, train_split, strat.num_replicas_in_sync, reporter)
    card = task.card(train_split.class_names)
    if chief:
        if resume:
            rundir.clean_temporaries(run_dir)
        else:
            rundir.save_new(run_dir, recipe, card, train_split.skipped)
    if train_split.skipped:
        reporter.message(f"skipped {len(train_split.skipped)} unreadable image(s); the list is in "
                         f"{run_dir / rundir.SKIPPED}")

    with strat.scope():
        model, optimizer = _model_and_optimizer(task, card, steps, resume, reporter)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    rng = {str(i): v for i, v in enumerate(v for v in model.non_trainable_variables if "seed_generator" in v.path)}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=rng, global_step=global_step)
    # Every worker reads the chief's checkpoints (a resumed worker starts where the chief does); only
    # the chief writes there.
    store = CheckpointStore(run_dir / rundir.CHECKPOINTS, checkpoint, keep_best=recipe.eval.keep_best,
                            is_chief=chief)
    totals = EpochTotals()
    if resume and store.last is not None:
        totals = EpochTotals(**store.restore_last().totals)
        store.remove_stale()
    if resume and chief:
        rundir.write_metrics(store.history, run_dir)

    eval_split: list[Split] = []  # loaded at the first evaluation
    forward = keras_forward(model)

    def evaluate() -> dict[str, float]:
        if not eval_split:
            eval_split.append(load_split(d.source, d.eval_split, data_dir=d.data_dir, seed=t.seed))
        return task.evaluate_model(forward, card, eval_split[0])

    step0 = int(global_step.numpy())
    reporter.on_start({"run_dir": str(run_dir), "model": recipe.model.arch, "data": d.source,
                       "classes": train_split.num_classes, "epochs": t.epochs, "steps_per_epoch": steps,
                       "batch": t.batch_size, "replicas": strat.num_replicas_in_sync, "precision": recipe.runtime.precision,
                       **({"resumed_at": f"epoch {step0 // steps + 1} step {step0 % steps}"} if resume else {})})
    loop = TrainLoop(task=task, model=model, optimizer=optimizer, strategy=strat,
                     train_step=make_train_step(model, optimizer, strat, task, t.batch_size, xla=recipe.runtime.xla),
                     train_split=train_split, evaluate=evaluate, store=store, global_step=global_step,
                     steps_per_epoch=steps, run_dir=run_dir, work_dir=work_dir, chief=chief, reporter=reporter,
                     checkpoint_every_steps=checkpoint_every_steps,
                     # Workers' clocks differ; a save on one worker only would desynchronise them. Steps only.
                     checkpoint_every_seconds=math.inf if is_multiworker(strat) else checkpoint_every_seconds)
    loop.run(totals)
    summary = _finish(task, model, card, store, run_dir, chief, strat)
    reporter.on_end(summary)
    return TuneResult(run_dir=run_dir, model=model, history=store.history,
                      best=dataclasses.asdict(store.best[0]) if store.best else None, summary=summary)


def _finish(task: Task, model: keras.Model, card: ModelCard, store: CheckpointStore, run_dir: Path, chief: bool,
            strat: tf.distribute.Strategy) -> dict[str, Any]:
    """Final weights, SavedModel export, learning-curve plot (chief only) and the summary."""
    history = store.history
    summary: dict[str, Any] = {"run_dir": str(run_dir), "epochs": len(history),
                               "replicas": strat.num_replicas_in_sync}
    if history:
        summary.update({k: v for k, v in history[-1].items() if k.startswith(("train_", "eval_"))})
    if store.best and store.best[0].metric is not None:
        summary[f"best_{task.best_metric}"] = store.best[0].metric
        summary["best_epoch"] = store.best[0].epoch
    if not chief:
        return summary
    weights = run_dir / rundir.WEIGHTS
    save_weights(model, weights)
    serving = model
    if is_mirrored(strat):
        # A plain (non-distributed) copy exports cleanly whatever the training strategy was.
        serving = create_model(card.arch, **card.model_options())
        load_weights(serving, weights)
    if not (run_dir / rundir.EXPORT).exists():  # else a resumed run had finished its export already
        export_saved_model(serving, run_dir / rundir.EXPORT, card)
    rundir.plot_curves(history, run_dir / rundir.CURVES)
    atomic_write_json(run_dir / rundir.SUMMARY, summary)
    return summary
