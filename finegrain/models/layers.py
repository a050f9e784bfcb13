"""Keras 3 layers of the Assemble-ResNet family, written with `keras.layers` and `keras.ops` only.

No `tf.*` here: the family must also run under Keras 3's JAX and PyTorch backends. The layers follow
the official TF1 implementation (clovaai/assembled-cnn); where a layer's
behaviour differs from a plain Keras layer, the docstring says why.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

IMAGENET_MEANS = (123.68, 116.78, 103.94)  # RGB, 0..255 scale; no division by a std, as the original
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.997


@keras.saving.register_keras_serializable("finegrain")
class Preprocess(layers.Layer):
    """Cast RGB 0..255 images (uint8 or float) to float32 and subtract the ImageNet channel means.

    Always computes in float32 (the subtraction would lose half a grey level in bfloat16); the next
    convolution casts to the compute dtype of the policy.
    """

    def __init__(self, means: tuple[float, float, float] = IMAGENET_MEANS, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.means = tuple(float(m) for m in means)

    def call(self, images):
        return ops.cast(images, "float32") - ops.convert_to_tensor(np.asarray(self.means, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "means": self.means}


@keras.saving.register_keras_serializable("finegrain")
class FixedPaddingConv2D(layers.Conv2D):
    """Bias-free conv as the original's `conv2d_fixed_padding`.

    Stride 1: SAME padding. Stride > 1: pad total k-1 (floor before, ceil after) independently of the
    input size, then VALID; Keras' own "same" would pad asymmetrically depending on the input size.

    Speed (CPU): a 1x1 kernel runs as one matrix product over the pixels, and a larger kernel whose
    output map is at most `PATCH_MATMUL_MAX_SIZE` on a side (static shapes: the last stages of small
    images) as one product over its patches (im2col). oneDNN's convolution kernels, the weight
    gradient above all, run such shapes 2-3x slower than the matmul (per-layer figures:
    `benchmarks/bench_train.py --profile`); the sums are the same, so the outputs match the plain
    convolution up to float round-off, and the variables are unchanged.
    """

    PATCH_MATMUL_MAX_SIZE = 2

    def __init__(self, filters: int, kernel_size: int | tuple, strides: int | tuple = 1, **kwargs: Any) -> None:
        kwargs.setdefault("use_bias", False)
        kwargs.setdefault("kernel_initializer", "variance_scaling")
        kwargs.pop("padding", None)  # decided by the stride (from_config passes it back)
        kernel_size = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        strides = strides if isinstance(strides, int) else strides[0]
        super().__init__(
            filters, kernel_size, strides=strides, padding="same" if strides == 1 else "valid", **kwargs
        )
        total = kernel_size - 1
        self._pad = (total // 2, total - total // 2) if strides > 1 else (0, 0)

    def _padded_shape(self, shape):
        if self._pad == (0, 0):
            return shape
        grow = sum(self._pad)
        return (shape[0],) + tuple(None if d is None else d + grow for d in shape[1:3]) + (shape[3],)

    def build(self, input_shape):
        super().build(self._padded_shape(input_shape))

    def call(self, inputs):
        if self._pad != (0, 0):
            inputs = ops.pad(inputs, ((0, 0), self._pad, self._pad, (0, 0)))
        return super().call(inputs)

    def compute_output_shape(self, input_shape):
        return super().compute_output_shape(self._padded_shape(input_shape))

    def convolution_op(self, inputs, kernel):
        if self.data_format != "channels_last":
            return super().convolution_op(inputs, kernel)
        kernel_height, kernel_width, in_channels, filters = kernel.shape
        stride = self.strides[0]
        if (kernel_height, kernel_width) == (1, 1):
            pixels = inputs[:, ::stride, ::stride] if stride > 1 else inputs  # VALID 1x1 = subsample
            shape = ops.shape(pixels)
            product = ops.matmul(ops.reshape(pixels, (-1, in_channels)), ops.reshape(kernel, (in_channels, filters)))
            return ops.reshape(product, (shape[0], shape[1], shape[2], filters))
        out_size = super().compute_output_shape(inputs.shape)[1:3]  # strided convs arrive padded, for VALID
        if None in out_size or max(out_size) > self.PATCH_MATMUL_MAX_SIZE:
            return super().convolution_op(inputs, kernel)
        if self.padding == "same":  # stride 1
            inputs = ops.pad(inputs, ((0, 0), ((kernel_height - 1) // 2, kernel_height // 2),
                                      ((kernel_width - 1) // 2, kernel_width // 2), (0, 0)))
        out_height, out_width = out_size
        patches = ops.concatenate(  # tap-major, then channel: the order of the kernel's flattened axes
            [inputs[:, i: i + stride * (out_height - 1) + 1: stride, j: j + stride * (out_width - 1) + 1: stride]
             for i in range(kernel_height) for j in range(kernel_width)], axis=-1)
        product = ops.matmul(ops.reshape(patches, (-1, kernel_height * kernel_width * in_channels)),
                             ops.reshape(kernel, (-1, filters)))
        return ops.reshape(product, (-1, out_height, out_width, filters))


def batch_norm(name: str, momentum: float = BN_MOMENTUM, dtype: Any = None,
               zero_gamma: bool = False) -> layers.BatchNormalization:
    """BatchNorm with the original's settings (epsilon 1e-5, momentum 0.997 unless changed)."""
    return layers.BatchNormalization(momentum=momentum, epsilon=BN_EPSILON, name=name, dtype=dtype,
                                     gamma_initializer="zeros" if zero_gamma else "ones")


