"""Per-step schedules: LR warm-up + cosine (Keras CosineDecay), DropBlock keep probability, the BN momentum rule."""

import math

import numpy as np
import pytest

from finegrain.train.recipe import TrainConfig
from finegrain.train.schedules import bn_momentum_for, keep_prob_at, learning_rate


def expected_lr(step: int, base: float, total: int, warmup: int, constant: bool = False) -> float:
    """The original's schedule, restated: linear warm-up, then half a cosine from base to 0."""
    if step < warmup:
        return base * step / warmup
    if constant:
        return base
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("epochs, steps, warmup_epochs, kind", [(10, 10, 1.0, "cosine"), (5, 7, 0.0, "cosine"),
                                                               (4, 5, 0.5, "constant"), (3, 4, 0.0, "constant")])
def test_every_step_matches_the_original_schedule(epochs, steps, warmup_epochs, kind):
    train = TrainConfig(epochs=epochs, base_lr=0.01, warmup_epochs=warmup_epochs, lr_schedule=kind)
    schedule = learning_rate(train, steps)
    total, warmup = epochs * steps, round(warmup_epochs * steps)
    got = [float(schedule(s)) for s in range(total + 5)]
    want = [expected_lr(s, 0.01, total, warmup, kind == "constant") for s in range(total + 5)]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)


def test_warmup_is_linear_then_cosine_reaches_zero():
    schedule = learning_rate(TrainConfig(epochs=10, base_lr=0.01, warmup_epochs=1.0), 10)
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 10, 55, 100, 150)],
                               [0.0, 0.005, 0.01, 0.005, 0.0, 0.0], atol=1e-7)


def test_keep_prob_decays_linearly_over_the_whole_run():
    assert keep_prob_at(0, 200, 0.9, 0.7) == pytest.approx(0.9)
    assert keep_prob_at(100, 200, 0.9, 0.7) == pytest.approx(0.8)
    assert keep_prob_at(200, 200, 0.9, 0.7) == pytest.approx(0.7)
    assert keep_prob_at(500, 200, 0.9, 0.7) == pytest.approx(0.7)


def test_bn_momentum_rule():
    assert bn_momentum_for(1000) == pytest.approx(0.99)  # 1 - 10/1000
    assert bn_momentum_for(50) == pytest.approx(0.9)  # 1 - 10/50 = 0.8 is floored at 0.9
    assert bn_momentum_for(50, override=0.997) == pytest.approx(0.997)
    assert not math.isnan(bn_momentum_for(0))
