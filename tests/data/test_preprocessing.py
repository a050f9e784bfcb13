"""Decoding and crop geometry: the fused JPEG path and the generic path agree; centre crops are centred."""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from finegrain.data.preprocessing import _centre_crop_window, decode_window, eval_image


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


def test_centre_crop_window_and_eval_geometry():
    assert _centre_crop_window(224 / 256)(tf.constant([40, 60])).numpy().tolist() == [3, 13, 35, 35]
    # a white square in the centre of a black frame survives the centre crop and fills most of it
    array = np.zeros((64, 96, 3), np.uint8)
    array[8:56, 24:72] = 255
    out = eval_image(encode(array, "PNG"), image_size=28, preprocessing="imagenet").numpy()
    assert out.shape == (28, 28, 3) and out[4:24, 4:24].min() > 200
