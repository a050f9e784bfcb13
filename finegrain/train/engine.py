"""The fine-tuning engine: a custom training loop under tf.distribute, with resumable run directories.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the step is
hand-written: `strategy.run(replica_step)` inside a `tf.function`, the loss averaged over the global
batch with `tf.nn.compute_average_loss`. The same code runs under the default strategy, Mirrored and
MultiWorkerMirrored.

Everything that decides what happens at a step is a function of state that is checkpointed:
the LR comes from the optimizer's `iterations`, the DropBlock keep probability from the global step,
the data order from `train_batches(seed, epoch).skip(step_in_epoch)`, and dropout/DropBlock noise
from the model's seed-generator variables. So `tune(..., resume=True)` continues where a run stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from finegrain.errors import UserError
from finegrain.train import rundir
from finegrain.train.losses import decayed_variables, per_example_loss, weight_decay_loss
from finegrain.train.progress import Reporter
from finegrain.train.recipe import PRECISIONS, STRATEGIES, Recipe
from finegrain.utils.io import atomic_write_json
from finegrain.train.schedules import WarmupCosine, bn_momentum_for, keep_prob_at


# ---------------------------------------------------------------------------------------------
# The packages the engine builds on (looked up at call time so each stays importable on its own)


def _create_model(arch: str, **kwargs: Any) -> keras.Model:
    from finegrain.models import create_model

    return create_model(arch, **kwargs)


def _load_split(source: str, split: str, *, data_dir: str | None, seed: int) -> Any:
    from finegrain.data import load_split

    return load_split(source, split, data_dir=data_dir, seed=seed)


def _train_batches(split: Any, **kwargs: Any) -> tf.data.Dataset:
    from finegrain.data import pipeline

    return pipeline.train_batches(split, **kwargs)


def _eval_batches(split: Any, **kwargs: Any) -> tf.data.Dataset:
    from finegrain.data import pipeline

    return pipeline.eval_batches(split, **kwargs)


def _set_bn_momentum(model: keras.Model, momentum: float) -> None:
    from finegrain.models import set_bn_momentum

    set_bn_momentum(model, momentum)


def _steps_per_epoch(num_examples: int, batch_size: int, mixup_type: int) -> int:
    from finegrain.data import pipeline

    return pipeline.steps_per_epoch(num_examples, batch_size, mixup_type)


def _set_keep_prob(model: keras.Model, keep_prob: float) -> None:
    from finegrain.models import set_dropblock_keep_prob

    set_dropblock_keep_prob(model, keep_prob)


# ---------------------------------------------------------------------------------------------
# Strategy, precision, model


def make_strategy(name: str) -> tf.distribute.Strategy:
    """auto: MirroredStrategy when several GPUs are visible, else the default strategy.

    `mirrored` without GPUs mirrors over the logical CPU devices (tests make two). `multiworker`
    reads the cluster from TF_CONFIG and must be created before TensorFlow runs any op.
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy '{name}' (choose one of {', '.join(STRATEGIES)})")
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs TF_CONFIG describing the cluster (see the README)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The worker that writes the run directory (task 0 when the cluster has no 'chief' job)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


