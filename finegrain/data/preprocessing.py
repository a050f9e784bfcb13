"""Decode + geometry of the paper's preprocessing types, at any image size.

`image_size` is always the *training* size. The 224/256-style ratios of the original scale with it:
e.g. `imagenet` at 112 evaluates on the centre 112/128 of the short side, resized to 112; `reid`
and the `imagenet_224_256*` types evaluate at `eval_image_size(...)` = round(image_size * 256 / 224).
JPEGs are decoded with the fused `decode_and_crop_jpeg` (only the crop window is decoded); other
formats (PNG, GIF, BMP, WebP) are decoded whole, then cropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from finegrain.errors import UserError


@dataclass(frozen=True)
class Geometry:
    eval_resize: int  # at train size 224: short side (imagenet*) or square side (reid) before the eval crop
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
    """Side of the square eval images for a model trained at `image_size`."""
    g = geometry(preprocessing)
    return _scaled(g.eval_crop or g.eval_resize, image_size)


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


def _centre_crop_window(ratio: float) -> Window:
    def window(hw: tf.Tensor) -> tf.Tensor:
        side = tf.maximum(1, tf.cast(tf.round(ratio * tf.cast(tf.reduce_min(hw), tf.float32)), tf.int32))
        return tf.stack([(hw[0] - side + 1) // 2, (hw[1] - side + 1) // 2, side, side])

    return window


def _resize(image: tf.Tensor, height: int, width: int | None = None) -> tf.Tensor:
    """Bilinear resize to float32 (0..255)."""
    return tf.image.resize(image, [height, width or height], method="bilinear")


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def train_image(encoded: tf.Tensor, seed: tf.Tensor, *, image_size: int, preprocessing: str) -> tf.Tensor:
    """Training preprocessing of one encoded image -> uint8 [image_size, image_size, 3]. `seed`: int [2]."""
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
    image = to_uint8(image)
    image = tf.cond(flip_coin < 0.5, lambda: tf.reverse(image, [1]), lambda: image)  # flip on uint8: 4x fewer bytes
    image.set_shape([image_size, image_size, 3])
    return image


def eval_image(encoded: tf.Tensor, *, image_size: int, preprocessing: str) -> tf.Tensor:
    """Evaluation preprocessing -> float32 [s, s, 3] on 0..255, s = eval_image_size(preprocessing, image_size)."""
    g = geometry(preprocessing)
    size = eval_image_size(preprocessing, image_size)
    if g.eval_crop is None:
        image = _resize(decode_window(encoded, None), size)
    else:  # aspect-preserving resize + centre crop == centre crop of ratio crop/resize, then resize
        image = _resize(decode_window(encoded, _centre_crop_window(g.eval_crop / g.eval_resize)), size)
    image.set_shape([size, size, 3])
    return image
