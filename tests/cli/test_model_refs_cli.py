"""One model reference works in every command: `tune --set model.init=REF`, `eval --model REF`,
`retrieval-eval --model REF` and `predict --model REF`, for each kind of reference (a run directory,
its SavedModel export, a .weights.h5 file with its card, a TF1 checkpoint, official:ARCH).

In-process through the console script's function (`finegrain.cli.app.main`) on the tiny test
architecture; then through the installed `finegrain` script itself on a ResNet-50 TF1 checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.cli.conftest import run
from tests.models.conftest import fake_values, read_manifest, write_tf1_checkpoint

os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))
KINDS = ("run", "saved_model", "weights_file", "tf1_checkpoint", "official")


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """kind -> (reference, extra arguments the commands need for it)."""
    from finegrain.models.tf1 import tf1_variable_map
    from finegrain.train import engine
    from tests.train.conftest import tiny_recipe

    root = tmp_path_factory.mktemp("refs")
    result = engine.tune(tiny_recipe(train={"epochs": 1, "steps_per_epoch": 2}), root / "run")
    run_dir = root / "run"
    weights = root / "files" / "tiny.weights.h5"
    weights.parent.mkdir()
    shutil.copy(run_dir / "model.weights.h5", weights)
    shutil.copy(run_dir / "model.json", root / "files" / "tiny.json")
    values = {name: np.asarray(v.value) for name, v in tf1_variable_map(result.model).items()}
    write_tf1_checkpoint(root / "tf1", values)
    official = root / "weights_dir"
    official.mkdir()
    shutil.copy(weights, official / "tiny_test_net.weights.h5")
    shutil.copy(root / "files" / "tiny.json", official / "tiny_test_net.json")
    return {
        "run": (str(run_dir), []),
        "saved_model": (str(run_dir / "export"), []),
        "weights_file": (str(weights), []),
        "tf1_checkpoint": (str(root / "tf1"), ["--arch", "tiny_test_net"]),
        "official": ("official:tiny_test_net", []),
        "_weights_dir": (str(official), []),
    }


@pytest.fixture
def ref(request, references, monkeypatch):
    monkeypatch.setenv("FINEGRAIN_WEIGHTS_DIR", references["_weights_dir"][0])
    return references[request.param]


@pytest.mark.parametrize("ref", KINDS, indirect=True)
def test_eval_retrieval_eval_and_predict_take_the_reference(ref, capsys):
    reference, extra = ref
    code, out, err = run(capsys, "eval", "--model", reference, *extra, "--dataset", "synthetic", "--image-size", "32",
                         "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["num_examples"] == 200 and 0.0 <= report["top1"] <= report["top5"] <= 1.0
    code, out, err = run(capsys, "retrieval-eval", "--model", reference, *extra, "--dataset", "synthetic",
                         "--image-size", "32", "--json")
    assert code == 0, err
    assert json.loads(out)["num_gallery"] == 700
    from finegrain.data.synthetic import ensure_synthetic

    image = sorted((ensure_synthetic()[0] / "test").glob("*/*.jpg"))[0]
    code, out, err = run(capsys, "predict", str(image), "--model", reference, *extra, "--top", "3", "--json")
    assert code == 0, err
    top = json.loads(out)[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[2]["probability"]


@pytest.mark.parametrize("ref", KINDS, indirect=True)
def test_tune_starts_from_the_reference(ref, tmp_path, capsys):
    reference, _ = ref  # no --arch here: the architecture is the recipe's model.arch
    code, _, err = run(capsys, "tune", "--recipe", str(tiny_recipe_file(tmp_path)), "--set", f"model.init={reference}",
                       "--run-dir", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    assert "from scratch" not in err
    assert (tmp_path / "run" / "model.json").is_file()


def tiny_recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text("model: {arch: tiny_test_net}\n"
                    "data: {source: synthetic, image_size: 32}\n"
                    "train: {epochs: 1, batch_size: 8, steps_per_epoch: 1, warmup_epochs: 0}\n")
    return path


def finegrain_script() -> str:
    script = Path(sys.executable).with_name("finegrain")
    if not script.is_file():
        pytest.skip("the finegrain console script is not installed beside this Python")
    return str(script)


@pytest.mark.slow
def test_installed_script_takes_a_tf1_checkpoint_and_its_imported_weights_file(tmp_path):
    """The real console script on ResNet-50: the architecture is read off the checkpoint, and
    `weights import` writes a card so that the weights file needs no --arch either."""
    values = fake_values(read_manifest("resnet50"))
    write_tf1_checkpoint(tmp_path / "ckpt", values)
    from finegrain.data.synthetic import ensure_synthetic

    image = str(sorted((ensure_synthetic()[0] / "test").glob("*/*.jpg"))[0])
    env = {**os.environ, "TERM": "xterm-256color"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([finegrain_script(), *args], capture_output=True, text=True, env=env, timeout=300)

    done = cli("weights", "import", str(tmp_path / "ckpt"), "--out", str(tmp_path / "r50.weights.h5"))
    assert done.returncode == 0, done.stderr
    assert "267 variables" in done.stdout and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert json.loads((tmp_path / "r50.json").read_text())["arch"] == "resnet50"
    # The checkpoint itself as --model is covered in-process (test_eval_retrieval_eval_and_predict_take_the_reference).
    done = cli("predict", image, "--model", str(tmp_path / "r50.weights.h5"), "--top", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [len(r["top"]) for r in json.loads(done.stdout)] == [2]
    assert "Traceback" not in done.stderr


def test_installed_script_takes_a_saved_model_in_every_evaluation_command(references, tmp_path):
    """A SavedModel export needs no architecture code: the real console script evaluates it as is."""
    from finegrain.data.synthetic import ensure_synthetic

    export = references["saved_model"][0]
    image = str(sorted((ensure_synthetic()[0] / "test").glob("*/*.jpg"))[0])
    env = {**os.environ, "TERM": "xterm-256color"}
    # Its logits and its embedding signature; `eval` on it is covered in-process.
    for args in (["retrieval-eval", "--model", export, "--dataset", "synthetic", "--json"],
                 ["predict", image, "--model", export, "--json"]):
        done = subprocess.run([finegrain_script(), *args], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) and "Traceback" not in done.stderr
