"""The training step under any tf.distribute strategy.

Keras 3 `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so the step is
hand-written: `strategy.run(replica_step)` inside a `tf.function`, the loss averaged over the global
batch with `tf.nn.compute_average_loss`. The same code runs under the default strategy, Mirrored and
MultiWorkerMirrored. What the loss is comes from the task.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from finegrain.data.pipeline import finish_batch
from finegrain.models import batchnorm_layers
from finegrain.train.losses import decayed_variables, weight_decay_loss
from finegrain.train.tasks.base import Task


def make_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, strategy: tf.distribute.Strategy,
                    task: Task, global_batch: int, xla: bool = False) -> Any:
    """A tf.function(batch) -> (sum of per-example losses, number correct), summed over replicas.

    A batch is (float images, targets) or, as the task makes them, (uint8 images, targets, mixing),
    finished here on each replica's share (finegrain.data.pipeline.finish_batch)."""
    decayed = decayed_variables(model)
    weight_decay = task.recipe.train.weight_decay
    replicas = strategy.num_replicas_in_sync
    bn_statistics = ([v for layer in batchnorm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]
                     if replicas > 1 else [])

    def replica_step(images, targets, mixing=None):
        if mixing is not None:  # the host left the flip, the cast and mixup to the accelerator
            images, targets = finish_batch(images, targets, mixing)
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            per_example = task.per_example_loss(outputs, targets)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            # The regulariser is per model, not per example: each replica adds its share.
            loss += weight_decay_loss(decayed, weight_decay) / replicas
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
        return tf.reduce_sum(per_example), tf.reduce_sum(task.correct(outputs, targets))

    replica_fn = tf.function(replica_step, jit_compile=True) if xla else replica_step

    @tf.function
    def train_step(batch):
        # (images, targets), or (uint8 images, targets, mixing) from train_batches(..., finish=False)
        loss_sum, correct = strategy.run(replica_fn, args=tuple(batch))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, correct, axis=None))

    return train_step
