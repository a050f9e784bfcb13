"""Losses on soft labels and the original's weight decay (wd * sum(w^2) / 2, not on BatchNorm)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from finegrain.models import create_model
from finegrain.train.losses import decayed_variables, margin_logits, per_example_loss, weight_decay_loss


def np_softmax_ce(logits, labels):
    logits = logits - logits.max(1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return -(labels * log_p).sum(1)


def test_softmax_loss_with_label_smoothing_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 5)).astype("float32")
    labels = np.eye(5, dtype="float32")[[0, 1, 2, 3]]
    got = per_example_loss(logits, labels, label_smoothing=0.1).numpy()
    smoothed = labels * 0.9 + 0.1 / 5
    np.testing.assert_allclose(got, np_softmax_ce(logits, smoothed), rtol=1e-5)


def test_cosine_softmax_scales_the_cosines():
    cosines = np.array([[0.9, 0.1, -0.2], [0.0, 0.5, 0.3]], "float32")
    labels = np.eye(3, dtype="float32")[[0, 2]]
    got = per_example_loss(cosines, labels, loss="cosine_softmax", scale=16.0).numpy()
    np.testing.assert_allclose(got, np_softmax_ce(16.0 * cosines, labels), rtol=1e-5)


def test_arcface_adds_the_angular_margin_on_the_target_only():
    cosines = np.array([[0.8, 0.3, -0.1]], "float32")
    labels = np.array([[1.0, 0.0, 0.0]], "float32")
    logits = margin_logits(cosines, labels, scale=10.0, margin=0.3).numpy()
    np.testing.assert_allclose(logits[0, 0], 10.0 * np.cos(np.arccos(0.8) + 0.3), rtol=1e-5)
    np.testing.assert_allclose(logits[0, 1:], 10.0 * cosines[0, 1:], rtol=1e-6)
    with_margin = per_example_loss(cosines, labels, loss="arcface", scale=10.0, margin=0.3)
    without = per_example_loss(cosines, labels, loss="cosine_softmax", scale=10.0)
    assert float(with_margin[0]) > float(without[0])
    # Near theta = pi the margin falls back to a penalty rather than raising the logit again.
    far = margin_logits(np.array([[-0.99]], "float32"), np.array([[1.0]], "float32"), scale=1.0, margin=0.5)
    assert float(far[0, 0]) < -0.99


def test_unknown_loss_is_rejected():
    with pytest.raises(ValueError):
        per_example_loss(np.zeros((1, 2), "float32"), np.eye(2, dtype="float32")[:1], loss="triplet")


def test_weight_decay_skips_batchnorm_only():
    model = create_model("resnet50", num_classes=3)
    decayed = decayed_variables(model)
    bn = [v for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
          for v in layer.trainable_weights]
    assert bn and not {id(v) for v in bn} & {id(v) for v in decayed}
    assert len(decayed) + len(bn) == len(model.trainable_variables)
    # The classifier's bias is decayed, as in the original (its filter only excluded BatchNorm).
    assert any(v.path.endswith("bias") for v in decayed)
    expected = 0.001 * sum(float(np.sum(np.square(v.numpy()))) for v in decayed) / 2
    np.testing.assert_allclose(float(weight_decay_loss(decayed, 0.001)), expected, rtol=1e-4)
    assert float(weight_decay_loss(decayed, 0.0)) == 0.0
    assert weight_decay_loss([tf.Variable([3.0, 4.0])], 0.1).numpy() == pytest.approx(0.1 * 25 / 2)