def _copy_matching_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy weights in creation order, skipping those whose shape changed (the classifier)."""
    if len(source.weights) != len(target.weights):
        raise UserError("model.init run has a different architecture (model.arch/pooling/embedding_size/head)")
    copied = 0
    for src, dst in zip(source.weights, target.weights):
        if tuple(src.shape) == tuple(dst.shape):
            dst.assign(src.value)
            copied += 1
    return copied


def build_model(recipe: Recipe, num_classes: int, *, init: str | None | bool = True,
                reporter: Reporter | None = None) -> keras.Model:
    """create_model for the recipe with `num_classes` outputs, initialised from `init`.

    `init=True` means the recipe's `model.init`; None means random initialisation (no warning, used
    when weights are restored next). A finegrain run directory, a Keras weights file or an official
    TF1 checkpoint all keep BatchNorm statistics; the classifier is new when the class count differs.
    """
    m = recipe.model
    kwargs = dict(num_classes=num_classes, embedding_size=m.embedding_size, pooling=m.pooling, head=m.head,
                  dropblock=m.dropblock)
    source = m.init if init is True else init
    if init is True and source is None:
        message = f"warning: model.init is not set: training {m.arch} from scratch (no pretrained weights)"
        (reporter.message if reporter else warnings.warn)(message)
    if source is None:  # from scratch: residual blocks start as identities (stable without pretraining)
        return _create_model(m.arch, zero_init_residual=True, **kwargs)
    if source == "official":
        from finegrain.models.official import official_weights

        source = official_weights(m.arch)
    if rundir.is_run_dir(source):
        previous, _, _ = rundir.load_run(source)
        model = _create_model(m.arch, **kwargs)
        _copy_matching_weights(previous, model)
        return model
    if not os.path.exists(source) and not os.path.exists(source + ".index"):
        raise UserError(f"model.init {source} does not exist (a .weights.h5 file, a TF1 checkpoint or a run directory)")
    if source.endswith(".h5"):
        # A Keras weights file may carry another classifier: every layer that fits is loaded.
        model = _create_model(m.arch, **kwargs)
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always")
            model.load_weights(source, skip_mismatch=True)
        if any("could not be loaded" in str(w.message) for w in skipped) and reporter:
            reporter.message(f"model.init {source}: layers of another shape (the classifier) start fresh")
        return model
    return _create_model(m.arch, weights=source, **kwargs)


# ---------------------------------------------------------------------------------------------
# Evaluation


def default_recall_ks(num_examples: int) -> list[int]:
    return [1, 10, 100, 1000] if num_examples > 20_000 else [1, 2, 4, 8]


def make_predict(model: keras.Model, recipe: Recipe):
    """tf.function(images) -> float32 logits (classification) or embeddings (retrieval)."""
    key = "embedding" if recipe.task == "retrieval" else "logits"
    return tf.function(lambda x: tf.cast(model(x, training=False)[key], tf.float32))


def evaluate_model(model: keras.Model, recipe: Recipe, split: Any, *, batch_size: int | None = None,
                   predict: Any = None) -> dict[str, float]:
    """Classification: top-1/top-5 accuracy. Retrieval: Recall@K on embeddings of `split`."""
    d = recipe.data
    batches = _eval_batches(split, image_size=d.image_size, preprocessing=d.preprocessing,
                            batch_size=batch_size or min(max(recipe.train.batch_size, 64), 256))
    predict = predict or make_predict(model, recipe)
    outputs, labels = [], []
    for images, batch_labels in batches:
        outputs.append(predict(images).numpy())
        labels.append(batch_labels.numpy())
    out, y = np.concatenate(outputs), np.concatenate(labels)
    if recipe.task == "retrieval":
        from finegrain.evaluate.metrics import evaluate_retrieval

        report = evaluate_retrieval(out, y, recipe.eval.recall_ks or default_recall_ks(len(y)))
        return {**{f"recall@{k}": v for k, v in report.recall_at_k.items()}, "map@r": report.map_at_r}
    top5 = np.argpartition(-out, min(5, out.shape[1]) - 1, axis=1)[:, :5]
    return {"top1": float(np.mean(np.argmax(out, 1) == y)), "top5": float(np.mean((top5 == y[:, None]).any(1)))}


# ---------------------------------------------------------------------------------------------
# The training step


def batchnorm_statistics(model: keras.Model) -> list:
    """The moving mean/variance variables of every BatchNormalization layer."""
    from finegrain.models import batchnorm_layers

    return [v for layer in batchnorm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy,
                    recipe: Recipe, global_batch: int, xla: bool = False):
    """A tf.function(batch) -> (sum of per-example losses, number correct), summed over replicas."""
    t = recipe.train
    decayed = decayed_variables(model)
    replicas = strategy.num_replicas_in_sync
    bn_statistics = batchnorm_statistics(model) if replicas > 1 else []

    def replica_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)["logits"]
            per_example = per_example_loss(logits, labels, loss=t.loss, label_smoothing=t.label_smoothing,
                                           scale=t.loss_scale, margin=t.loss_margin)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            # The regulariser is per model, not per example: each replica adds its share.
            loss += weight_decay_loss(decayed, t.weight_decay) / replicas
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        if bn_statistics:
            # Keras BN updates its moving statistics per replica (aggregation NONE), so replicas would
            # drift apart; averaging them each step keeps every copy equal (EMA is linear, so this is
            # the EMA of the replica-averaged batch statistics).
            context = tf.distribute.get_replica_context()
            # tf.identity: a plain tensor; MWMS cannot place a reduction of the variable reads themselves.
            local = [tf.identity(v.value) for v in bn_statistics]
            averaged = context.all_reduce(tf.distribute.ReduceOp.MEAN, local)
            for v, value in zip(bn_statistics, averaged):
                v.assign(value)
        correct = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct)

    replica_fn = tf.function(replica_step, jit_compile=True) if xla else replica_step

    @tf.function
    def train_step(batch):
        images, labels = batch
        loss_sum, correct = strategy.run(replica_fn, args=(images, labels))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    return train_step


# ---------------------------------------------------------------------------------------------
# tune()


def _write_scalars(writer: Any, step: int, scalars: dict[str, float]) -> None:
    """TensorBoard scalars through the core summary op.

    Hand-written because `tf.summary.scalar` needs the tensorboard package, which is not a
    dependency; the event records are the same (plugin "scalars", float32 scalar tensors).
    """
    from tensorflow.core.framework.summary_pb2 import SummaryMetadata

    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
    with writer.as_default(step=step):
        for key, value in scalars.items():
            tf.summary.write(key, tf.constant(value, tf.float32), metadata=metadata)
    writer.flush()


@dataclass
class TuneResult:
    run_dir: Path
    model: keras.Model
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _with_runtime(recipe: Recipe, strategy: str | None, precision: str | None, xla: bool | None) -> Recipe:
    runtime = recipe.runtime
    changes = {k: v for k, v in (("strategy", strategy), ("precision", precision), ("xla", xla)) if v is not None}
    if "precision" in changes and changes["precision"] not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}' (choose one of {', '.join(PRECISIONS)})")
    return dataclasses.replace(recipe, runtime=dataclasses.replace(runtime, **changes)) if changes else recipe


def _save_final_weights(model: keras.Model, path: Path) -> None:
    # Keras insists on a name ending in .weights.h5, so the temporary file lives in its own directory.
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        model.save_weights(tmp / path.name)
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tune(recipe: Recipe | None, run_dir: str | os.PathLike, *, resume: bool = False, strategy: str | None = None,
         precision: str | None = None, xla: bool | None = None, reporter: Reporter | None = None,
         checkpoint_every_steps: int | None = None, checkpoint_every_seconds: float = 600.0) -> TuneResult:
    """Fine-tune `recipe` into `run_dir` (new), or continue the run in `run_dir` (`resume=True`).

    On resume the recipe stored in the run directory is used (a given `recipe` is ignored), except
    for the runtime options strategy/precision/xla given here. Checkpoints are written after every
    epoch and, within an epoch, every `checkpoint_every_steps` steps / `checkpoint_every_seconds`.
    """
    reporter = reporter or Reporter()
    run_dir = Path(run_dir)
    if resume:
        rundir.check_resumable(run_dir)
        recipe = rundir.read_recipe(run_dir)
    elif recipe is None:
        raise UserError("give a recipe to start a run (or resume=True with an existing run directory)")
    recipe = _with_runtime(recipe, strategy, precision, xla)
    rt, t, d = recipe.runtime, recipe.train, recipe.data

    # The strategy first: MultiWorkerMirroredStrategy must exist before any TensorFlow op runs.
    strat = make_strategy(rt.strategy)
    chief = is_chief(strat)
    if not resume and chief:
        rundir.prepare_new(run_dir)
    work_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="finegrain-worker-"))
    # Process-wide settings, put back afterwards so a library caller's later work is not affected.
    from tensorflow.python.framework import config as tf_config

    determinism_was_on = tf_config.is_op_determinism_enabled()
    if rt.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(t.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(rt.precision)
    try:
        return _run(recipe, run_dir, work_dir, strat, chief, resume, reporter, checkpoint_every_steps,
                    checkpoint_every_seconds)
    except BaseException:
        if not resume and chief and not (run_dir / rundir.CHECKPOINTS / rundir.STATE).exists():
            # Nothing to resume yet: leave no half-made run directory that would block a retry.
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        if rt.deterministic and not determinism_was_on:
            tf_config.disable_op_determinism()
        if not chief:
            shutil.rmtree(work_dir, ignore_errors=True)


def _run(recipe: Recipe, run_dir: Path, work_dir: Path, strat: tf.distribute.Strategy, chief: bool, resume: bool,
         reporter: Reporter, checkpoint_every_steps: int | None, checkpoint_every_seconds: float) -> TuneResult:
    rt, t, d, m = recipe.runtime, recipe.train, recipe.data, recipe.model
    train_split = _load_split(d.source, d.train_split, data_dir=d.data_dir, seed=t.seed)
    class_names = list(train_split.class_names)
    available = _steps_per_epoch(train_split.num_examples, t.batch_size, d.mixup_type)
    if available < 1:
        raise UserError(f"train.batch_size={t.batch_size} is too large for the {train_split.num_examples} "
                        f"training images (mixup type 1 uses two images per example): lower it")
    steps = min(t.steps_per_epoch or available, available)
    if t.steps_per_epoch and t.steps_per_epoch > available:
        reporter.message(f"train.steps_per_epoch={t.steps_per_epoch} exceeds one pass over the data: using {available}")
    total_steps = steps * t.epochs
    if t.batch_size % strat.num_replicas_in_sync:
        raise UserError(f"train.batch_size={t.batch_size} must divide by the {strat.num_replicas_in_sync} replicas")

    if not resume and chief:
        rundir.save_recipe(recipe, run_dir)
        rundir.save_classes(class_names, run_dir)

    with strat.scope():
        model = build_model(recipe, len(class_names), init=None if resume else True, reporter=reporter)
        _set_bn_momentum(model, bn_momentum_for(steps, t.bn_momentum))
        schedule = WarmupCosine(t.base_lr, total_steps, round(t.warmup_epochs * steps), t.lr_schedule)
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=t.momentum)
        if rt.precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    counters = {name: tf.Variable(0, dtype=tf.int64, trainable=False)
                for name in ("epoch", "step_in_epoch", "global_step")}
    epoch_sums = {name: tf.Variable(0.0, dtype=tf.float64, trainable=False)
                  for name in ("loss_sum", "correct", "seen", "seconds")}
    rng = {str(i): v for i, v in enumerate(v for v in model.non_trainable_variables if "seed_generator" in v.path)}
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, rng=rng, **counters, **epoch_sums)
    store = rundir.CheckpointStore(work_dir / rundir.CHECKPOINTS, checkpoint, keep_best=recipe.eval.keep_best,
                                   is_chief=chief)
    if resume:
        store.restore_last()
        if chief:
            rundir.write_metrics(store.history, run_dir)
    epoch0, step0, global_step = (int(counters[k].numpy()) for k in ("epoch", "step_in_epoch", "global_step"))

    if isinstance(strat, tf.distribute.MultiWorkerMirroredStrategy):
        # Workers' clocks differ; a save on one worker only would desynchronise them. Steps only.
        checkpoint_every_seconds = math.inf
    train_step = make_train_step(model, optimizer, strat, recipe, t.batch_size, xla=rt.xla)
    writer = tf.summary.create_file_writer(str(work_dir / rundir.TENSORBOARD))
    eval_split, predict = None, make_predict(model, recipe)
    metric_key = recipe.eval.metric
    reporter.on_start({"run_dir": str(run_dir), "model": m.arch, "data": d.source, "classes": len(class_names),
                       "epochs": t.epochs, "steps_per_epoch": steps, "batch": t.batch_size,
                       "replicas": strat.num_replicas_in_sync, "precision": rt.precision,
                       **({"resumed_at": f"epoch {epoch0 + 1} step {step0}"} if resume else {})})

    def save(epoch_done: int, metric: float | None = None, epoch_metrics: dict | None = None) -> None:
        counters["global_step"].assign(global_step)
        store.save(epoch=epoch_done, step=global_step, metric=metric, epoch_metrics=epoch_metrics)

    for epoch in range(epoch0, t.epochs):
        start_step = step0 if epoch == epoch0 else 0
        if start_step == 0:
            for v in epoch_sums.values():
                v.assign(0.0)
        counters["epoch"].assign(epoch)
        batches = _train_batches(train_split, image_size=d.image_size, preprocessing=d.preprocessing,
                                 batch_size=t.batch_size, autoaugment=d.autoaugment, mixup_type=d.mixup_type,
                                 mixup_alpha=d.mixup_alpha, label_smoothing=0.0, seed=t.seed, epoch=epoch)
        batches = batches.take(steps).skip(start_step)
        reporter.on_epoch_begin(epoch, steps, start_step)
        loss_sum, correct, seen, seconds = (float(v.numpy()) for v in epoch_sums.values())
        last_save, tick = time.monotonic(), time.monotonic()
        step = start_step
        for batch in strat.experimental_distribute_dataset(batches):
            if m.dropblock:
                _set_keep_prob(model, keep_prob_at(global_step, total_steps, t.dropblock_keep_prob_start,
                                                   t.dropblock_keep_prob_end))
            batch_loss, batch_correct = train_step(batch)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            seen += t.batch_size
            step += 1
            global_step += 1
            now = time.monotonic()
            seconds += now - tick
            tick = now
            reporter.on_step(epoch, step, {"loss": loss_sum / seen, "accuracy": correct / seen,
                                           "images_per_s": seen / max(seconds, 1e-9),
                                           "lr": float(schedule(global_step))})
            due = (checkpoint_every_steps and step % checkpoint_every_steps == 0) or \
                (now - last_save >= checkpoint_every_seconds)
            if due and step < steps:
                counters["step_in_epoch"].assign(step)
                for v, value in zip(epoch_sums.values(), (loss_sum, correct, seen, seconds)):
                    v.assign(value)
                save(epoch)
                last_save = time.monotonic()
        if not math.isfinite(loss_sum):
            raise UserError(f"the loss diverged in epoch {epoch + 1} (NaN/inf): lower train.base_lr")

        metrics: dict[str, Any] = {"epoch": epoch + 1, "step": global_step, "train_loss": loss_sum / max(seen, 1),
                                   "train_accuracy": correct / max(seen, 1), "lr": float(schedule(global_step)),
                                   "images_per_s": seen / max(seconds, 1e-9), "time": time.time()}
        if m.dropblock:
            metrics["dropblock_keep_prob"] = keep_prob_at(global_step, total_steps, t.dropblock_keep_prob_start,
                                                          t.dropblock_keep_prob_end)
        metric_value = None
        if (epoch + 1) % recipe.eval.every_epochs == 0 or epoch + 1 == t.epochs:
            if eval_split is None:
                eval_split = _load_split(d.source, d.eval_split, data_dir=d.data_dir, seed=t.seed)
            results = evaluate_model(model, recipe, eval_split, predict=predict)
            metrics.update({f"eval_{k}": v for k, v in results.items()})
            metric_value = results[metric_key]
        _write_scalars(writer, epoch + 1, {k: v for k, v in metrics.items() if k not in ("epoch", "step", "time")})
        counters["epoch"].assign(epoch + 1)
        counters["step_in_epoch"].assign(0)
        save(epoch + 1, metric_value, metrics)
        if chief:
            rundir.append_metrics(metrics, run_dir)
        reporter.on_epoch_end(epoch, metrics)

    summary = _finish(recipe, model, class_names, store, run_dir, chief, strat)
    reporter.on_end(summary)
    return TuneResult(run_dir=run_dir, model=model, history=store.history,
                      best=vars(store.best[0]) if store.best else None, summary=summary)


def _finish(recipe: Recipe, model: keras.Model, class_names: list[str], store: rundir.CheckpointStore,
            run_dir: Path, chief: bool, strat: tf.distribute.Strategy) -> dict[str, Any]:
    """Final weights, SavedModel export, learning-curve plot (chief only) and the summary."""
    history = store.history
    summary: dict[str, Any] = {"run_dir": str(run_dir), "epochs": len(history),
                               "replicas": strat.num_replicas_in_sync}
    if history:
        last = history[-1]
        summary.update({k: v for k, v in last.items() if k.startswith(("train_", "eval_"))})
    if store.best and store.best[0].metric is not None:
        summary[f"best_{recipe.eval.metric}"] = store.best[0].metric
        summary["best_epoch"] = store.best[0].epoch
    if not chief:
        return summary
    weights = run_dir / rundir.WEIGHTS
    _save_final_weights(model, weights)
    serving = model
    if isinstance(strat, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)):
        # A plain (non-distributed) copy exports cleanly whatever the training strategy was.
        serving = build_model(recipe, len(class_names), init=None)
        serving.load_weights(weights)
    from finegrain.train.export import export_saved_model

    scale = recipe.train.loss_scale if recipe.model.head == "cosine" else 1.0
    export_dir = run_dir / rundir.EXPORT
    if not export_dir.exists():  # else a resumed run had finished its export already
        export_saved_model(serving, export_dir, logit_scale=scale)
    rundir.plot_curves(history, run_dir / rundir.CURVES)
    atomic_write_json(run_dir / rundir.SUMMARY, summary)
    return summary
