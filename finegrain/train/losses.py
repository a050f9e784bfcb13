"""Training losses: softmax cross-entropy, cosine-softmax and ArcFace, plus the original's weight decay.

Every loss takes soft labels (mixup comes from the data pipeline as soft labels) and returns a
per-example loss vector, so that the training step can average it over the *global* batch under
tf.distribute (`tf.nn.compute_average_loss`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from finegrain.models import batchnorm_layers

LOSSES = ("softmax", "cosine_softmax", "arcface")


def smooth_labels(labels: tf.Tensor, label_smoothing: float) -> tf.Tensor:
    """(1 - eps) * y + eps / K, applied on top of (possibly mixed) soft labels."""
    if label_smoothing <= 0:
        return labels
    num_classes = tf.cast(tf.shape(labels)[-1], labels.dtype)
    return labels * (1.0 - label_smoothing) + label_smoothing / num_classes


def margin_logits(cosines: tf.Tensor, labels: tf.Tensor, *, scale: float, margin: float) -> tf.Tensor:
    """Scaled cosine logits, with ArcFace's additive angular margin on the labelled classes.

    logit_j = s * cos(theta_j + m * y_j): with one-hot labels this is ArcFace exactly (margin on the
    target class only); with mixed soft labels the margin is shared out by label mass. `margin=0`
    gives cosine-softmax. The margin is applied only where theta + m stays below pi (the usual
    'easy margin' guard keeps the logit monotone in theta).
    """
    cosines = tf.cast(cosines, tf.float32)
    if margin == 0:
        return scale * cosines
    theta = tf.acos(tf.clip_by_value(cosines, -1.0 + 1e-7, 1.0 - 1e-7))
    label_margin = margin * tf.cast(labels, tf.float32)
    shifted = theta + label_margin
    # Past pi, cos(theta + m) would rise again; fall back to the linear penalty cos - m sin(m).
    with_margin = tf.where(shifted < math.pi, tf.cos(shifted), cosines - label_margin * tf.sin(label_margin))
    return scale * with_margin


def per_example_loss(logits: tf.Tensor, labels: tf.Tensor, *, loss: str = "softmax",
                     label_smoothing: float = 0.0, scale: float = 30.0, margin: float = 0.0) -> tf.Tensor:
    """Cross-entropy per example [B] for `loss` in LOSSES; `logits` are cosines for the cosine losses."""
    labels = tf.cast(labels, tf.float32)
    if loss == "softmax":
        logits = tf.cast(logits, tf.float32)
    elif loss == "cosine_softmax":
        logits = margin_logits(logits, labels, scale=scale, margin=0.0)
    elif loss == "arcface":
        logits = margin_logits(logits, labels, scale=scale, margin=margin)
    else:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    return tf.nn.softmax_cross_entropy_with_logits(labels=smooth_labels(labels, label_smoothing), logits=logits)


def distillation_loss(logits: tf.Tensor, teacher_probabilities: tf.Tensor, temperature: float) -> tf.Tensor:
    """T^2 * CE(teacher distribution, softmax(logits / T)) per example [B], as the original (Hinton et al.).

    `teacher_probabilities` are softmax(teacher logits / T), possibly mixed by mixup like the labels;
    the T^2 keeps the gradient scale independent of T.
    """
    t = float(temperature)
    logits = tf.cast(logits, tf.float32) / t
    return t * t * tf.nn.softmax_cross_entropy_with_logits(labels=tf.cast(teacher_probabilities, tf.float32),
                                                           logits=logits)


def decayed_variables(model: keras.Model) -> list:
    """Trainable variables that get weight decay: all but BatchNorm's gamma/beta.

    As the original (it filtered `'batch_normalization' not in name` over all trainable variables),
    biases and the classifier are decayed too; only BatchNorm is exempt.
    """
    bn_ids = {id(v) for layer in batchnorm_layers(model) for v in layer.weights}
    return [v for v in model.trainable_variables if id(v) not in bn_ids]


def weight_decay_loss(variables: list, weight_decay: float) -> tf.Tensor:
    """The original's convention wd * sum(w^2) / 2 (tf.nn.l2_loss), computed in float32."""
    if weight_decay == 0 or not variables:
        return tf.constant(0.0, tf.float32)
    return weight_decay * tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables])
