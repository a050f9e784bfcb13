"""The synthetic data set: deterministic from its seed, the promised classes and sizes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from finegrain.data import load_split
from finegrain.data.synthetic import CLASS_NAMES, ensure_synthetic


def test_same_seed_same_images_other_seed_differs(tmp_path):
    small = {"train_per_class": 2, "test_per_class": 1}
    a, made = ensure_synthetic(tmp_path / "a", **small)
    b, _ = ensure_synthetic(tmp_path / "b", **small)
    c, _ = ensure_synthetic(tmp_path / "c", seed=1, **small)
    assert made and ensure_synthetic(tmp_path / "a", **small) == (a, False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == len(CLASS_NAMES) * 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_catalog_splits(synthetic_dir):
    train = load_split("synthetic", "train", data_dir=synthetic_dir)
    test = load_split("synthetic", "test", data_dir=synthetic_dir)
    assert (train.num_examples, test.num_examples, train.num_classes) == (1200, 200, 10)
    assert sorted(train.class_names) == sorted(CLASS_NAMES) and not train.skipped
    image, _ = next(train.dataset.as_numpy_iterator())
    import io

    assert np.asarray(Image.open(io.BytesIO(image))).shape == (64, 64, 3)
    r_train = load_split("synthetic", "retrieval_train", data_dir=synthetic_dir)
    r_test = load_split("synthetic", "retrieval_test", data_dir=synthetic_dir)
    assert r_train.num_examples == r_test.num_examples == 700
    assert not set(r_train.class_names) & set(r_test.class_names)
