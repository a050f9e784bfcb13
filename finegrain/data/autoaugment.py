"""AutoAugment (Cubuk et al. 2019) with the original code's `good` and `imagenet` policy sets.

Policies are tables (op, probability, level 0-10); levels map to magnitudes exactly as in the
original TF implementation (rotate 30 deg, shear 0.3, translate 250 px and cutout 100 px at 224 px,
enhance factors 0.1-1.9, posterize 0-4 bits, solarize threshold 0-256, fill value 128), with the
pixel magnitudes scaled by image size / 224 so that other sizes see the same relative geometry.

Why hand-written: tf.image's adjust_contrast / adjust_brightness / adjust_saturation use different
formulas from PIL's ImageEnhance that AutoAugment was searched with, and the Keras 3 augmentation
layers draw magnitudes from ranges with stateful seeds; here every op takes its exact magnitude and
all randomness comes from a stateless seed, so results are a pure function of the seed even under a
parallel tf.data map. Rotate and shear call TF's ImageProjectiveTransformV3 kernel (the one
keras.ops.image.affine_transform uses on TensorFlow) directly, as tf.data graphs must be pure TF
whatever the Keras backend; translate is the same nearest-neighbour shift done as slice + pad.
Every random choice (sub-policy, coins, signs) is drawn up front, for a whole epoch at once in the
training pipeline (`draw_policy`); applying it is two 16-way `switch_case`s (the 15 ops and "not
applied"), so the graph holds each op once instead of once per sub-policy.
Per-pixel ops that XLA compiles well (AutoContrast, Color, Contrast, Equalize's lookup) run as
XLA-compiled functions inside the tf.data graph: same results, 3-6x faster on CPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import tensorflow as tf
from tensorflow.python.ops import control_flow_util_v2  # private: see _branches_run_as_functions

from finegrain.errors import UserError

FILL = 128.0
MAX_LEVEL = 10.0

# (op, prob, level) pairs; the sub-policy lists of the original code's `good_policies()` (95, found on
# CIFAR-10 by the AutoAugment authors) and `imagenet_policies()` (25).
GOOD_POLICY = [
    # exp0_0 .. exp0_3
    [("Invert", 0.1, 7), ("Contrast", 0.2, 6)], [("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)],
    [("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)], [("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)], [("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)], [("Equalize", 0.8, 8), ("Invert", 0.1, 3)],
    [("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)], [("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)],
    [("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)], [("Equalize", 0.7, 5), ("Invert", 0.1, 3)],
    [("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)],
    [("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)], [("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)],
    [("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)], [("TranslateY", 0.2, 7), ("Color", 0.9, 6)],
    [("Equalize", 0.7, 6), ("Color", 0.4, 9)],
    # exp1_0 .. exp1_6
    [("ShearY", 0.2, 7), ("Posterize", 0.3, 7)], [("Color", 0.4, 3), ("Brightness", 0.6, 7)],
    [("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)], [("Equalize", 0.6, 5), ("Equalize", 0.5, 1)],
    [("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)],
    [("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)], [("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)],
    [("Solarize", 0.3, 5), ("Equalize", 0.6, 5)], [("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)],
    [("Brightness", 0.0, 8), ("Color", 0.8, 8)],
    [("Solarize", 0.2, 6), ("Color", 0.8, 6)], [("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)],
    [("Solarize", 0.4, 1), ("Equalize", 0.6, 5)], [("Brightness", 0.0, 0), ("Solarize", 0.5, 2)],
    [("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)],
    [("Contrast", 0.7, 5), ("Brightness", 0.0, 2)], [("Solarize", 0.2, 8), ("Solarize", 0.1, 5)],
    [("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)], [("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)],
    [("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)],
    [("Brightness", 0.0, 7), ("Equalize", 0.4, 7)], [("Solarize", 0.2, 5), ("Equalize", 0.7, 5)],
    [("Equalize", 0.6, 8), ("Color", 0.6, 2)], [("Color", 0.3, 7), ("Color", 0.2, 4)],
    [("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)],
    [("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)], [("ShearY", 0.6, 5), ("Equalize", 0.6, 5)],
    [("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)], [("Equalize", 0.8, 8), ("Equalize", 0.7, 7)],
    [("Equalize", 0.7, 7), ("Solarize", 0.5, 0)],
    [("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)], [("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)],
    [("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)], [("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)],
    [("Solarize", 0.5, 3), ("Equalize", 0.4, 4)],
    # exp2_0 .. exp2_7
    [("Color", 0.7, 7), ("TranslateX", 0.5, 8)], [("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)],
    [("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)], [("Brightness", 0.9, 6), ("Color", 0.2, 8)],
    [("Solarize", 0.5, 2), ("Invert", 0.0, 3)],
    [("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)], [("Cutout", 0.2, 4), ("Equalize", 0.1, 1)],
    [("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)], [("Color", 0.1, 8), ("ShearY", 0.2, 3)],
    [("ShearY", 0.4, 2), ("Rotate", 0.7, 0)],
    [("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)], [("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)],
    [("Equalize", 0.5, 0), ("Solarize", 0.6, 6)], [("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)],
    [("Equalize", 0.8, 2), ("Invert", 0.4, 0)],
    [("Equalize", 0.9, 5), ("Color", 0.7, 0)], [("Equalize", 0.1, 1), ("ShearY", 0.1, 3)],
    [("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)], [("Brightness", 0.5, 1), ("Contrast", 0.1, 7)],
    [("Contrast", 0.1, 4), ("Solarize", 0.6, 5)],
    [("Solarize", 0.2, 3), ("ShearX", 0.0, 0)], [("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)],
    [("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)], [("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)],
    [("Equalize", 0.8, 6), ("Invert", 0.3, 6)],
    [("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)], [("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)],
    [("ShearX", 0.0, 3), ("Posterize", 0.0, 3)], [("Solarize", 0.4, 3), ("Color", 0.2, 4)],
    [("Equalize", 0.1, 4), ("Equalize", 0.7, 6)],
    [("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)], [("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)],
    [("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)], [("Equalize", 0.1, 0), ("Equalize", 0.0, 6)],
    [("Equalize", 0.8, 4), ("Equalize", 0.0, 4)],
    [("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)], [("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)],
    [("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)], [("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)],
    [("Equalize", 0.6, 9), ("Equalize", 0.4, 4)],
]

IMAGENET_POLICY = [
    [("Posterize", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)], [("Posterize", 0.6, 7), ("Posterize", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)],
    [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)], [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)],
    [("Posterize", 0.8, 5), ("Equalize", 1.0, 2)], [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)],
    [("Equalize", 0.6, 8), ("Posterize", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Rotate", 0.8, 8), ("Color", 1.0, 2)], [("Color", 0.8, 8), ("Solarize", 0.8, 7)],
    [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)], [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)],
    [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]

POLICIES = {"good": GOOD_POLICY, "imagenet": IMAGENET_POLICY}


# ------------------------------------------------------------------------------------------ the ops
# Every op: (uint8 image [h, w, 3], level float32 scalar 0-10, sign float32 +-1, seed int [2]) -> uint8.


# ITU-R 601, as PIL's "L" mode. Plain numbers, not a tf.constant: creating a tensor at import would
# start TensorFlow's runtime, and MultiWorkerMirroredStrategy must be created before that.
_GREY_WEIGHTS = (0.299, 0.587, 0.114)

# XLA compiles a chain of per-pixel ops into one loop, where TF runs one kernel (and one pass over
# the image) per op, and its gather is a plain loop where TF's CPU kernel costs ~9 ns per element.
# On a 224 px image that makes AutoContrast, Color, Contrast and Equalize's lookup 4-25x faster.
# XLA compiles once per image shape (one shape per training run); the ops it cannot compile
# (the projective transform, shape-dependent slicing) and Sharpness (slower there) stay in TF.
_xla = functools.partial(tf.function, jit_compile=True, reduce_retracing=True)


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance: degenerate + factor * (image - degenerate), clipped (factor > 1 extrapolates).

    `degenerate` is float32 and may broadcast against the image ([h, w, 1] grey, a scalar, ...).
    """
    out = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
    return tf.saturate_cast(out, tf.uint8)  # clip to 0..255 and truncate, as PIL does


