"""kill -9 at several phases of a run, then `--resume`: the weights equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finegrain.train import engine, rundir

from .conftest import tiny_recipe

WORKER = Path(__file__).with_name("kill_worker.py")


def kill_recipe():
    return tiny_recipe(model={"dropblock": True}, train={"epochs": 2, "steps_per_epoch": 4})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return engine.tune(kill_recipe(), tmp_path_factory.mktemp("ref") / "run", checkpoint_every_steps=2)


@pytest.mark.parametrize("phase", ["first-epoch", "mid-epoch", "last-epoch"])
def test_killed_run_resumes_to_identical_weights(reference, phase, tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([sys.executable, str(WORKER), str(run_dir), phase], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert (run_dir / rundir.RECIPE).is_file() and not (run_dir / rundir.WEIGHTS).exists()
    resumed = engine.tune(None, run_dir, resume=True)
    for a, b in zip(reference.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    assert [m["epoch"] for m in rundir.read_metrics(run_dir)] == [1, 2]
    assert rundir.read_metrics(run_dir)[-1]["train_loss"] == pytest.approx(reference.history[-1]["train_loss"])
    assert (run_dir / rundir.EXPORT / "saved_model.pb").is_file()
    assert not [p for p in run_dir.rglob(".*") if "tmp" in p.name]
