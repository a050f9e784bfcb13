"""`finegrain models` and `finegrain weights import`, through the console script and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finegrain.cli.app import main
from tests.cli.conftest import run
from tests.models.conftest import fake_values, read_manifest, training_extras, write_tf1_checkpoint

SCRIPT = Path(sys.executable).parent / "finegrain"


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
    values = fake_values(read_manifest("resnet50"), seed=11)
    prefix = write_tf1_checkpoint(tmp_path_factory.mktemp("ckpt") / "r50", values, extra=training_extras(values))
    return prefix, values


def _main_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    return message


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment")
def test_models_lists_the_family_with_spec_counts_never_cut():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "40", "TERM": "xterm-256color"}
    result = subprocess.run([str(SCRIPT), "models"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for name, counts in (("resnet50", "25,559,081"), ("assemble_resnet50", "41,848,489"),
                         ("assemble_resnet152", "117,006,249"), ("assemble_resnet50_ir", "")):
        assert name in result.stdout
        assert counts in result.stdout


def test_models_starts_neither_keras_nor_tensorflow():
    # The listing reads the Keras-free architecture table; importing TensorFlow would cost seconds.
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "finegrain", "models"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "finegrain.models.architectures" in imported and "rich" in imported  # the -X importtime lines are read
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "jax", "torch")}
    assert "assemble_resnet152" in result.stdout and "117,006,249" in result.stdout


def test_weights_import_writes_every_value_and_overwrites_only_with_force(r50_checkpoint, tmp_path, capsys):
    # In-process; tests/cli/test_model_refs_cli.py runs `weights import` through the console script.
    prefix, values = r50_checkpoint
    out = tmp_path / "r50.weights.h5"
    code, stdout, stderr = run(capsys, "weights", "import", str(prefix.parent), "--arch", "resnet50", "--out", str(out))
    assert code == 0, stderr
    assert "267 variables" in stdout and out.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind

    from finegrain.models import create_model
    from finegrain.models.tf1 import tf1_variable_map

    model = create_model("resnet50", weights=out)
    targets = tf1_variable_map(model)
    for name in ("resnet_model/conv2d/kernel", "resnet_model/batch_normalization_52/moving_variance",
                 "resnet_model/dense/bias"):
        np.testing.assert_array_equal(targets[name].numpy(), values[name])

    assert "exists; pass --force" in _main_error(capsys, "weights", "import", str(prefix), "--arch", "resnet50",
                                                 "--out", str(out))
    before = out.stat().st_mtime_ns
    try:
        main(["weights", "import", str(prefix), "--arch", "resnet50", "--out", str(out), "--force"])
    except SystemExit as e:  # click may exit 0 after a successful command
        assert e.code in (0, None)
    assert out.stat().st_mtime_ns != before and "267 variables" in capsys.readouterr().out


def test_weights_import_errors_are_one_line(r50_checkpoint, tmp_path, capsys):
    prefix, _ = r50_checkpoint
    out = str(tmp_path / "x.weights.h5")
    assert "no TF1 checkpoint at" in _main_error(capsys, "weights", "import", str(tmp_path / "nope"),
                                                  "--arch", "resnet50", "--out", out)
    assert "unknown model 'resnet5'" in _main_error(capsys, "weights", "import", str(prefix),
                                                    "--arch", "resnet5", "--out", out)
    assert "looks like a 'resnet50' checkpoint" in _main_error(capsys, "weights", "import", str(prefix),
                                                               "--arch", "assemble_resnet50", "--out", out)
    assert ".weights.h5" in _main_error(capsys, "weights", "import", str(prefix), "--arch", "resnet50",
                                        "--out", str(tmp_path / "x.h5"))
    broken = tmp_path / "broken"
    broken_prefix = write_tf1_checkpoint(broken, fake_values(read_manifest("resnet50"), seed=12))
    data = broken / f"{broken_prefix.name}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    assert "truncated or corrupt" in _main_error(capsys, "weights", "import", str(broken), "--arch", "resnet50",
                                                 "--out", out)
    assert not Path(out).exists()


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this environment")
def test_a_user_error_is_the_only_line_on_stderr_even_with_tensorflow_loaded(tmp_path):
    # As a user runs it (no TF_CPP_MIN_LOG_LEVEL set): TensorFlow's native start-up lines (abseil INFO,
    # "failed call to cuInit" without a GPU) must not bury the one-line error.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([str(SCRIPT), "weights", "import", str(tmp_path / "nope"), "--arch", "resnet50",
                             "--out", str(tmp_path / "x.weights.h5")],
                            capture_output=True, text=True, env={**env, "COLUMNS": "200"}, timeout=300)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no TF1 checkpoint at"), result.stderr
