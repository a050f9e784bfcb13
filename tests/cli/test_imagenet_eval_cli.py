"""ImageNet evaluation: the 1001-way heads of the released checkpoints score label c at logit c + 1
(index 0 is background), a 1000-way head without offset; each release's own eval preprocessing.

The data set is the real tfds imagenet2012 builder run on tiny fake archives (tests.data.fake_archives).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from finegrain.models import refs
from finegrain.models.official import OFFICIAL_EVAL_PREPROCESSING
from tests.cli.conftest import run
from tests.data.fake_archives import make_imagenet
from tests.models.conftest import read_manifest


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """(data dir with imagenet prepared, 0-based labels of its test split in order)."""
    from finegrain.data import load_split
    from finegrain.data.tfds_source import fetch_tfds

    manual, data_dir = tmp_path_factory.mktemp("manual"), tmp_path_factory.mktemp("data")
    make_imagenet(manual)
    assert fetch_tfds("imagenet", data_dir=data_dir, manual_dir=manual, progress=False)
    labels = [int(y) for _, y in load_split("imagenet", "test", data_dir=data_dir).dataset.as_numpy_iterator()]
    return data_dir, labels


def _always_predicting(tmp_path, num_classes: int, logit: int):
    """A tiny model (weights file, no card) whose logits favour `logit` for every image."""
    from finegrain.models import create_model

    model = create_model("tiny_test_net", num_classes=num_classes)
    (bias,) = [v for v in model.weights if v.path.endswith("bias") and v.shape == (num_classes,)]
    value = np.zeros(num_classes, np.float32)
    value[logit] = 1000.0
    bias.assign(value)
    path = tmp_path / f"tiny{num_classes}.weights.h5"
    model.save_weights(path)
    return path


@pytest.mark.parametrize("num_classes, offset", [(1001, 1), (1000, 0)])
def test_the_head_size_decides_the_label_offset(imagenet, tmp_path, capsys, num_classes, offset):
    data_dir, labels = imagenet
    assert len(set(labels)) == len(labels) == 3  # so predicting the first label scores exactly 1/3
    weights = _always_predicting(tmp_path, num_classes, labels[0] + offset)
    code, out, err = run(capsys, "eval", "--model", str(weights), "--arch", "tiny_test_net", "--num-classes",
                         str(num_classes), "--dataset", "imagenet", "--data-dir", str(data_dir), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["label_offset"] == offset and report["num_examples"] == 3
    assert report["top1"] == pytest.approx(1 / 3)
    assert report["class_names"][: offset + 1] == ["background"] * offset + ["n01440764"]


def test_a_1001_way_model_is_scored_on_imagenet_by_default(imagenet, tmp_path, capsys):
    """A weights file with an ImageNet head knows its data set: no --dataset needed."""
    data_dir, labels = imagenet
    weights = _always_predicting(tmp_path, 1001, labels[1] + 1)
    code, out, err = run(capsys, "eval", "--model", str(weights), "--arch", "tiny_test_net", "--num-classes", "1001",
                         "--data-dir", str(data_dir))
    assert code == 0, err
    assert "imagenet/test" in out and "33.33" in out and "(labels scored at logit index + 1)" in out


def test_a_head_of_another_size_is_refused_in_one_line(imagenet, tmp_path, capsys):
    weights = _always_predicting(tmp_path, 10, 0)
    code, out, err = run(capsys, "eval", "--model", str(weights), "--arch", "tiny_test_net", "--num-classes", "10",
                         "--dataset", "imagenet", "--data-dir", str(imagenet[0]))
    assert code == 2 and "the model has 10 logits but imagenet/test has 1000 classes" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_imagenet_without_the_train_archive_prepares_the_test_split_only(tmp_path, capsys):
    from finegrain.data import load_split
    from finegrain.data.tfds_source import split_sizes

    manual = tmp_path / "manual"
    manual.mkdir()
    make_imagenet(manual)
    (manual / "ILSVRC2012_img_train.tar").unlink()
    code, out, err = run(capsys, "fetch", "imagenet", "--data-dir", str(tmp_path / "data"), "--manual-dir", str(manual))
    assert code == 0, err
    assert "test 3" in out and "train" not in out.split("(")[-1]
    assert split_sizes("imagenet", tmp_path / "data") == {"test": 3}
    from finegrain.errors import UserError

    with pytest.raises(UserError, match="prepared without the tfds split 'train'.*ILSVRC2012_img_train.tar"):
        load_split("imagenet", "train", data_dir=tmp_path / "data")


def test_imagenet_without_archives_says_where_to_get_them(tmp_path, capsys):
    code, out, err = run(capsys, "fetch", "imagenet", "--data-dir", str(tmp_path / "data"), "--manual-dir", str(tmp_path))
    assert code == 2 and "Traceback" not in err
    err = err.strip().splitlines()[-1]  # after the "fetching ..." line
    assert "register at https://image-net.org/download-images" in err
    assert "ILSVRC2012_img_val.tar (6.3 GiB, the test (validation) split)" in err


@pytest.mark.parametrize("arch, manifest", [("resnet50", "resnet50"), ("assemble_resnet50", "assemble_resnet50"),
                                            ("assemble_resnet152", "assemble_resnet152")])
def test_a_released_checkpoint_carries_its_eval_preprocessing_and_offset(monkeypatch, arch, manifest):
    shapes = dict(read_manifest(manifest))
    monkeypatch.setattr(refs.tf1, "resolve_checkpoint", lambda path: str(path))
    monkeypatch.setattr(refs.tf1, "read_variable_shapes", lambda prefix: shapes)
    card = refs._card_for_tf1(refs.Path("ckpt"), None)
    assert (card.arch, card.num_classes, card.label_offset) == (arch, 1001, 1)
    assert (card.preprocessing, card.image_size, card.dataset) == (OFFICIAL_EVAL_PREPROCESSING[arch], 224, "imagenet")


def test_a_card_written_before_label_offsets_reads_a_1001_way_head_as_the_originals(tmp_path):
    from finegrain.models.card import read_card

    (tmp_path / "old.json").write_text(json.dumps({"arch": "assemble_resnet50", "num_classes": 1001}))
    (tmp_path / "food.json").write_text(json.dumps({"arch": "assemble_resnet50", "num_classes": 101}))
    assert read_card(tmp_path / "old.json").label_offset == 1
    assert read_card(tmp_path / "food.json").label_offset == 0


def test_eval_takes_test_time_flips(imagenet, tmp_path, capsys):
    data_dir, labels = imagenet
    weights = _always_predicting(tmp_path, 1001, labels[0] + 1)
    args = ["eval", "--model", str(weights), "--arch", "tiny_test_net", "--num-classes", "1001", "--data-dir",
            str(data_dir), "--json"]
    code, out, err = run(capsys, *args, "--tta", "flip")
    assert code == 0, err
    assert json.loads(out)["tta"] == "flip" and json.loads(out)["top1"] == pytest.approx(1 / 3)
    code, out, err = run(capsys, *args, "--tta", "rotate")
    assert code == 2 and "unknown test-time augmentation 'rotate'" in err


def test_predict_names_imagenet_synsets_for_a_released_head(tmp_path, capsys):
    from finegrain.data.synthetic import ensure_synthetic

    weights = _always_predicting(tmp_path, 1001, 1)  # logit 1 = ImageNet class 0 (n01440764)
    image = sorted((ensure_synthetic()[0] / "test").glob("*/*.jpg"))[0]
    code, out, err = run(capsys, "predict", str(image), "--model", str(weights), "--arch", "tiny_test_net",
                         "--num-classes", "1001", "--top", "1", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["top"][0]["class"] == "n01440764"
