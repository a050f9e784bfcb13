"""Decoding and crop geometry: the fused JPEG path and the generic path agree; evaluation equals the original's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from finegrain.data.preprocessing import (
    decode_window,
    eval_image,
    eval_image_size,
    eval_short_side,
    short_side_resize_shape,
    train_image,
)


def encode(array: np.ndarray, fmt: str) -> tf.Tensor:
    buf = io.BytesIO()
    # 4:4:4 JPEG: no chroma upsampling, whose smoothing differs at the edges of a cropped decode
    Image.fromarray(array).save(buf, fmt, **({"quality": 95, "subsampling": 0} if fmt == "JPEG" else {}))
    return tf.constant(buf.getvalue())


def test_fused_jpeg_crop_equals_decode_then_slice():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    jpeg = encode(array, "JPEG")
    window = lambda hw: tf.constant([5, 9, 20, 31])  # noqa: E731
    fused = decode_window(jpeg, window).numpy()
    full = tf.io.decode_jpeg(jpeg, channels=3).numpy()[5:25, 9:40]
    assert fused.shape == (20, 31, 3) and np.abs(fused.astype(int) - full).max() <= 1
    png = decode_window(encode(array, "PNG"), window).numpy()  # non-JPEG path: exact pixels
    assert np.array_equal(png, array[5:25, 9:40])


@pytest.mark.parametrize("preprocessing", ["imagenet", "reid"])
def test_training_images_keep_black_and_white(preprocessing):
    # The float resize is converted to uint8 without a clip (its output cannot leave 0..255): white must
    # stay 255 (an overflowing conversion would wrap it to 0) and black 0, resized down and up.
    seed = tf.constant([1, 2], tf.int64)
    stripes = np.zeros((40, 30, 3), np.uint8)
    stripes[::3] = 255
    for size in (16, 72):
        for value in (0, 255):
            out = train_image(encode(np.full((40, 30, 3), value, np.uint8), "PNG"), seed, image_size=size,
                              preprocessing=preprocessing).numpy()
            assert out.dtype == np.uint8 and out.shape == (size, size, 3) and np.all(out == value)
        out = train_image(encode(stripes, "PNG"), seed, image_size=size, preprocessing=preprocessing).numpy()
        assert out.shape == (size, size, 3) and out.max() > 200 and out.min() < 60


def test_eval_keeps_the_centre():
    # a white square in the centre of a black frame survives the centre crop and fills most of it
    array = np.zeros((64, 96, 3), np.uint8)
    array[8:56, 24:72] = 255
    out = eval_image(encode(array, "PNG"), image_size=28, preprocessing="imagenet").numpy()
    assert out.shape == (28, 28, 3) and out[4:24, 4:24].min() > 200


# ------------------------------------------------------------------------------------------------
# Evaluation equals the original's arithmetic, restated here in NumPy (not TensorFlow), on real
# photographs that ship with installed packages; the JPEG decoder is TensorFlow's on both sides.


def tf1_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 bilinear resize: source = destination * (in / out), corners not aligned, no half-pixel centres."""
    in_h, in_w = image.shape[:2]
    x = image.astype(np.float64)

    def axis(out: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(out) * np.float32(size / out)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, size - 1), src - lo

    y0, y1, fy = axis(out_h, in_h)
    x0, x1, fx = axis(out_w, in_w)
    top = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bottom = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def original_eval(image: np.ndarray, kind: str, size: int) -> np.ndarray:
    """The original's evaluation steps for a model trained at `size`, restated."""
    if kind == "reid":
        side = int(size * (1.0 / 0.875))
        return tf1_bilinear(image, side, side)
    out = {"imagenet": size, "imagenet_224_256": round(size * 256 / 224),
           "imagenet_224_256a": round(size * 256 / 224)}[kind]
    short = out + 1 if kind == "imagenet_224_256a" else int(out * (1.0 / 0.875))
    h, w = np.float32(image.shape[0]), np.float32(image.shape[1])
    ratio = np.float32(short) / min(h, w)
    new_h, new_w = int(np.float32(h * ratio)), int(np.float32(w * ratio))
    resized = tf1_bilinear(image, new_h, new_w)
    top, left = (new_h - out) // 2, (new_w - out) // 2
    return resized[top : top + out, left : left + out]


def sample_photos() -> dict[str, bytes]:
    import os

    import matplotlib
    import sklearn.datasets

    sk = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    paths = [os.path.join(sk, "china.jpg"), os.path.join(sk, "flower.jpg"),
             os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")]
    return {os.path.basename(p): open(p, "rb").read() for p in paths}


@pytest.mark.parametrize("kind", ["imagenet", "imagenet_224_256", "imagenet_224_256a", "reid"])
@pytest.mark.parametrize("size", [224, 97])  # the sample photos are landscape (2) and portrait (1)
def test_eval_preprocessing_equals_the_originals_on_photographs(kind, size):
    for name, data in sample_photos().items():
        decoded = tf.io.decode_jpeg(data, channels=3).numpy()
        expected = original_eval(decoded, kind, size)
        got = eval_image(tf.constant(data), image_size=size, preprocessing=kind).numpy()
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=1e-2, err_msg=f"{name} {kind} {size}")


def test_the_short_side_is_computed_in_float32_and_truncated():
    # china.jpg is 427 x 640: at short side 256 the original gets 255 rows (256 / 427 * 427 in float32).
    assert short_side_resize_shape(tf.constant([427, 640]), 256).numpy().tolist() == [255, 383]
    assert eval_image_size("reid", 224) == 256 and eval_image_size("reid", 32) == 36
    assert eval_image_size("imagenet_224_256", 224) == 256 and eval_short_side("imagenet_224_256", 256) == 292
    assert eval_short_side("imagenet_224_256a", 256) == 257 and eval_short_side("imagenet", 224) == 256