def _enhance_factor(level: tf.Tensor) -> tf.Tensor:
    return level / MAX_LEVEL * 1.8 + 0.1


def _grey(image: tf.Tensor) -> tf.Tensor:
    """Grey level [h, w, 1] float32, rounded to integers like PIL's "L" conversion."""
    return tf.round(tf.tensordot(tf.cast(image, tf.float32), _GREY_WEIGHTS, axes=1))[:, :, None]


def _transform(image: tf.Tensor, transform: list) -> tf.Tensor:
    """Projective transform (output -> input coordinates), nearest neighbour, empty pixels = FILL."""
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=tf.cast(tf.stack(transform), tf.float32)[None],
        output_shape=tf.shape(image)[:2],
        fill_value=FILL,
        interpolation="NEAREST",
        fill_mode="CONSTANT",
    )
    return out[0]


def _size_scale(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.reduce_min(tf.shape(image)[:2]), tf.float32) / 224.0


@_xla
def auto_contrast(image, level, sign, seed):
    """Stretch each channel to 0..255 (channels with one value are kept)."""
    lo = tf.cast(_channel_reduce(tf.reduce_min, image), tf.float32)  # [3]
    hi = tf.cast(_channel_reduce(tf.reduce_max, image), tf.float32)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(hi > lo, lo, 0.0)
    stretched = tf.clip_by_value((tf.cast(image, tf.float32) - offset) * scale, 0.0, 255.0)
    return tf.cast(stretched, tf.uint8)