@keras.saving.register_keras_serializable("finegrain")
class SelectiveKernel(layers.Layer):
    """Fuse-and-select half of the Selective Kernel unit as the original codes it.

    Input: the ReLU output of one 3x3 conv to 2f channels (that conv and its BN stay ordinary layers in
    the block, as in the original's variable scopes). The two f-channel halves are the two "kernels":
    U = a + b -> global average pool -> 1x1 conv to d (no bias) -> BN -> ReLU -> 1x1 conv to 2f (no bias)
    -> softmax over the two halves per channel -> a * w_a + b * w_b.
    A softmax over two logits equals sigmoid(z_a - z_b), so the output is computed as
    b + (a - b) * sigmoid(z_a - z_b): one elementwise pass over the feature map instead of a stacked
    softmax (fewer full-size temporaries; this layer is on the hot path of every block), and the
    pooled U is the sum of the pooled halves, so U itself is never formed.
    Sub-layer names match the TF1 variables under `sk_block*/`.
    """

    def __init__(self, filters: int, reduction: int = 2, min_dim: int = 32,
                 bn_momentum: float = BN_MOMENTUM, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.reduction = reduction
        self.min_dim = min_dim
        self.bn_momentum = bn_momentum
        self.attention_dim = max(filters // reduction, min_dim)
        # 1x1 convs on the pooled [B, 1, 1, C]: FixedPaddingConv2D runs them as plain matmuls.
        self.fc1 = FixedPaddingConv2D(self.attention_dim, 1, name="sk_fc_1", dtype=self.dtype_policy)
        self.bn = batch_norm("batch_normalization", bn_momentum, dtype=self.dtype_policy)
        self.fc2 = FixedPaddingConv2D(2 * filters, 1, name="sk_fc_2", dtype=self.dtype_policy)

    def build(self, input_shape):
        if input_shape[-1] != 2 * self.filters:
            raise ValueError(f"SelectiveKernel({self.filters}) needs {2 * self.filters} input channels, "
                             f"got {input_shape[-1]}")
        self.fc1.build((None, 1, 1, self.filters))
        self.bn.build((None, 1, 1, self.attention_dim))
        self.fc2.build((None, 1, 1, self.attention_dim))

    def call(self, inputs, training=None):
        first, second = ops.split(inputs, 2, axis=-1)
        means = ops.mean(inputs, axis=(1, 2), keepdims=True)  # mean(first + second) without forming it
        squeezed = means[..., : self.filters] + means[..., self.filters:]
        z = ops.relu(self.bn(self.fc1(squeezed), training=training))
        logits = self.fc2(z)
        weight_first = ops.sigmoid(logits[..., : self.filters] - logits[..., self.filters:])
        return second + (first - second) * weight_first

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters, "reduction": self.reduction,
                "min_dim": self.min_dim, "bn_momentum": self.bn_momentum}


@keras.saving.register_keras_serializable("finegrain")
class BlurDownsample(layers.Layer):
    """Anti-aliased stride-2 downsampling: fixed [1,2,1]x[1,2,1]/16 depthwise blur, reflect pad 1.

    No weights: the kernel is a constant. Output size ceil(n / 2) per spatial axis, as the original's
    VALID conv on the padded input. (A depthwise conv measured 5-7x faster on CPU than the same
    separable blur written as strided slices and adds.)
    """

    _TAPS = np.array([1.0, 2.0, 1.0])

    def build(self, input_shape):
        blur = np.outer(self._TAPS, self._TAPS) / np.outer(self._TAPS, self._TAPS).sum()
        self._kernel = np.tile(blur[:, :, None, None], (1, 1, input_shape[-1], 1)).astype("float32")

    def call(self, inputs):
        padded = ops.pad(inputs, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        kernel = ops.convert_to_tensor(self._kernel, dtype=inputs.dtype)
        return ops.depthwise_conv(padded, kernel, strides=2, padding="valid")

    def compute_output_shape(self, input_shape):
        half = tuple(None if d is None else (d + 1) // 2 for d in input_shape[1:3])
        return (input_shape[0],) + half + (input_shape[3],)


@keras.saving.register_keras_serializable("finegrain")
class UpsampleAdd(layers.Layer):
    """Big-Little merge: ReLU(little + nearest-upsample-x2(big)).

    When the static shapes show little = 2 x big (every size the original accepts, once traced with
    known image sizes), the add runs without forming the upsampled map: little is viewed as
    [B, h, 2, w, 2, C] and big broadcast onto it. Otherwise the upsampled map (broadcast + reshape) is
    cropped to the little branch's size, so odd feature-map sizes, where the original fails on a shape
    mismatch, still work; on sizes the original accepts both paths are identical.
    """

    def call(self, inputs):
        little, big = inputs
        (height, width, channels), (big_height, big_width) = little.shape[1:], big.shape[1:3]
        if None not in (height, width, big_height, big_width) and (height, width) == (2 * big_height, 2 * big_width):
            tiles = ops.reshape(little, (-1, big_height, 2, big_width, 2, channels))
            merged = ops.relu(tiles + ops.expand_dims(ops.expand_dims(big, 2), 4))
            return ops.reshape(merged, (-1, height, width, channels))
        shape = ops.shape(big)
        batch, big_height, big_width, channels = shape[0], shape[1], shape[2], shape[3]
        up = ops.broadcast_to(ops.expand_dims(ops.expand_dims(big, 2), 4),
                              (batch, big_height, 2, big_width, 2, channels))
        up = ops.reshape(up, (batch, big_height * 2, big_width * 2, channels))
        little_shape = ops.shape(little)
        return ops.relu(little + up[:, : little_shape[1], : little_shape[2]])

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


@keras.saving.register_keras_serializable("finegrain")
class GeMPooling(layers.Layer):
    """Generalised-mean pooling, fixed p (3 as in the original), computed in float32.

    (mean over h, w of clip(x, eps)^p)^(1/p). p is a constant, not a weight, as in the original.
    """

    def __init__(self, p: float = 3.0, epsilon: float = 1e-6, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.p = float(p)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.clip(ops.cast(inputs, "float32"), self.epsilon, 1e12)
        pooled = ops.maximum(ops.mean(ops.power(x, self.p), axis=(1, 2)), self.epsilon)
        return ops.power(pooled, 1.0 / self.p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable("finegrain")
class GlobalAvgPool(layers.Layer):
    """Global average pooling to [B, C] in float32 (the embedding must not be bfloat16)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        return ops.mean(ops.cast(inputs, "float32"), axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3])


def new_keep_prob_variable(value: float = 1.0) -> keras.Variable:
    """The scalar keep probability DropBlock layers share (float32, never autocast to bfloat16)."""
    return keras.Variable(value, trainable=False, dtype="float32", autocast=False, name="dropblock_keep_prob")


@keras.saving.register_keras_serializable("finegrain")
class DropBlock(layers.Layer):
    """DropBlock (Ghiasi et al. 2018) as the original applies it, with per-example masks.

    Decision: masks are drawn per example (the DropBlock paper's definition) and renormalised per
    example; the TF1 original draws one mask per channel shared by the whole batch, which makes the
    noise of a batch perfectly correlated. Set `per_example=False` for the original's behaviour.

    Seeds fall only where a whole block fits (the original's valid region), with
    gamma = gamma_scale * (1 - keep_prob) * h * w / (block^2 * (h - block + 1) * (w - block + 1)).
    A feature map smaller than the block has no valid region, so nothing is dropped (the original
    fails there; this happens only on tiny test inputs).

    `keep_prob` is a non-trainable scalar variable shared by all DropBlock layers of a model (see
    `set_dropblock_keep_prob`); assigning it takes effect without retracing. Inactive at inference.
    """

    def __init__(self, block_size: int = 7, gamma_scale: float = 1.0, keep_prob: keras.Variable | None = None,
                 per_example: bool = True, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.block_size = int(block_size)
        self.gamma_scale = float(gamma_scale)
        self.per_example = bool(per_example)
        self.seed = seed
        if keep_prob is None:
            keep_prob = new_keep_prob_variable()
        self.keep_prob = keep_prob
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = ops.shape(inputs)
        height, width = shape[1], shape[2]
        block = self.block_size
        before, after = (block - 1) // 2, block // 2  # the original pads the seed region (tl, br) this way
        # Seeds allowed only in [before, size - after): a block centred there lies inside the map.
        rows = ops.arange(height)
        cols = ops.arange(width)
        valid_rows = ops.logical_and(rows >= before, rows < height - after)
        valid_cols = ops.logical_and(cols >= before, cols < width - after)
        valid = ops.cast(ops.logical_and(valid_rows[:, None], valid_cols[None, :]), "float32")[None, :, :, None]
        fits_h = ops.cast(ops.maximum(height - block + 1, 0), "float32")
        fits_w = ops.cast(ops.maximum(width - block + 1, 0), "float32")
        area = ops.cast(height * width, "float32")
        gamma = (self.gamma_scale * (1.0 - ops.cast(self.keep_prob, "float32")) * area
                 / float(block * block) / ops.maximum(fits_h * fits_w, 1.0))
        mask_batch = shape[0] if self.per_example else 1
        noise = keras.random.uniform((mask_batch, height, width, shape[3]), seed=self.seed_generator)
        seeds = ops.cast(noise < gamma, "float32") * valid
        dropped = ops.max_pool(seeds, pool_size=block, strides=1, padding="same")
        keep = 1.0 - dropped
        axes = (1, 2, 3) if self.per_example else (0, 1, 2, 3)
        kept = ops.sum(keep, axis=axes, keepdims=True)
        total = ops.cast(height * width * shape[3], "float32")
        scale = total / (kept + 1e-8)
        return inputs * ops.cast(keep * scale, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "block_size": self.block_size, "gamma_scale": self.gamma_scale,
                "per_example": self.per_example, "seed": self.seed}


@keras.saving.register_keras_serializable("finegrain")
class CosineClassifier(layers.Layer):
    """Cosine similarities between the L2-normalised input and L2-normalised class weights, float32.

    No scale and no margin: those belong to the loss (ArcFace / cosine-softmax).
    """

    def __init__(self, units: int, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(input_shape[-1], self.units),
                                      initializer="glorot_uniform", trainable=True)

    def call(self, inputs):
        features = ops.normalize(ops.cast(inputs, "float32"), axis=-1)
        weights = ops.normalize(ops.cast(self.kernel, "float32"), axis=0)
        return ops.matmul(features, weights)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self) -> dict:
        return {**super().get_config(), "units": self.units}
