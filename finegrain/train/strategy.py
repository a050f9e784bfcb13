"""Which tf.distribute strategy a run uses, and which worker writes the run directory."""

from __future__ import annotations

import os

import tensorflow as tf

from finegrain.errors import UserError
from finegrain.train.recipe import STRATEGIES


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


def is_multiworker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_mirrored(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