def _channel_reduce(reduce, image: tf.Tensor) -> tf.Tensor:
    """`reduce` (tf.reduce_min or tf.reduce_max) over all pixels of each channel -> [3].

    XLA vectorises a reduction down 48 columns (rows of 16 pixels) but not one over an innermost
    axis of 3: AutoContrast takes 0.14 instead of 0.24 ms per 224 px image."""
    flat = tf.reshape(image, [-1])
    whole_rows = tf.shape(flat)[0] // 48 * 48
    head = tf.reshape(reduce(tf.reshape(flat[:whole_rows], [-1, 48]), axis=0), [16, 3])
    tail = tf.reshape(flat[whole_rows:], [-1, 3])  # the last pixels when their number is not a multiple of 16
    return reduce(tf.concat([head, tail], axis=0), axis=0)


@_xla
def _lookup_channels(table: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    """table [768] (three stacked 256-entry tables, one per channel) applied to a uint8 [h, w, 3] image."""
    return tf.gather(table, tf.cast(image, tf.int32) + tf.constant([0, 256, 512]))


def equalize(image, level, sign, seed):
    """PIL ImageOps.equalize per channel, all three channels at once through one histogram and one lookup."""
    # Channel-major [3, h*w] indices (value + 256 * channel): TF adds a per-row offset far faster
    # than a size-3 innermost broadcast. histogram_fixed_width is several times faster than bincount
    # here; with a power-of-two range of unit-wide bins every integer lands exactly in its own bin.
    indices = tf.cast(tf.transpose(tf.reshape(image, [-1, 3])), tf.int32) + tf.constant([[0], [256], [512]])
    hist = tf.reshape(tf.histogram_fixed_width(indices, [0, 1024], nbins=1024)[:768], [3, 256])
    last_nonzero = 255 - tf.argmax(tf.reverse(tf.cast(hist > 0, tf.int32), [1]), axis=1, output_type=tf.int32)
    step = (tf.reduce_sum(hist, axis=1) - tf.gather(hist, last_nonzero, batch_dims=1)) // 255  # [3]
    safe_step = tf.maximum(step, 1)[:, None]
    lut = (tf.cumsum(hist, axis=1) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([tf.zeros([3, 1], lut.dtype), lut[:, :-1]], axis=1), 0, 255)
    lut = tf.cast(tf.where(step[:, None] > 0, lut, tf.range(256)[None]), tf.uint8)  # step 0: unchanged
    return _lookup_channels(tf.reshape(lut, [-1]), image)


def invert(image, level, sign, seed):
    return 255 - image


def rotate(image, level, sign, seed):
    """Rotate about the centre by level/10 * 30 degrees, random direction."""
    angle = sign * level / MAX_LEVEL * 30.0 * math.pi / 180.0
    h = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
    w = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = (w - (cos * w - sin * h)) / 2.0
    y_offset = (h - (sin * w + cos * h)) / 2.0
    return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def posterize(image, level, sign, seed):
    """Keep the top int(level/10 * 4) bits."""
    shift = tf.cast(8 - tf.cast(tf.floor(level / MAX_LEVEL * 4.0), tf.int32), tf.uint8)
    return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, level, sign, seed):
    """Invert every pixel at or above the threshold int(level/10 * 256)."""
    threshold = tf.floor(level / MAX_LEVEL * 256.0)
    x = tf.cast(image, tf.float32)
    # x + [x >= t] * (255 - 2x) == (x < t ? x : 255 - x); arithmetic beats a per-pixel select on CPU.
    return tf.cast(x + tf.cast(x >= threshold, tf.float32) * (255.0 - 2.0 * x), tf.uint8)


