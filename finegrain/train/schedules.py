"""Per-step schedules of a training run: learning rate, DropBlock keep probability, BN momentum.

All are pure functions of the global step, so a resumed run lands on the same point of every
schedule just by restoring the step counter.
"""

from __future__ import annotations

import keras

from finegrain.train.recipe import TrainConfig


def learning_rate(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to `base_lr`, then cosine decay to 0 at the last step (as the original);
    `lr_schedule: constant` keeps `base_lr` after the warm-up.

    Keras' CosineDecay does both: warm-up lr = base_lr * step / warmup_steps, then
    base_lr * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2; alpha = 1 makes the decay flat.
    """
    total = max(steps_per_epoch * train.epochs, 1)
    warmup = round(train.warmup_epochs * steps_per_epoch)
    alpha = 1.0 if train.lr_schedule == "constant" else 0.0
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train.base_lr, total, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(0.0, max(total - warmup, 1), alpha=alpha,
                                                  warmup_target=train.base_lr, warmup_steps=warmup)


def keep_prob_at(step: int, total_steps: int, start: float, end: float) -> float:
    """DropBlock keep probability: linear from `start` at step 0 to `end` at `total_steps` (then flat)."""
    frac = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return start + (end - start) * frac


def bn_momentum_for(steps_per_epoch: int, override: float | None = None) -> float:
    """The paper's fine-tuning rule max(1 - 10/steps_per_epoch, 0.9): BN statistics average over ~1/10 epoch."""
    if override is not None:
        return float(override)
    return max(1.0 - 10.0 / max(steps_per_epoch, 1), 0.9)
