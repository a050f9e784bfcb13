"""Bad input, as a hostile user types it, through the console script's entry point: every case exits
with code 2, prints exactly one line on stderr and no traceback, and changes no protected file.

The cases are grouped by command; `{w}` in an argument is the module's scratch directory, which
holds a real trained run, embeddings and a set of damaged files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.cli.conftest import run

os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from finegrain.train import engine
    from tests.train.conftest import tiny_recipe

    w = tmp_path_factory.mktemp("world")
    engine.tune(tiny_recipe(train={"epochs": 1, "steps_per_epoch": 1}), w / "run")
    rng = np.random.default_rng(0)
    np.save(w / "x.npy", rng.standard_normal((20, 4)).astype(np.float32))
    np.save(w / "y.npy", np.repeat(np.arange(5), 4))
    np.save(w / "y_float.npy", np.repeat(np.arange(5), 4).astype(np.float32))
    np.save(w / "y_minus1.npy", -np.ones(20, np.int64))
    np.save(w / "y_single.npy", np.arange(20))
    np.save(w / "y_2d.npy", np.zeros((20, 2), np.int64))
    np.save(w / "x_complex.npy", rng.standard_normal((20, 4)) + 1j)
    np.save(w / "x_3d.npy", np.zeros((20, 4, 2), np.float32))
    np.save(w / "x_text.npy", np.array(["a"] * 20))
    with open(w / "x_pickled.npy", "wb") as f:
        np.lib.format.write_array(f, np.array([{"a": 1}] * 20, dtype=object), allow_pickle=True)
    (w / "x_zero.npy").write_bytes(b"")
    (w / "x_textfile.npy").write_text("1 2 3\n4 5 6\n")
    (w / "x_pickle_raw.npy").write_bytes(pickle.dumps([1, 2, 3]))
    (w / "afile").write_text("not a directory")
    (w / "empty_dir").mkdir()
    (w / "recipe_dir.yaml").mkdir()
    (w / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (w / "empty.yaml").write_text("")
    (w / "list.yaml").write_text("- 1\n- 2\n")
    (w / "dup.yaml").write_text("train:\n  epochs: 1\n  epochs: 2\n")
    (w / "bomb.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                 "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
    (w / "bad.yaml").write_text("train: [epochs: 1\n")
    (w / "section.yaml").write_text("train: 3\n")
    (w / "photo.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    # Damaged copies of the run.
    for name, damage in (("state_empty", ""), ("state_trunc", '{"last": {"na'), ("state_random", "\x00\x13\x37"),
                         ("state_braces", "{}"), ("state_list", "[1, 2]"),
                         ("state_ghost", json.dumps({"last": {"name": "step-9", "epoch": 1, "step": 9},
                                                     "best": [], "history": []}))):
        shutil.copytree(w / "run", w / name)
        (w / name / "checkpoints" / "state.json").write_text(damage)
    shutil.copytree(w / "run", w / "card_damaged")
    (w / "card_damaged" / "model.json").write_text("{not json")
    shutil.copytree(w / "run", w / "card_no_arch")
    (w / "card_no_arch" / "model.json").write_text('{"num_classes": 3}')
    shutil.copytree(w / "run", w / "weights_truncated")
    data = (w / "run" / "model.weights.h5").read_bytes()
    (w / "weights_truncated" / "model.weights.h5").write_bytes(data[: len(data) // 3])
    shutil.copytree(w / "run", w / "ckpt_truncated")
    ckpt = w / "ckpt_truncated" / "checkpoints"
    for f in ckpt.rglob("*.data-*"):
        f.write_bytes(f.read_bytes()[:100])
    (w / "ckpt_truncated" / "model.weights.h5").unlink()
    shutil.rmtree(w / "ckpt_truncated" / "export")
    (w / "tf1_bad").mkdir()
    (w / "tf1_bad" / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1"\n')
    (w / "tf1_bad" / "model.ckpt-1.index").write_bytes(b"garbage")
    (w / "tf1_bad" / "model.ckpt-1.data-00000-of-00001").write_bytes(b"garbage")
    return w


def recipe_override_cases() -> list[tuple[list[str], str]]:
    """`--set` values that must be refused (command, expected words)."""
    bad = [
        ("train.epochs=0", "at least 1"), ("train.epochs=-3", "at least 1"), ("train.epochs=zero", "train.epochs"),
        ("train.epochs=1.5", "must be int"), ("train.batch_size=0", "at least 1"), ("train.batch_size=true", "int"),
        ("train.base_lr=-0.1", "greater than 0"), ("train.base_lr=0", "greater than 0"),
        ("train.base_lr=.inf", "finite"), ("train.base_lr=.nan", "finite"), ("train.base_lr=fast", "float"),
        ("train.warmup_epochs=-1", "at least 0"), ("train.warmup_epochs=.inf", "finite"),
        ("train.weight_decay=-0.001", "at least 0"), ("train.momentum=5", "[0, 1)"), ("train.momentum=-0.1", "[0, 1)"),
        ("train.seed=-1", "at least 0"), ("train.loss_scale=0", "greater than 0"), ("train.loss_scale=-30", "greater than 0"),
        ("train.loss_margin=-0.5", "at least 0"), ("train.label_smoothing=1", "[0, 1)"),
        ("train.label_smoothing=-0.1", "[0, 1)"), ("train.bn_momentum=1", "[0, 1)"),
        ("train.dropblock_keep_prob_start=0", "(0, 1]"), ("train.dropblock_keep_prob_end=1.5", "(0, 1]"),
        ("train.steps_per_epoch=0", "at least 1"), ("train.lr_schedule=step", "allowed values"),
        ("train.loss=triplet", "allowed values"), ("train.loss=arcface", "model.head=cosine"),
        ("model.head=cosine", "cosine_softmax or arcface"),
        ("model.pooling=max", "allowed values"), ("model.embedding_size=-1", "embedding_size"),
        ("model.embedding_size=100000000", "embedding_size"), ("model.dropblock=maybe", "bool"),
        ("data.image_size=0", "at least 1"), ("data.image_size=100000", "at most"),
        ("data.preprocessing=inception", "allowed values"), ("data.autoaugment=best", "allowed values"),
        ("data.mixup_type=3", "allowed values"), ("data.mixup_alpha=0", "greater than 0"),
        ("data.mixup_alpha=.inf", "finite"), ("data.train_split=validation", "allowed values"),
        ("eval.every_epochs=0", "at least 1"), ("eval.keep_best=0", "at least 1"), ("eval.recall_ks=[]", "recall_ks"),
        ("eval.recall_ks=[0, 1]", "recall_ks"), ("eval.metric=top5", "no longer exists"),
        ("runtime.precision=fp8", "allowed values"), ("runtime.strategy=tpu", "allowed values"),
        ("task=detection", "allowed values"), ("name=../escape", "must not hold"), ("name=.hidden", "must not hold"),
        ("name=", "must not hold"), ("train.nope=1", "unknown recipe key 'train.nope'"), ("nope.x=1", "unknown recipe key"),
        ("train=3", "must be a mapping"), ("train.epochs.x=1", "not a section"), ("trainepochs", "key=value"),
        ("data.source=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]", "must be str"),
        ("train.epochs=&a [1]", "train.epochs"),
    ]
    cases = [(["recipes", "show", "synthetic_demo", "--set", a], m) for a, m in bad]
    # The same through `tune` (refused before TensorFlow starts, so nothing is created).
    cases += [(["tune", "--recipe", "synthetic_demo", "--set", a, "--run-dir", "{w}/never"], m) for a, m in bad[::4]]
    return cases


CASES: list[tuple[list[str], str]] = [
    # recipes and recipe files
    (["recipes", "show", "no_such_recipe"], "unknown recipe"),
    (["recipes", "show", "{w}/missing.yaml"], "not found"),
    (["recipes", "show", "{w}/recipe_dir.yaml"], "is a directory"),
    (["recipes", "show", "{w}/binary.yaml"], "not UTF-8"),
    (["recipes", "show", "{w}/empty.yaml"], "is empty"),
    (["recipes", "show", "{w}/list.yaml"], "mapping"),
    (["recipes", "show", "{w}/dup.yaml"], "appears twice"),
    (["recipes", "show", "{w}/bomb.yaml"], "aliases"),
    (["recipes", "show", "{w}/bad.yaml"], "not valid YAML"),
    (["recipes", "show", "{w}/section.yaml"], "must be a mapping"),
    (["recipes", "bogus"], "No such command"),
    *recipe_override_cases(),
    # tune
    (["tune"], "give --recipe"),
    (["tune", "--recipe", "synthetic_demo", "--strategy", "tpu"], "--strategy must be one of"),
    (["tune", "--recipe", "synthetic_demo", "--set", "model.arch=resnet51", "--run-dir", "{w}/never"], "unknown model"),
    (["tune", "--recipe", "synthetic_demo", "--precision", "fp8"], "--precision must be one of"),
    (["tune", "--recipe", "synthetic_demo", "--run-dir", "{w}/run"], "--resume"),
    (["tune", "--recipe", "synthetic_demo", "--run-dir", "{w}/empty_dir/../afile"], "is a file"),
    (["tune", "--recipe", "synthetic_demo", "--run-dir", "{w}/afile/run"], "is a file"),
    (["tune", "--recipe", "synthetic_demo", "--run-dir", ""], "empty"),
    (["tune", "--recipe", "synthetic_demo", "--run-dir", "{w}"], "choose a new --run-dir"),
    (["tune", "--resume", "{w}/missing"], "not a finegrain run directory"),
    (["tune", "--resume", "{w}/afile"], "not a finegrain run directory"),
    (["tune", "--resume", "{w}/empty_dir"], "not a finegrain run directory"),
    (["tune", "--resume", "{w}/run", "--recipe", "synthetic_demo"], "drop --recipe"),
    (["tune", "--resume", "{w}/run", "--set", "train.epochs=3"], "drop --recipe"),
    (["tune", "--resume", "{w}/state_empty"], "damaged"),
    (["tune", "--resume", "{w}/state_trunc"], "damaged"),
    (["tune", "--resume", "{w}/state_random"], "damaged"),
    (["tune", "--resume", "{w}/state_braces"], "damaged"),
    (["tune", "--resume", "{w}/state_list"], "damaged"),
    (["tune", "--resume", "{w}/state_ghost"], "damaged"),
    (["tune", "--resume", "{w}/ckpt_truncated"], "damaged"),
    (["tune", "--recipe", "{w}/binary.yaml"], "not UTF-8"),
    (["tune", "--recipe", "synthetic_demo", "--bogus"], "No such option"),
    (["tune", "--recipe"], "requires an argument"),
    # retrieval-eval on arrays
    (["retrieval-eval", "--embeddings", "{w}/x.npy"], "go together"),
    (["retrieval-eval", "--labels", "{w}/y.npy"], "go together"),
    (["retrieval-eval"], "give --model"),
    (["retrieval-eval", "--embeddings", "{w}/missing.npy", "--labels", "{w}/y.npy"], "does not exist"),
    (["retrieval-eval", "--embeddings", "{w}/x_zero.npy", "--labels", "{w}/y.npy"], "empty or truncated"),
    (["retrieval-eval", "--embeddings", "{w}/x_textfile.npy", "--labels", "{w}/y.npy"], "not a .npy array"),
    (["retrieval-eval", "--embeddings", "{w}/x_pickled.npy", "--labels", "{w}/y.npy"], "pickled"),
    (["retrieval-eval", "--embeddings", "{w}/x_pickle_raw.npy", "--labels", "{w}/y.npy"], "not a .npy array"),
    (["retrieval-eval", "--embeddings", "{w}/x_complex.npy", "--labels", "{w}/y.npy"], "real-valued"),
    (["retrieval-eval", "--embeddings", "{w}/x_text.npy", "--labels", "{w}/y.npy"], "real-valued"),
    (["retrieval-eval", "--embeddings", "{w}/x_3d.npy", "--labels", "{w}/y.npy"], "[N, D]"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y_float.npy"], "integer"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y_2d.npy"], "1-D"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y_minus1.npy"], "no query can be scored"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y_single.npy"], "no query can be scored"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/x.npy"], "integer"),
    (["retrieval-eval", "--embeddings", "{w}/afile", "--labels", "{w}/y.npy"], "not a .npy array"),
    (["retrieval-eval", "--embeddings", "{w}/empty_dir", "--labels", "{w}/y.npy"], "does not exist"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--k", "0"], "positive"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--k", "1,x"], "comma-separated"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--k", "-1"], "positive"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--k", "100"], "larger than the gallery"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--metric", "dot"], "unknown metric"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--plot", "{w}/p.png"], "do not have"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--model", "{w}/run"], "not both"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--batch-size", "0"], "--batch-size"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--save-embeddings", "{w}/afile/e.npy"],
     "cannot create its folder"),
    (["retrieval-eval", "--embeddings", "{w}/x.npy", "--labels", "{w}/y.npy", "--save-embeddings", "{w}/empty_dir"],
     "is a directory"),
    # models that are not there, or damaged
    (["retrieval-eval", "--model", "{w}/missing"], "does not exist"),
    (["retrieval-eval", "--model", "{w}/empty_dir"], "empty directory that holds no model"),
    (["retrieval-eval", "--model", "{w}/afile"], "a file that holds no model"),
    (["retrieval-eval", "--model", "{w}/run", "--dataset", "nope"], "unknown data set"),
    (["retrieval-eval", "--model", "{w}/run", "--dataset", "synthetic", "--data", "{w}"], "not both"),
    (["retrieval-eval", "--model", "{w}/run", "--data", "{w}/afile"], "not a folder"),
    (["retrieval-eval", "--model", "{w}/run", "--split", "validation"], "unknown split"),
    (["retrieval-eval", "--model", "{w}/run", "--image-size", "0"], "--image-size"),
    (["retrieval-eval", "--model", "{w}/run", "--image-size", "-5"], "--image-size"),
    (["retrieval-eval", "--model", "{w}/run", "--preprocessing", "inception"], "preprocessing"),
    (["retrieval-eval", "--model", "{w}/card_damaged"], "cannot read the model card"),
    (["retrieval-eval", "--model", "{w}/card_no_arch"], "damaged"),
    (["retrieval-eval", "--model", "official"], "official:ARCH"),
    (["retrieval-eval", "--model", "official:resnet51"], "unknown model"),
    (["retrieval-eval", "--model", "{w}/tf1_bad"], "TF1 checkpoint"),
    (["eval", "--model", "{w}/missing"], "does not exist"),
    (["eval", "--model", "{w}/empty_dir"], "holds no model"),
    (["eval", "--model", "{w}/run", "--confusions", "-1"], "--confusions"),
    (["eval", "--model", "{w}/run", "--image-size", "0"], "--image-size"),
    (["eval", "--model", "{w}/run", "--batch-size", "-1"], "--batch-size"),
    (["eval", "--model", "{w}/run", "--split", "everything"], "unknown split"),
    (["eval", "--model", "{w}/run", "--dataset", "cub9000"], "unknown data set"),
    (["eval", "--model", "{w}/weights_truncated"], "does not fit"),
    (["eval", "--model", "{w}/ckpt_truncated"], "cannot be read"),
    (["eval", "--model", "{w}/state_random/checkpoints"], "holds no model"),
    (["eval", "--model", "{w}/run/export/variables"], "holds no model"),
    (["eval", "--model", "{w}/afile.weights.h5", "--arch", "resnet50"], "does not exist"),
    (["eval", "--model", "{w}/tf1_bad", "--arch", "resnet50"], "TF1 checkpoint"),
    (["eval", "--model", "{w}/run", "--dataset", "synthetic", "--data", "{w}"], "not both"),
    (["eval"], "Missing option"),
    (["eval", "--model"], "requires an argument"),
    (["eval", "--model", "{w}/run", "--batch-size", "many"], "Invalid value"),
    # predict
    (["predict", "{w}/photo.jpg", "--model", "{w}/run", "--top", "0"], "--top"),
    (["predict", "{w}/photo.jpg", "--model", "{w}/run", "--top", "-1"], "--top"),
    (["predict", "{w}/photo.jpg", "--model", "{w}/missing"], "does not exist"),
    (["predict", "{w}/photo.jpg", "--model", "{w}/empty_dir"], "holds no model"),
    (["predict", "{w}/photo.jpg", "--model", "{w}/card_damaged"], "model card"),
    (["predict", "{w}/photo.jpg"], "Missing option"),
    (["predict", "--model", "{w}/run"], "Missing argument"),
    # weights import
    (["weights", "import", "{w}/tf1_bad", "--out", "{w}/out.h5"], ".weights.h5"),
    (["weights", "import", "{w}/tf1_bad", "--out", "{w}/empty_dir"], ".weights.h5"),
    (["weights", "import", "{w}/tf1_bad", "--out", "{w}/afile/x.weights.h5"], "TF1 checkpoint"),
    (["weights", "import", "{w}/missing", "--out", "{w}/x.weights.h5"], "no TF1 checkpoint"),
    (["weights", "import", "{w}/empty_dir", "--out", "{w}/x.weights.h5"], "no `checkpoint` file"),
    (["weights", "import", "{w}/tf1_bad", "--arch", "resnet51", "--out", "{w}/x.weights.h5"], "unknown model"),
    (["weights", "import", "{w}/tf1_bad", "--out", "{w}/run/model.weights.h5"], "exists"),
    (["weights", "import", "{w}/tf1_bad", "--out", "{w}/x.weights.h5"], "cannot read TF1 checkpoint"),
    (["weights", "import", "{w}/tf1_bad"], "Missing option"),
    # data
    (["fetch", "nope"], "unknown data set"),
    (["fetch", "synthetic", "--data-dir", "{w}/afile"], "afile"),
    (["fetch", "synthetic", "--data-dir", "{w}/afile/sub"], "afile"),
    (["datasets", "--data-dir", "{w}/afile"], "afile"),
    # the app itself
    (["nope"], "No such command"),
    (["--bogus"], "No such option"),
]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a)[:80] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(world, argv, message, capsys):
    before = snapshot(world)
    code, out, err = run(capsys, *[a.replace("{w}", str(world)) for a in argv])
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and len(lines) == 1, err
    assert message in err, err
    assert snapshot(world) == before  # nothing protected was created, changed or removed


def test_there_are_enough_cases():
    assert len(CASES) >= 150
