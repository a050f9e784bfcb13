"""The real tfds download_and_prepare on fake archives in the original layouts, then our splits."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.data import load_split
from finegrain.data.catalog import CATALOG, DOWNLOADABLE_NAMES, TFDS_NAMES
from finegrain.errors import UserError

# tfds split each of our classification splits reads (see catalog.py)
CLASSIFICATION = {
    "food101": {"train": ["train"], "test": ["validation"]},
    "flowers102": {"train": ["train", "validation"], "test": ["test"]},
    "cub200": {"train": ["train"], "test": ["test"]},
    "cars196": {"train": ["train"], "test": ["test"]},
    "aircraft": {"train": ["train", "validation"], "test": ["test"]},
    "pets": {"train": ["train"], "test": ["test"]},
    "imagenet": {"train": ["train"], "test": ["validation"]},
}


def labels_of(split) -> list[int]:
    return [int(y) for _, y in split.dataset.as_numpy_iterator()]


@pytest.mark.parametrize("name", TFDS_NAMES)
def test_prepared_splits_hold_the_archived_examples(prepared, name):
    data_dir, expected = prepared
    for ours, sources in CLASSIFICATION.get(name, {}).items():
        split = load_split(name, ours, data_dir=data_dir)
        want = sorted(c - 1 for s in sources for c in expected[name][s])
        assert sorted(labels_of(split)) == want
        assert split.num_examples == len(want)
        assert split.num_classes == CATALOG[name].num_classes
        image, _ = next(split.dataset.as_numpy_iterator())
        assert image[:2] == b"\xff\xd8"  # still encoded JPEG bytes (SkipDecoding)


@pytest.mark.parametrize(
    "name, train_range, test_range",
    [("cub200", (0, 100), (100, 200)), ("cars196", (0, 98), (98, 196)), ("sop", (0, 11318), (11318, 22634))],
)
def test_zero_shot_splits_are_class_disjoint_with_the_paper_ranges(prepared, name, train_range, test_range):
    data_dir, expected = prepared
    everything = [c - 1 for cs in expected[name].values() for c in cs]  # 0-based original class ids
    train = load_split(name, "retrieval_train", data_dir=data_dir)
    test = load_split(name, "retrieval_test", data_dir=data_dir)
    for split, (start, stop) in ((train, train_range), (test, test_range)):
        want = sorted(c - start for c in everything if start <= c < stop)
        assert sorted(labels_of(split)) == want and split.num_examples == len(want) > 0
        assert split.num_classes == stop - start
    all_names = CATALOG[name].num_classes
    assert len(set(train.class_names) | set(test.class_names)) == all_names  # disjoint, together all classes
    assert not set(train.class_names) & set(test.class_names)


def test_sop_has_no_classification_split(prepared):
    with pytest.raises(UserError, match="retrieval_train"):
        load_split("sop", "train", data_dir=prepared[0])


def test_fetch_twice_does_nothing_the_second_time(prepared):
    from finegrain.data.tfds_source import fetch_tfds

    assert fetch_tfds("flowers102", data_dir=prepared[0], progress=False) is False


def test_unprepared_data_set_tells_to_fetch(tmp_path):
    with pytest.raises(UserError, match="finegrain fetch cub200"):
        load_split("cub200", "train", data_dir=tmp_path)


def test_failed_download_names_the_missing_files(tmp_path, monkeypatch):
    """The hosts answer the probe but the download itself fails: the message still names every file."""
    from tensorflow_datasets.core.download import downloader, util

    from finegrain.data import probe
    from finegrain.data.tfds_source import fetch_tfds

    def offline(*args, **kwargs):
        raise util.DownloadError("network is unreachable\nsecond line of detail")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", offline)
    monkeypatch.setattr(probe, "unreachable", lambda urls, **kwargs: {})
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "cars_train.tgz").write_bytes(b"x")  # present but not the original
    with pytest.raises(UserError) as info:
        fetch_tfds("cars196", data_dir=tmp_path / "data", manual_dir=manual, progress=False)
    message = str(info.value)
    for filename in ("cars_test.tgz", "car_devkit.tgz", "cars_test_annos_withlabels.mat"):
        assert filename in message
    put, replace = message.split("Put these files")[1].split("Replace these files")
    assert "cars_train.tgz" not in put and "cars_train.tgz" in replace
    assert str(manual) in message and "--manual-dir" in message
    assert "\n" not in message and "(NonMatchingChecksumError: Artifact " in message and "has wrong checksum:)" in message
    (manual / "cars_train.tgz").unlink()  # now everything comes from the (failing) network
    with pytest.raises(UserError) as info:
        fetch_tfds("cars196", data_dir=tmp_path / "data", manual_dir=manual, progress=False)
    assert "(DownloadError: network is unreachable)" in str(info.value)  # the whole first line, never cut


def test_aircraft_keeps_the_extra_labels_and_loses_exactly_the_banner(prepared):
    """Every stored image is its original less the 20 magenta banner rows: the green rows just above
    the banner are its last rows; gray level, file name and the three labels belong together."""
    from tests.data.fake_archives import AIRCRAFT_IMAGES, aircraft_photo

    from finegrain.data.tfds_source import builder_cls

    builder = builder_cls(CATALOG["aircraft"])(data_dir=str(prepared[0]))
    assert {s: builder.info.splits[s].num_examples for s in ("train", "validation", "test")} == {"train": 2, "validation": 1, "test": 2}
    features = builder.info.features
    seen = set()
    for example in builder.as_dataset(split="train+validation+test").as_numpy_iterator():
        image_id = example["file_name"].decode().removesuffix(".jpg")
        _, *labels = AIRCRAFT_IMAGES[image_id]
        assert [features[k].int2str(example[k]) for k in ("variant", "family", "manufacturer")] == labels
        level, original = aircraft_photo(list(AIRCRAFT_IMAGES).index(image_id))
        image = example["image"].astype(int)
        assert image.shape == (original.shape[0] - 20, original.shape[1], 3)  # exactly the banner's 20 rows less
        assert np.abs(image[:32] - level).max() <= 8  # gray, away from the colour edges' chroma blur
        red, green, blue = image[-4:].transpose(2, 0, 1)  # the green mark is the last rows now...
        assert green.min() > 150 and max(red.max(), blue.max()) < 60
        red, green, blue = image.transpose(2, 0, 1)  # ...and nothing of the magenta banner is left
        assert not ((red > 128) & (blue > 128) & (green < 100)).any()
        seen.add(image_id)
    assert seen == set(AIRCRAFT_IMAGES)


def test_banner_crop_keeps_the_originals_jpeg_settings():
    import io

    from PIL import Image, JpegImagePlugin

    from finegrain.data.builders.aircraft import crop_banner

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (50, 30, 3), dtype=np.uint8))
    for subsampling in (0, 2):  # 4:4:4 and 4:2:0
        original = io.BytesIO()
        photo.save(original, "JPEG", quality=60, subsampling=subsampling)
        with Image.open(io.BytesIO(original.getvalue())) as source, Image.open(io.BytesIO(crop_banner(original.getvalue()))) as cropped:
            assert cropped.size == (30, 30)
            assert cropped.quantization == source.quantization
            assert JpegImagePlugin.get_sampling(cropped) == subsampling
    png = io.BytesIO()
    photo.save(png, "PNG")
    with Image.open(io.BytesIO(crop_banner(png.getvalue()))) as cropped:  # not a JPEG: stored as one anyway
        assert (cropped.format, cropped.size) == ("JPEG", (30, 30))
    with pytest.raises(ValueError, match="no taller than the 50-row banner"):
        crop_banner(png.getvalue(), rows=50)


def test_download_script_fetches_every_tfds_data_set():
    import os
    import subprocess
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "download_datasets.sh"
    result = subprocess.run(["bash", str(script)], env={**os.environ, "FINEGRAIN": "echo"}, capture_output=True, text=True, check=True)
    assert [line for line in result.stdout.splitlines() if not line.startswith("==")] == [f"fetch {n}" for n in DOWNLOADABLE_NAMES]


def test_pipelines_read_tfds_splits(prepared):
    from finegrain.data.pipeline import eval_batches, train_batches

    data_dir, _ = prepared
    split = load_split("cub200", "retrieval_train", data_dir=data_dir)
    run = lambda: [(x.numpy(), y.numpy()) for x, y in train_batches(split, image_size=16, preprocessing="reid", batch_size=2, seed=3)]  # noqa: E731
    first, second = run(), run()
    assert len(first) == 2 and first[0][0].shape == (2, 16, 16, 3) and first[0][1].shape == (2, 100)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, second))
    test = load_split("flowers102", "test", data_dir=data_dir)
    labels = np.concatenate([y.numpy() for _, y in eval_batches(test, image_size=16, preprocessing="imagenet", batch_size=2)])
    assert labels.tolist() == labels_of(test)
