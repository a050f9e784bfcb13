"""`tiny_test_net`: a registered architecture small enough that a test trains it in seconds.

It goes through the real `create_model` (preprocessing, heads, DropBlock's shared keep probability),
so runs, cards, exports and model references behave exactly as for the ResNets. Layers are named,
so variable paths are the same in every build (weights are matched by path).
"""

from __future__ import annotations

import keras

from finegrain.models import list_models, register_model
from finegrain.models.layers import DropBlock

NAME = "tiny_test_net"


def _features(images, *, bn_momentum: float, keep_prob=None, zero_init_residual: bool = False):
    x = keras.layers.Rescaling(1 / 128.0, name="tiny_scale")(images)
    for i, (filters, stride) in enumerate(((16, 2), (32, 2), (32, 1))):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"tiny_conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"tiny_bn{i}")(x)
        x = keras.layers.ReLU(name=f"tiny_relu{i}")(x)
    if keep_prob is not None:
        x = DropBlock(block_size=3, keep_prob=keep_prob, name="tiny_dropblock")(x)
    return x


if NAME not in list_models():
    register_model(NAME, "three conv layers (tests only)", has_official_weights=False)(_features)
