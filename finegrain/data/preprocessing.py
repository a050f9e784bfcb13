"""Decode + geometry of the paper's preprocessing types, at any image size.

`image_size` is always the *training* size. Training crops decode only the crop window of a JPEG
(the fused `decode_and_crop_jpeg`); other formats are decoded whole, then cropped.

Evaluation repeats the original's arithmetic step by step, so the released weights see the pixels
they were scored on: the eval size s is `image_size` for `imagenet` and int(image_size / 0.875) for
`reid`, round(image_size * 256 / 224) for the `imagenet_224_256*` types; `reid` resizes the whole
image to s x s; the others resize the whole image so that its short side is R (int(s / 0.875), or
s + 1 for `imagenet_224_256a`), the new sides computed in float32 and truncated, then take the
central s x s crop (offset floor((side - s) / 2)). Every resize is TF1's bilinear (no half-pixel
centres, corners not aligned), not TF2's `tf.image.resize`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from finegrain.errors import UserError


@dataclass(frozen=True)
class Geometry:
    eval_resize: int  # at train size 224: short side (imagenet*) or square side (reid); eval derives it
    # with the original's rule (eval_short_side, eval_image_size), reid training resizes to it
    eval_crop: int | None  # at train size 224: centre crop side; None = no crop (reid)
    train: str  # "inception_crop" or "reid"


PREPROCESSING: dict[str, Geometry] = {
    "imagenet": Geometry(256, 224, "inception_crop"),
    "imagenet_224_256": Geometry(292, 256, "inception_crop"),
    "imagenet_224_256a": Geometry(257, 256, "inception_crop"),
    "reid": Geometry(256, None, "reid"),
}

# Random crop of the Inception / official ResNet training: aspect [3/4, 4/3], area [0.05, 1], covered 0.1.
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_AREA = (0.05, 1.0)
CROP_MIN_COVERED = 0.1


def geometry(preprocessing: str) -> Geometry:
    try:
        return PREPROCESSING[preprocessing]
    except KeyError:
        raise UserError(
            f"unknown preprocessing {preprocessing!r}: choose one of {', '.join(PREPROCESSING)}"
        ) from None


def _scaled(value_at_224: int, image_size: int) -> int:
    return max(1, int(round(value_at_224 * image_size / 224)))


def eval_image_size(preprocessing: str, image_size: int) -> int:
    """Side of the square eval images for a model trained at `image_size` (the original's rule)."""
    g = geometry(preprocessing)
    if g.eval_crop is None:  # reid: int(size * (1 / 0.875)), in float64 as the original's Python
        return max(1, int(image_size * (1.0 / 0.875)))
    return _scaled(g.eval_crop, image_size)


def eval_short_side(preprocessing: str, eval_size: int) -> int:
    """Short side R the whole image is resized to before the central eval crop of `eval_size`."""
    if preprocessing == "imagenet_224_256a":
        return eval_size + 1
    return int(eval_size * (1.0 / 0.875))


def short_side_resize_shape(hw: tf.Tensor, short_side: int) -> tf.Tensor:
    """[new_h, new_w] with the short side `short_side`: the ratio and products in float32, truncated."""
    hw = tf.cast(hw, tf.float32)
    ratio = tf.constant(short_side, tf.float32) / tf.reduce_min(hw)
    return tf.cast(hw * ratio, tf.int32)


def resize_tf1(image: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """TF1's bilinear resize (align_corners=False, no half-pixel centres) to float32 0..255.

    TF2's `tf.image.resize` samples at half-pixel centres and gives other pixels (a mean difference
    of 2-16 grey levels on photographs); the released weights were scored with TF1's.
    """
    # The raw op that tf.compat.v1.image.resize_bilinear wraps (the wrapper logs a deprecation warning).
    return tf.raw_ops.ResizeBilinear(images=image[None], size=size, align_corners=False, half_pixel_centers=False)[0]


Window = Callable[[tf.Tensor], tf.Tensor]  # image [height, width] -> crop window [y, x, h, w] (int32)


def decode_window(encoded: tf.Tensor, window: Window | None) -> tf.Tensor:
    """Decode an encoded image to uint8 [h, w, 3], cropped to `window(shape)`; fused for JPEGs."""

    def jpeg() -> tf.Tensor:
        if window is None:
            return tf.io.decode_jpeg(encoded, channels=3)
        hw = tf.image.extract_jpeg_shape(encoded)[:2]
        return tf.image.decode_and_crop_jpeg(encoded, window(hw), channels=3)

    def other() -> tf.Tensor:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        if window is None:
            return image
        y, x, h, w = tf.unstack(window(tf.shape(image)[:2]))
        return image[y : y + h, x : x + w]

    image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    image.set_shape([None, None, 3])
    return image


def _random_crop_window(seed: tf.Tensor) -> Window:
    def window(hw: tf.Tensor) -> tf.Tensor:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.concat([hw, [3]], 0),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=CROP_MIN_COVERED,
            aspect_ratio_range=CROP_ASPECT,
            area_range=CROP_AREA,
            max_attempts=10,
            use_image_if_no_bounding_boxes=True,
        )
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    return window


def _resize(image: tf.Tensor, height: int, width: int | None = None) -> tf.Tensor:
    """Bilinear resize to float32 (0..255)."""
    return tf.image.resize(image, [height, width or height], method="bilinear")


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    # saturate_cast clips in one op where clip_by_value takes two (minimum, maximum): 0.07 ms less per
    # 224 px image, the same values.
    return tf.saturate_cast(tf.round(image), tf.uint8)


def _resized_to_uint8(image: tf.Tensor) -> tf.Tensor:
    """A bilinear resize's float output -> uint8, rounded half up.

    Bilinear weights lie in [0, 1] and sum to 1, so the output of resizing uint8 pixels already lies
    in 0..255 (up to float rounding, which + 0.5 and truncation absorb): no clip is needed, and a
    single cast of x + 0.5 replaces round + saturate_cast, a whole pass fewer (0.06 ms per 224 px image).
    """
    return tf.cast(image + 0.5, tf.uint8)


def train_image(encoded: tf.Tensor, seed: tf.Tensor, *, image_size: int, preprocessing: str, flip: bool = True) -> tf.Tensor:
    """Training preprocessing of one encoded image -> uint8 [image_size, image_size, 3]. `seed`: int [2].

    flip=False leaves out the random mirror flip (the training pipeline flips whole batches)."""
    g = geometry(preprocessing)
    # The crop draws from `seed`, the coins from the next Philox key: one random op instead of a
    # split and a draw per use (each random op costs ~25 us in a tf.data map).
    flip_coin, branch_coin = tf.unstack(tf.random.stateless_uniform([2], seed + tf.constant([0, 1], seed.dtype)))
    if g.train == "inception_crop":
        image = _resize(decode_window(encoded, _random_crop_window(seed)), image_size)
    else:  # reid: p=0.5 resize to 256/224 x size then random crop, else resize straight to size
        image = decode_window(encoded, None)
        big = _scaled(g.eval_resize, image_size)
        image = tf.cond(
            branch_coin < 0.5,
            lambda: tf.image.stateless_random_crop(_resize(image, big), [image_size, image_size, 3], seed),
            lambda: _resize(image, image_size),
        )
    image = _resized_to_uint8(image)
    if flip:
        image = tf.cond(flip_coin < 0.5, lambda: tf.reverse(image, [1]), lambda: image)  # flip on uint8: 4x fewer bytes
    image.set_shape([image_size, image_size, 3])
    return image


def eval_image(encoded: tf.Tensor, *, image_size: int, preprocessing: str) -> tf.Tensor:
    """Evaluation preprocessing -> float32 [s, s, 3] on 0..255, s = eval_image_size(preprocessing, image_size).

    The original's steps (module docstring): whole-image decode, TF1 bilinear resize, central crop.
    """
    g = geometry(preprocessing)
    size = eval_image_size(preprocessing, image_size)
    image = decode_window(encoded, None)
    if g.eval_crop is None:
        image = resize_tf1(image, tf.constant([size, size]))
    else:
        resized = short_side_resize_shape(tf.shape(image)[:2], eval_short_side(preprocessing, size))
        image = resize_tf1(image, resized)
        top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
        image = image[top : top + size, left : left + size]
    image.set_shape([size, size, 3])
    return image
