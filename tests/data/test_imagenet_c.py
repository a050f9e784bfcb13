"""A prepared ImageNet-C folder (Hendrycks' layout) as a corrupted source: labels by synset, what is there,
unreadable files skipped and named; tfds' imagenet2012_corrupted refused in one line when not prepared."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import finegrain  # noqa: F401
from finegrain.data.imagenet_c import imagenet_c_folder, imagenet_synsets, scan_layout, tfds_corrupted
from finegrain.errors import UserError

SYNSETS = {"n01440764": 0, "n01443537": 1, "n15075141": 999}


def _write(folder, value: int, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((16, 16, 3), value, np.uint8)).save(folder / f"ILSVRC2012_val_{value:04d}{i}.JPEG")


@pytest.fixture
def imagenet_c(tmp_path):
    """gaussian_noise at the top, motion_blur under a group folder (as Hendrycks' blur.tar unpacks); 2 x 2."""
    root = tmp_path / "ImageNet-C"
    for corruption in ("gaussian_noise", "blur/motion_blur"):
        for severity in (1, 3):
            for synset, label in SYNSETS.items():
                _write(root / corruption / str(severity) / synset, 10 * (label % 20) + severity, 2)
    (root / "gaussian_noise" / "3" / "n01443537" / "broken.JPEG").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_the_synset_list_is_imagenets_sorted_1000():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(synsets)
    assert {s: synsets.index(s) for s in SYNSETS} == SYNSETS


def test_folder_is_read_with_labels_by_synset_and_broken_files_skipped(imagenet_c, tmp_path):
    source = imagenet_c_folder(imagenet_c, data_dir=tmp_path / "data", clean=False)
    assert source.available == {"gaussian_noise": (1, 3), "motion_blur": (1, 3)} and source.imagenet
    assert source.prepared_size == 16 and source.num_classes == 1000
    for corruption in ("gaussian_noise", "motion_blur"):
        for severity in (1, 3):
            got = list(source.images(corruption, severity, image_size=224, preprocessing="imagenet").as_numpy_iterator())
            assert [int(label) for _, label in got] == [0, 0, 1, 1, 999, 999]
            assert source.count(corruption, severity) == 6
            for image, label in got:  # the picture each file holds (JPEG rounding aside)
                assert image.shape == (16, 16, 3) and abs(image.mean() - (10 * (label % 20) + severity)) < 3
    assert [(p.split("/")[-1], why) for p, why in source.skipped] == [("broken.JPEG", "truncated JPEG (no "
                                                                                     "end-of-image marker)")]
    with pytest.raises(UserError, match=r"lacks gaussian_noise 2.*it has: gaussian_noise 1,3; motion_blur 1,3"):
        source.require(["gaussian_noise"], [1, 2])
    with pytest.raises(UserError, match="lacks fog 1"):
        source.require(["fog"], [1])


def test_layout_errors_are_one_line(tmp_path, imagenet_c):
    with pytest.raises(UserError, match="is not a folder"):
        scan_layout(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no ImageNet-C corruption folders .* ROOT/CORRUPTION/SEVERITY/SYNSET"):
        scan_layout(tmp_path / "empty")
    _write(imagenet_c / "blur" / "motion_blur" / "3" / "cats", 0, 1)
    source = imagenet_c_folder(imagenet_c, data_dir=tmp_path / "data", clean=False)
    with pytest.raises(UserError, match="cats is not an ImageNet synset folder"):
        source.count("motion_blur", 3)  # the CLI counts every pass for its progress bar before the run


def test_tfds_imagenet2012_corrupted_not_prepared_says_how(tmp_path):
    with pytest.raises(UserError, match="no imagenet2012_corrupted config is prepared.*tfds build"):
        tfds_corrupted(data_dir=tmp_path, clean=False)


def test_tfds_imagenet2012_corrupted_configs_prepared_by_the_real_builder_are_read(tmp_path, monkeypatch):
    """tfds' own builder prepares two configs from tiny fake ImageNet archives (its frost download
    stubbed: frost is not among them); the source lists exactly those and yields their labels."""
    import tensorflow_datasets as tfds

    from tests.data.fake_archives import make_imagenet

    manual = tmp_path / "manual"
    manual.mkdir()
    expected = make_imagenet(manual)["validation"]  # 1-based class ids
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, urls: [str(tmp_path)] * len(urls))
    for config in ("gaussian_noise_1", "contrast_2"):
        builder = tfds.builder(f"imagenet2012_corrupted/{config}", data_dir=str(tmp_path / "data"))
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    source = tfds_corrupted(data_dir=tmp_path / "data", clean=False)
    assert source.available == {"gaussian_noise": (1,), "contrast": (2,)}
    assert source.imagenet and source.num_classes == 1000 and source.count("contrast", 2) == len(expected)
    got = list(source.images("contrast", 2, image_size=128, preprocessing="imagenet").as_numpy_iterator())
    assert sorted(int(label) for _, label in got) == sorted(c - 1 for c in expected)
    assert all(image.shape == (224, 224, 3) and image.dtype == np.float32 for image, _ in got)
    with pytest.raises(UserError, match=r"lacks contrast 1 \(it has: gaussian_noise 1; contrast 2\)"):
        source.require(["contrast"], [1, 2])