@_xla
def color(image, level, sign, seed):
    return _blend(_grey(image), image, _enhance_factor(level))


@_xla
def contrast(image, level, sign, seed):
    """Blend with the mean grey level (PIL ImageEnhance.Contrast)."""
    return _blend(tf.reduce_mean(_grey(image)), image, _enhance_factor(level))


def brightness(image, level, sign, seed):
    return _blend(tf.constant(0.0), image, _enhance_factor(level))


def sharpness(image, level, sign, seed):
    """Blend with PIL's SMOOTH-filtered image; the 1-pixel border keeps the original pixels."""
    # SMOOTH = [[1,1,1],[1,5,1],[1,1,1]] / 13 = (3x3 box sum + 4 * centre) / 13. The box sum is done
    # separably with shifted slices: far cheaper on CPU than a 3-channel depthwise conv or avg_pool.
    x = tf.cast(image, tf.float32)
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    box = rows[:-2] + rows[1:-1] + rows[2:]
    smooth = tf.round((box + 4.0 * x[1:-1, 1:-1]) / 13.0)
    degenerate = tf.pad(smooth - x[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + x  # border: original pixels
    return _blend(degenerate, image, _enhance_factor(level))


def shear_x(image, level, sign, seed):
    return _transform(image, [1.0, sign * level / MAX_LEVEL * 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def shear_y(image, level, sign, seed):
    return _transform(image, [1.0, 0.0, 0.0, sign * level / MAX_LEVEL * 0.3, 1.0, 0.0, 0.0, 0.0])


def _shift(image: tf.Tensor, pixels: tf.Tensor, axis: int) -> tf.Tensor:
    """out[i] = image[i + pixels] along `axis`, FILL outside: the nearest-neighbour translate of the
    original, done as a slice and a pad (one copy) instead of a general projective transform."""
    n = tf.shape(image)[axis]
    d = tf.clip_by_value(tf.cast(tf.floor(pixels + 0.5), tf.int32), -n, n)
    begin = [0, 0, 0]
    size = [-1, -1, -1]
    begin[axis], size[axis] = tf.maximum(d, 0), n - tf.abs(d)
    paddings = [[0, 0], [0, 0], [0, 0]]
    paddings[axis] = [tf.maximum(-d, 0), tf.maximum(d, 0)]
    return tf.pad(tf.slice(image, tf.stack(begin), tf.stack(size)), paddings, constant_values=int(FILL))


def translate_x(image, level, sign, seed):
    return _shift(image, sign * level / MAX_LEVEL * 250.0 * _size_scale(image), axis=1)


def translate_y(image, level, sign, seed):
    return _shift(image, sign * level / MAX_LEVEL * 250.0 * _size_scale(image), axis=0)


def cutout(image, level, sign, seed):
    """Fill a square of side 2 * level/10 * 100 px (at 224) around a random centre with FILL."""
    pad = tf.cast(level / MAX_LEVEL * 100.0 * _size_scale(image), tf.int32)
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=tf.int32.max, dtype=tf.int32) % tf.stack([h, w])
    y0, y1 = tf.maximum(centre[0] - pad, 0), tf.minimum(centre[0] + pad, h)  # rows [c - pad, c + pad)
    x0, x1 = tf.maximum(centre[1] - pad, 0), tf.minimum(centre[1] + pad, w)
    # Rebuild from slices around the box: a few copies instead of a broadcast select over the image.
    box = tf.fill([y1 - y0, x1 - x0, 3], tf.constant(int(FILL), tf.uint8))
    band = tf.concat([image[y0:y1, :x0], box, image[y0:y1, x1:]], axis=1)
    return tf.concat([image[:y0], band, image[y1:]], axis=0)


OPS = {
    "AutoContrast": auto_contrast,
    "Equalize": equalize,
    "Invert": invert,
    "Rotate": rotate,
    "Posterize": posterize,
    "Solarize": solarize,
    "Color": color,
    "Contrast": contrast,
    "Brightness": brightness,
    "Sharpness": sharpness,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Cutout": cutout,
}
_OP_INDEX = {name: i for i, name in enumerate(OPS)}


def policy_tables(policy: str) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(op index [P, 2] int32, probability [P, 2] float32, level [P, 2] float32) of a named policy."""
    try:
        subs = POLICIES[policy]
    except KeyError:
        raise UserError(f"unknown AutoAugment policy {policy!r}: choose one of {', '.join(POLICIES)}") from None
    ops = tf.constant([[_OP_INDEX[name] for name, _, _ in sub] for sub in subs], tf.int32)
    probs = tf.constant([[p for _, p, _ in sub] for sub in subs], tf.float32)
    levels = tf.constant([[lv for _, _, lv in sub] for sub in subs], tf.float32)
    return ops, probs, levels


IDENTITY = len(OPS)  # op index of "not applied": the 16th branch of the switch


def apply_op(image: tf.Tensor, op: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Apply OPS[op] with a given level and sign; op == IDENTITY returns the image unchanged."""
    branches = [lambda f=f: f(image, level, sign, seed) for f in OPS.values()] + [lambda: image]
    out = tf.switch_case(op, branches)
    out.set_shape(image.shape)
    return out


def draw_policy(policy: str, seed: tf.Tensor, count: int | tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Every random choice of `count` policy applications in one vectorised draw.

    Returns (op [count, 2] int32, IDENTITY where the op's coin says no; level [count, 2] float32;
    sign [count, 2] float32 +-1). The training pipeline draws a whole epoch at once, as it draws
    its crop seeds, so no random op runs per image.
    """
    ops, probs, levels = policy_tables(policy)
    draws = tf.random.stateless_uniform(tf.stack([count, 5]), seed)  # sub-policy, 2 coins, 2 signs
    subs = tf.shape(ops)[0]
    choice = tf.minimum(tf.cast(draws[:, 0] * tf.cast(subs, tf.float32), tf.int32), subs - 1)
    op = tf.where(draws[:, 1:3] < tf.gather(probs, choice), tf.gather(ops, choice), IDENTITY)
    return op, tf.gather(levels, choice), tf.where(draws[:, 3:5] < 0.5, -1.0, 1.0)


def apply_policy(image: tf.Tensor, op: tf.Tensor, level: tf.Tensor, sign: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Apply one drawn sub-policy (op, level, sign: [2] each, from `draw_policy`) to a uint8 [h, w, 3] image."""
    with _branches_run_as_functions():
        for stage in range(2):
            op_seed = seed + tf.constant([0, stage + 1], seed.dtype)  # Cutout's own stream (another Philox key)
            image = apply_op(image, op[stage], level[stage], sign[stage], op_seed)
    return image


def autoaugment(image: tf.Tensor, policy: str, seed: tf.Tensor) -> tf.Tensor:
    """Apply one uniformly chosen sub-policy of `policy` to a uint8 [h, w, 3] image; `seed`: int [2]."""
    op, level, sign = draw_policy(policy, seed, 1)
    return apply_policy(image, op[0], level[0], sign[0], seed)


@contextlib.contextmanager
def _branches_run_as_functions() -> Iterator[None]:
    """Build tf.cond / tf.switch_case here as If / Case ops that run only the branch taken.

    By default TensorFlow lowers them to Switch/Merge dataflow, which inlines every branch into the
    tf.data map function: each image then pays executor work for the ops of all 15 branches of both
    stages, taken or not. Kept as functional ops, AutoAugment costs 0.48 instead of 1.10 ms per
    224 px image in a sequential map (same ops, same results). TensorFlow has no public switch for
    this, so the private flag is set while the graph is built; without it the graph is only slower.
    """
    previous = getattr(control_flow_util_v2, "_DISABLE_LOWER_USING_SWITCH_MERGE", None)
    if previous is None:
        yield
        return
    control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = True
    try:
        yield
    finally:
        control_flow_util_v2._DISABLE_LOWER_USING_SWITCH_MERGE = previous
