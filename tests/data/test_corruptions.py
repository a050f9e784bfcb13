"""The ImageNet-C corruptions on the fly: each runs, keeps dtype and shape, changes the image, and is a
pure function of (image, corruption, severity); the vectorised glass blur and the frost window give
tensorflow-datasets' bytes; a corruption that cannot run here is refused before any work."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import finegrain  # noqa: F401  (sets TensorFlow's CPU options before it is imported)
from finegrain.data import corruptions as C
from finegrain.errors import UserError


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph (shipped with scikit-learn), 48 x 64: textures the corruptions act on."""
    from sklearn.datasets import load_sample_image

    return np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((64, 48)))


@pytest.fixture(scope="module")
def frost_dir(tmp_path_factory) -> str:
    """Five stand-in frost pictures (Hendrycks' are not shipped in any package): smooth random fields."""
    folder = tmp_path_factory.mktemp("frost")
    rng = np.random.default_rng(3)
    for name in C.FROST_FILES:
        field = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(field).resize((300, 260), Image.BICUBIC).save(folder / name)
    return str(folder)


@pytest.mark.parametrize("corruption", C.ALL)
def test_every_corruption_changes_the_image_and_keeps_its_dtype_and_shape(photo, frost_dir, corruption):
    for severity in (1, 5):
        out = C.corrupt(photo, corruption, severity, frost_dir=frost_dir)
        assert out.dtype == np.uint8 and out.shape == photo.shape
        assert np.abs(out.astype(int) - photo).mean() > 0.5, (corruption, severity)


@pytest.mark.parametrize("corruption", ["gaussian_noise", "impulse_noise", "glass_blur", "snow", "elastic_transform",
                                        "spatter", "fog", "frost"])
def test_same_image_corruption_and_severity_give_the_same_bytes(photo, frost_dir, corruption):
    first = C.corrupt(photo, corruption, 3, frost_dir=frost_dir)
    np.random.seed(123)  # NumPy's global generator plays no part
    assert np.array_equal(C.corrupt(photo.copy(), corruption, 3, frost_dir=frost_dir), first)
    assert not np.array_equal(C.corrupt(photo, corruption, 4, frost_dir=frost_dir), first)
    other = photo.copy()
    other[0, 0] ^= 1  # another image (one pixel) draws other noise
    assert not np.array_equal(C.corrupt(other, corruption, 3, frost_dir=frost_dir)[1:], first[1:])


def test_parallel_calls_do_not_disturb_each_others_random_draws(photo):
    """tf.data runs corruptions on many threads: each call's draws come from its own generator."""
    images = [np.roll(photo, k, axis=1) for k in range(8)]
    alone = [C.corrupt(im, "shot_noise", 2) for im in images]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda im: C.corrupt(im, "shot_noise", 2), images * 4))
    for k, out in enumerate(together):
        assert np.array_equal(out, alone[k % 8])


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_vectorised_glass_blur_gives_tfds_bytes(photo, severity):
    from tensorflow_datasets.image_classification import corruptions as tfds_corruptions

    small = np.ascontiguousarray(photo[:24, :30])
    np.random.seed(7)
    expected = tfds_corruptions.glass_blur(small.copy(), severity)
    assert np.array_equal(C._glass_blur(small.copy(), severity, np.random.RandomState(7)), expected)


@pytest.mark.parametrize("severity", C.SEVERITIES)
def test_gathered_zoom_blur_gives_tfds_bytes_up_to_float_rounding(photo, severity):
    from tensorflow_datasets.image_classification import corruptions as tfds_corruptions

    odd = np.ascontiguousarray(photo[:45, :61])
    expected = tfds_corruptions.zoom_blur(odd.copy(), severity).astype(int)
    difference = np.abs(C.corrupt(odd, "zoom_blur", severity).astype(int) - expected)
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3


def test_frost_gives_tfds_bytes_at_224(frost_dir, monkeypatch):
    from tensorflow_datasets.image_classification import corruptions as tfds_corruptions

    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    monkeypatch.setattr(tfds_corruptions, "FROST_FILENAMES", [f"{frost_dir}/{n}" for n in C.FROST_FILES])
    np.random.seed(11)
    expected = tfds_corruptions.frost(image, 4)
    assert np.array_equal(C._frost(image, 4, np.random.RandomState(11), frost_dir), expected)


def test_frost_covers_an_image_larger_than_its_pictures(frost_dir):
    big = np.zeros((400, 500, 3), np.uint8)
    out = C.corrupt(big, "frost", 5, frost_dir=frost_dir)
    assert out.shape == big.shape and out.mean() > 20  # frost everywhere on black


def test_motion_kernel_trails_along_the_angle():
    kernel = C.motion_kernel(3, 2, 0.0)  # angle 0: taps to the right of the centre, weights falling
    centre = kernel.shape[0] // 2
    assert np.isclose(kernel.sum(), 1.0)
    taps = kernel[centre, centre:]
    assert np.count_nonzero(kernel) == 7 and np.all(np.diff(taps) < 0)
    diagonal = C.motion_kernel(3, 2, -45.0)  # up and to the right
    assert diagonal[centre - 2, centre + 2] > 0 and diagonal[centre + 2, centre + 2] == 0


def test_unknown_names_and_severities_are_refused_in_one_line():
    assert C.parse_corruptions(None) == list(C.ALL)
    assert C.parse_corruptions("standard") == list(C.STANDARD)
    assert C.parse_corruptions("fog, snow,fog") == ["fog", "snow"]
    with pytest.raises(UserError, match="unknown corruption.*blurr"):
        C.parse_corruptions("fog,blurr")
    assert C.parse_severities("3,1") == [1, 3]
    for bad in ("0", "6", "a", ","):
        with pytest.raises(UserError, match="--severities"):
            C.parse_severities(bad)


def test_a_corruption_whose_dependency_is_missing_is_refused_before_any_work(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    called = []
    monkeypatch.setattr(C, "corrupt", lambda *a, **k: called.append(a))
    C.check_available(["contrast", "fog"], image_size=8)  # numpy only: fine
    with pytest.raises(UserError) as caught:
        C.check_available(["contrast", "glass_blur", "saturate"], image_size=8)
    message = str(caught.value)
    assert "\n" not in message and "glass_blur, saturate" in message and "pip install scikit-image" in message
    assert len(called) == 2 * 5  # the first check ran its two corruptions at 5 severities; the second, none
    with pytest.raises(UserError, match="frost needs .*--frost-dir"):
        C.check_available(["frost"])
    with pytest.raises(UserError, match="lacks frost1.png"):
        C.check_available(["frost"], frost_dir=tmp_path)


def test_corrupted_images_in_tf_data_equal_corrupt_on_the_rounded_eval_image(photo):
    import io

    import tensorflow as tf

    from finegrain.data.preprocessing import eval_image, to_uint8

    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    encoded = buffer.getvalue()
    ds = tf.data.Dataset.from_tensor_slices((tf.constant([encoded] * 3), tf.constant([0, 1, 2], tf.int64)))
    got = list(C.corrupted_images(ds, "zoom_blur", 2, image_size=32, preprocessing="imagenet").as_numpy_iterator())
    clean = to_uint8(eval_image(tf.constant(encoded), image_size=32, preprocessing="imagenet")).numpy()
    expected = C.corrupt(clean, "zoom_blur", 2).astype(np.float32)
    assert [label for _, label in got] == [0, 1, 2]
    for image, _ in got:
        assert image.dtype == np.float32 and np.array_equal(image, expected)
