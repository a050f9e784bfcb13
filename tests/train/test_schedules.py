"""Per-step schedules: LR warm-up + cosine, DropBlock keep probability, the BN momentum rule."""

import math

import numpy as np
import pytest

from finegrain.train.schedules import WarmupCosine, bn_momentum_for, keep_prob_at


def lr_values(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_warmup_is_linear_then_cosine_reaches_zero():
    schedule = WarmupCosine(0.01, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(lr_values(schedule, [0, 5, 10]), [0.0, 0.005, 0.01], rtol=1e-6)
    # Half-way through the decay the cosine is at half the peak; the last step is at 0.
    np.testing.assert_allclose(lr_values(schedule, [55, 100, 150]), [0.005, 0.0, 0.0], atol=1e-7)
    decay = lr_values(schedule, range(10, 101))
    assert np.all(np.diff(decay) <= 1e-9)


def test_constant_schedule_and_no_warmup():
    np.testing.assert_allclose(lr_values(WarmupCosine(0.1, 50, 0, "constant"), [0, 49]), [0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(float(WarmupCosine(0.1, 50, 0)(0)), 0.1, rtol=1e-6)
    with pytest.raises(ValueError):
        WarmupCosine(0.1, 50, 0, "step")


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
