"""Own folders: class sub-folders, train/test layout, stratified split, unreadable images skipped and named."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.data import load_split
from finegrain.data.folder import folder_files, skipped_report, stratified_split
from finegrain.data.pipeline import eval_batches, train_batches
from finegrain.errors import UserError
from tests.data.fake_archives import jpeg


def make_folder(root, classes=("cat", "dog"), per_class=5):
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i}.jpg").write_bytes(jpeg(10 * k + i, (40, 30)))
    return root


def test_folder_with_corrupt_and_truncated_images_runs_and_names_both(tmp_path):
    root = make_folder(tmp_path / "pets")
    corrupt = root / "cat" / "corrupt.jpg"
    corrupt.write_bytes(b"this is not an image at all")
    truncated = root / "dog" / "truncated.jpg"
    truncated.write_bytes(jpeg(99, (64, 48))[:300])
    data_dir = tmp_path / "data"
    train = load_split(root, "train", data_dir=data_dir)
    test = load_split(root, "test", data_dir=data_dir)
    skipped = dict(train.skipped + test.skipped)
    assert set(skipped) == {str(corrupt), str(truncated)}
    assert "truncated" in skipped[str(truncated)]
    assert train.num_examples + test.num_examples == 10
    report = skipped_report(train.skipped + test.skipped)
    assert str(corrupt) in report and str(truncated) in report
    # the run goes on: a full epoch and an evaluation pass over what is readable
    batches = list(train_batches(train, image_size=16, preprocessing="imagenet", batch_size=2))
    assert len(batches) == train.num_examples // 2
    assert sum(len(y) for _, y in eval_batches(test, image_size=16, preprocessing="imagenet", batch_size=3)) == test.num_examples
    # a second load reuses the cached check and reports the same files
    assert dict(load_split(root, "train", data_dir=data_dir).skipped + test.skipped) == skipped


def test_stratified_split_is_per_class_and_seeded():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    mask = stratified_split(labels, seed=1)
    assert [int(mask[labels == c].sum()) for c in range(3)] == [2, 1, 0]
    assert (stratified_split(labels, seed=1) == mask).all()
    assert not (stratified_split(labels, seed=2) == mask).all()


def test_train_and_test_folders_and_retrieval_halves(tmp_path):
    root = tmp_path / "set"
    make_folder(root / "train", classes=("a", "b", "c", "d"), per_class=3)
    make_folder(root / "test", classes=("a", "b", "c", "d"), per_class=1)
    train = folder_files(root, "train")
    test = folder_files(root, "test")
    assert len(train.paths) == 12 and len(test.paths) == 4 and train.class_names == ["a", "b", "c", "d"]
    r_test = load_split(root, "retrieval_test", data_dir=tmp_path / "d")
    assert r_test.class_names == ["c", "d"] and r_test.num_examples == 8
    assert sorted(int(y) for _, y in r_test.dataset.as_numpy_iterator()) == [0] * 4 + [1] * 4


def test_missing_or_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_split(tmp_path / "nope", "train", data_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_split(tmp_path / "empty", "train", data_dir=tmp_path)


def test_cut_short_jpegs_are_skipped_without_native_log_lines(tmp_path, capfd):
    """TensorFlow's JPEG decoder would print "Premature end of JPEG data" (or libjpeg's "Improper call")
    straight to file descriptor 2; the scan decides those files without it. A complete JPEG with
    trailing bytes is kept."""
    from finegrain.data.folder import check_images

    root = make_folder(tmp_path / "pets", per_class=1)
    whole = jpeg(7, (64, 48))
    (root / "cat" / "half.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "cat" / "header_only.jpg").write_bytes(whole[:300])
    (root / "dog" / "trailing.jpg").write_bytes(whole + b"camera metadata")
    paths = sorted(str(p) for p in root.rglob("*.jpg"))
    capfd.readouterr()
    bad = dict(check_images(paths))
    native = capfd.readouterr().err
    assert sorted(bad) == [str(root / "cat" / "half.jpg"), str(root / "cat" / "header_only.jpg")]
    assert all("truncated JPEG" in why for why in bad.values())
    assert "JPEG" not in native, native


def test_file_names_that_are_not_utf8_are_read(tmp_path):
    import os

    root = make_folder(tmp_path / "photos")
    os.rename(root / "cat" / "0.jpg", os.fsencode(root / "cat") + b"/caf\xe9.jpg")  # a Latin-1 name
    split = load_split(root, "train", data_dir=tmp_path / "data")
    images = [image for images, _ in eval_batches(split, image_size=16, preprocessing="imagenet", batch_size=4)
              for image in images]
    assert len(images) == split.num_examples and not split.skipped
