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
