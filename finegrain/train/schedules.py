"""Per-step schedules of a fine-tuning run: learning rate, DropBlock keep probability, BN momentum.

All are pure functions of the global step, so a resumed run lands on the same point of every
schedule just by restoring the step counter (the optimizer's `iterations`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="finegrain")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base_lr` over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    As the original: during warm-up lr = base_lr * step / warmup_steps; afterwards
    lr = base_lr * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2. `kind="constant"` keeps
    base_lr after the warm-up.
    """

    def __init__(self, base_lr: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine") -> None:
        if kind not in ("cosine", "constant"):
            raise ValueError(f"unknown learning-rate schedule {kind!r}")
        self.base_lr = float(base_lr)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.kind = kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        base = tf.constant(self.base_lr, tf.float32)
        if self.kind == "cosine":
            decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
            progress = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
            after = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
        else:
            after = base
        if self.warmup_steps == 0:
            return after
        warm = base * step / float(self.warmup_steps)
        return tf.where(step < self.warmup_steps, warm, after)

    def get_config(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "kind": self.kind}


def keep_prob_at(step: int, total_steps: int, start: float, end: float) -> float:
    """DropBlock keep probability: linear from `start` at step 0 to `end` at `total_steps` (then flat)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


def bn_momentum_for(steps_per_epoch: int, override: float | None = None) -> float:
    """The paper's fine-tuning rule max(1 - 10/steps_per_epoch, 0.9): BN statistics average over ~1/10 epoch."""
    if override is not None:
        return float(override)
    return max(1.0 - 10.0 / max(steps_per_epoch, 1), 0.9)
