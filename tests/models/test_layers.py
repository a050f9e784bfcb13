"""The custom layers against plain numpy references of what the original computes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from finegrain.models.layers import (
    BlurDownsample,
    DropBlock,
    FixedPaddingConv2D,
    GeMPooling,
    Preprocess,
    SelectiveKernel,
    UpsampleAdd,
    new_keep_prob_variable,
)

RNG = np.random.default_rng(0)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_blur_downsample_is_the_reflect_padded_depthwise_blur(size):
    x = RNG.standard_normal((2, *size, 3)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    out_h, out_w = (size[0] + 1) // 2, (size[1] + 1) // 2
    expected = np.zeros((2, out_h, out_w, 3), np.float32)
    for i in range(out_h):
        for j in range(out_w):
            window = padded[:, 2 * i: 2 * i + 3, 2 * j: 2 * j + 3, :]
            expected[:, i, j, :] = np.einsum("bhwc,hw->bc", window, kernel)
    blur = BlurDownsample()
    np.testing.assert_allclose(_np(blur(x)), expected, rtol=1e-5, atol=1e-6)
    assert blur.compute_output_shape((None, *size, 3)) == (None, out_h, out_w, 3)
    assert blur.count_params() == 0


def test_selective_kernel_is_the_softmax_over_two_halves():
    filters = 4
    layer = SelectiveKernel(filters, min_dim=3)
    x = RNG.uniform(0, 1, (2, 5, 6, 2 * filters)).astype(np.float32)
    out = _np(layer(x))
    first, second = x[..., :filters], x[..., filters:]
    squeezed = (first + second).mean(axis=(1, 2))
    fc1 = _np(layer.fc1.kernel)[0, 0]
    bn = layer.bn
    z = squeezed @ fc1
    z = (z - _np(bn.moving_mean)) / np.sqrt(_np(bn.moving_variance) + bn.epsilon) * _np(bn.gamma) + _np(bn.beta)
    logits = np.maximum(z, 0) @ _np(layer.fc2.kernel)[0, 0]
    stacked = np.stack([logits[:, :filters], logits[:, filters:]])
    attention = np.exp(stacked) / np.exp(stacked).sum(axis=0)
    expected = first * attention[0][:, None, None] + second * attention[1][:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert layer.attention_dim == 3 and SelectiveKernel(256).attention_dim == 128


def test_fixed_padding_conv_pads_floor_ceil_then_valid():
    x = RNG.standard_normal((1, 9, 8, 2)).astype(np.float32)
    conv = FixedPaddingConv2D(3, 3, strides=2)
    out = _np(conv(x))
    kernel = _np(conv.kernel)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.stack([np.stack([np.einsum("hwc,hwco->o", padded[0, 2 * i: 2 * i + 3, 2 * j: 2 * j + 3], kernel)
                                   for j in range(4)]) for i in range(5)])[None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert conv.bias is None
    assert FixedPaddingConv2D(3, 7, strides=2)._pad == (3, 3)
    assert FixedPaddingConv2D(3, 3, strides=1)(x).shape == (1, 9, 8, 3)  # stride 1: SAME
    clone = FixedPaddingConv2D.from_config(conv.get_config())
    assert clone._pad == (1, 1) and clone.strides == (2, 2) and clone.padding == "valid"


@pytest.mark.parametrize("kernel_size, strides, size", [
    (1, 1, (5, 7)), (1, 2, (5, 7)),  # 1x1: a matmul over the (subsampled) pixels, any map size
    (3, 1, (2, 2)), (3, 1, (1, 2)), (3, 2, (4, 3)), (7, 2, (3, 4)),  # output <= 2x2: a matmul over patches
    (3, 1, (5, 6)), (3, 2, (8, 8)),  # larger maps: the convolution op itself
])
def test_fixed_padding_conv_matmul_forms_equal_the_convolution(kernel_size, strides, size):
    import tensorflow as tf

    x = tf.constant(RNG.standard_normal((3, *size, 6)).astype(np.float32))
    conv = FixedPaddingConv2D(5, kernel_size, strides)
    conv.build(x.shape)
    upstream = tf.constant(RNG.standard_normal(conv.compute_output_shape(x.shape)).astype(np.float32))

    def plain(inputs, kernel):  # what Conv2D itself computes on the fixed-padded input
        inputs = tf.pad(inputs, ((0, 0), conv._pad, conv._pad, (0, 0)))
        return tf.nn.conv2d(inputs, kernel, strides, conv.padding.upper())

    results = []
    for forward in (lambda: conv(x), lambda: plain(x, conv.kernel)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = forward()
            loss = tf.reduce_sum(out * upstream)
        results.append([out, *tape.gradient(loss, [x, conv.kernel])])
    for mine, reference in zip(*results):  # output, input gradient, kernel gradient
        np.testing.assert_allclose(_np(mine), _np(reference), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("little_hw", [(6, 8), (5, 8)])  # exactly 2x big (fast path), odd (cropped)
def test_upsample_add_is_relu_of_little_plus_nearest_upsampled_big(little_hw):
    big = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    little = RNG.standard_normal((2, *little_hw, 5)).astype(np.float32)
    expected = np.maximum(little + big.repeat(2, axis=1).repeat(2, axis=2)[:, : little_hw[0], : little_hw[1]], 0)
    np.testing.assert_allclose(_np(UpsampleAdd()([little, big])), expected, rtol=1e-6)


def test_gem_pooling_p3_and_preprocess():
    x = RNG.uniform(0, 2, (2, 3, 4, 5)).astype(np.float32)
    expected = np.mean(np.maximum(x, 1e-6) ** 3, axis=(1, 2)) ** (1 / 3)
    np.testing.assert_allclose(_np(GeMPooling()(x)), expected, rtol=1e-5)
    images = RNG.integers(0, 256, (1, 2, 2, 3)).astype(np.uint8)
    np.testing.assert_allclose(_np(Preprocess()(images)), images.astype(np.float32) - [123.68, 116.78, 103.94],
                               rtol=1e-6)


def test_dropblock_drops_7x7_blocks_per_example_and_rescales():
    keep_prob = new_keep_prob_variable(1.0)
    layer = DropBlock(block_size=7, gamma_scale=1.0, keep_prob=keep_prob, seed=3)
    x = np.ones((4, 20, 20, 8), np.float32)
    np.testing.assert_array_equal(_np(layer(x, training=True)), x)  # keep_prob 1: identity
    keep_prob.assign(0.8)
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)  # inference: identity
    out = _np(layer(x, training=True))
    dropped = out == 0
    assert 0.05 < dropped.mean() < 0.5
    # Every dropped pixel belongs to a 7x7 block that is entirely dropped.
    example, row, col, channel = np.argwhere(dropped)[0]
    region = dropped[example, max(row - 6, 0): row + 7, max(col - 6, 0): col + 7, channel]
    assert any(region[i: i + 7, j: j + 7].all() for i in range(region.shape[0] - 6) for j in range(region.shape[1] - 6))
    # Per-example masks, each renormalised to keep the example's mean.
    assert not np.array_equal(dropped[0], dropped[1])
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 1.0, rtol=1e-4)
    # Smaller than a block: nothing to drop (the original cannot run there at all).
    small = np.ones((2, 4, 4, 3), np.float32)
    np.testing.assert_array_equal(_np(layer(small, training=True)), small)


def test_dropblock_shared_mask_option():
    layer = DropBlock(block_size=3, keep_prob=new_keep_prob_variable(0.7), per_example=False, seed=1)
    out = _np(layer(np.ones((3, 12, 12, 4), np.float32), training=True))
    assert (out == 0).any()
    np.testing.assert_array_equal(out[0] == 0, out[2] == 0)


def test_keep_prob_variable_is_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keep_prob = new_keep_prob_variable(0.9)
        layer = DropBlock(keep_prob=keep_prob, seed=0)
        out = layer(np.ones((2, 9, 9, 2), np.float32), training=True)
        assert "bfloat16" in str(out.dtype)
        assert keep_prob.dtype == "float32" and float(_np(keep_prob)) == pytest.approx(0.9)
    finally:
        keras.config.set_dtype_policy(previous)


def test_changing_keep_prob_takes_effect_without_retracing():
    import tensorflow as tf

    keep_prob = new_keep_prob_variable(1.0)
    layer = DropBlock(block_size=3, keep_prob=keep_prob, seed=5)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return layer(x, training=True)

    x = tf.ones((2, 10, 10, 4))
    np.testing.assert_array_equal(step(x).numpy(), x.numpy())
    keep_prob.assign(0.5)
    assert (step(x).numpy() == 0).any()
    assert len(traces) == 1
