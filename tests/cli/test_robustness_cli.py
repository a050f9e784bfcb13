"""`finegrain robustness`: the installed console script on the synthetic set (two corruptions, two severities,
two models side by side, --json and --plot), and bad input refused in one line before any work."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cli.conftest import run
from tests.cli.test_model_refs_cli import finegrain_script

os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from finegrain.train import engine
    from tests.train.conftest import tiny_recipe

    run_dir = tmp_path_factory.mktemp("robustness") / "run"
    engine.tune(tiny_recipe(train={"epochs": 1, "steps_per_epoch": 2}), run_dir)
    return run_dir


@pytest.mark.slow
def test_installed_script_reports_two_models_as_json_and_plots(tiny_run, tmp_path):
    export = str(tiny_run / "export")  # a SavedModel: the script needs no test architecture
    plot = tmp_path / "plots" / "robustness.png"
    args = ["robustness", "--model", export, "--model", export, "--dataset", "synthetic", "--corruptions",
            "gaussian_noise,glass_blur", "--severities", "1,2", "--batch-size", "32", "--json", "--plot", str(plot)]
    done = subprocess.run([finegrain_script(), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TERM": "xterm-256color"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(done.stdout)
    assert report["normalized"] is False and report["corruptions"] == ["gaussian_noise", "glass_blur"]
    assert report["severities"] == [1, 2] and len(report["models"]) == 2
    first, second = report["models"]
    assert first["corruptions"] == second["corruptions"]  # the same model on the same corrupted images
    assert 0 <= first["clean_error"] <= 1 and first["complete"] is False
    for name in ("gaussian_noise", "glass_blur"):
        score = first["corruptions"][name]
        assert set(score["errors"]) == {"1", "2"} and all(0 <= e <= 1 for e in score["errors"].values())
        assert score["mean_error"] == pytest.approx(sum(score["errors"].values()) / 2)
        assert score["ce"] is None and score["relative_ce"] is None  # not ImageNet: no AlexNet reference
    means = [first["corruptions"][c]["mean_error"] for c in ("gaussian_noise", "glass_blur")]
    assert first["unnormalized_mce"]["standard"] == pytest.approx(sum(means) / 2)
    assert first["mce"]["standard"] is None and first["unnormalized_mce"]["extra"] is None
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_says_the_figures_are_unnormalised(tiny_run, capsys):
    code, out, err = run(capsys, "robustness", "--model", str(tiny_run), "--corruptions", "contrast",
                         "--severities", "5", "--limit", "8")
    assert code == 0, err
    assert "contrast" in out and "un-normalised mCE" in out and "no AlexNet reference" in out
    assert "(first 8 images)" in out


@pytest.mark.parametrize("args, message", [
    (["--dataset", "synthetic", "--data", "."], "give one source"),
    (["--severities", "0,2"], "--severities must be integers from 1 to 5"),
    (["--corruptions", "fog,haze"], "unknown corruption(s) haze"),
    (["--corruptions", "frost"], "frost needs Hendrycks' frost pictures"),
    (["--plot", "out.jpg"], "give a .png file name"),
    (["--imagenet-c", "/nonexistent/imagenet-c"], "is not a folder"),
    (["--limit", "0"], "--limit must be a positive integer"),
])
def test_bad_input_is_one_line_before_any_work(tiny_run, capsys, args, message):
    code, out, err = run(capsys, "robustness", "--model", str(tiny_run), *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_imagenet_c_folder_with_a_1001_way_model_gives_alexnet_normalised_figures(tmp_path, capsys):
    """A model with a background logit (label offset 1) on an ImageNet-C folder: CE and mCE are given;
    without a prepared ImageNet there is no clean error, so no relative mCE."""
    import numpy as np
    from PIL import Image

    from finegrain.models import ModelCard, create_model

    model = create_model("tiny_test_net", num_classes=1001)
    model.save_weights(tmp_path / "tiny.weights.h5")
    card = ModelCard(arch="tiny_test_net", num_classes=1001, label_offset=1, image_size=16, preprocessing="imagenet")
    (tmp_path / "tiny.json").write_text(json.dumps(card.to_dict()))
    for corruption in ("fog", "saturate"):
        for severity in (2, 5):
            for synset in ("n01440764", "n15075141"):
                folder = tmp_path / "imagenet-c" / corruption / str(severity) / synset
                folder.mkdir(parents=True)
                Image.fromarray(np.full((16, 16, 3), 40 * severity, np.uint8)).save(folder / "a.JPEG")
    code, out, err = run(capsys, "robustness", "--model", str(tmp_path / "tiny.weights.h5"), "--imagenet-c",
                         str(tmp_path / "imagenet-c"), "--corruptions", "fog,saturate", "--severities", "2,5",
                         "--data-dir", str(tmp_path / "data"), "--json")
    assert code == 0, err
    [result] = json.loads(out)["models"]
    assert result["normalized"] is True and result["clean_error"] is None
    fog = result["corruptions"]["fog"]
    assert fog["ce"] == pytest.approx(fog["mean_error"] / 0.8193) and fog["relative_ce"] is None
    assert result["mce"]["standard"] == pytest.approx(fog["ce"])  # saturate is an extra corruption
    assert result["mce"]["extra"] == pytest.approx(result["corruptions"]["saturate"]["mean_error"] / 0.6583)
    assert result["relative_mce"]["standard"] is None
    code, out, err = run(capsys, "robustness", "--model", str(tmp_path / "tiny.weights.h5"), "--imagenet-c",
                         str(tmp_path / "imagenet-c"), "--corruptions", "fog", "--severities", "3")
    assert code == 2 and "lacks fog 3 (it has: fog 2,5; saturate 2,5)" in err
