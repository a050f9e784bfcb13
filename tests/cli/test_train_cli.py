"""`finegrain tune`: argument checks and user errors exit 2 with one line and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finegrain.cli.app import main


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return int(exc.value.code or 0), captured.out + captured.err


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give --recipe"),
        (["--recipe", "synthetic_demo", "--strategy", "tpu"], "--strategy must be one of"),
        (["--recipe", "synthetic_demo", "--precision", "fp8"], "--precision must be one of"),
        (["--resume", "somewhere", "--recipe", "synthetic_demo"], "drop --recipe"),
        (["--recipe", "no_such_recipe"], "unknown recipe"),
        (["--recipe", "synthetic_demo", "--set", "train.epochs=zero"], "train.epochs"),
    ],
)
def test_bad_arguments_are_user_errors(args, message, capsys):
    code, output = run_cli(["tune", *args], capsys)
    assert code == 2
    assert message in output
    assert "Traceback" not in output


def test_existing_run_dir_is_refused_and_resume_needs_a_run(tmp_path, capsys):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "something").write_text("x")
    code, output = run_cli(["tune", "--recipe", "synthetic_demo", "--run-dir", str(existing), "--quiet"], capsys)
    assert code == 2 and "already exists" in output and "choose a new --run-dir" in output  # not a run: no --resume
    (existing / "recipe.yaml").write_text("name: x\n")
    code, output = run_cli(["tune", "--recipe", "synthetic_demo", "--run-dir", str(existing), "--quiet"], capsys)
    assert code == 2 and "already exists" in output and f"--resume {existing}" in output
    code, output = run_cli(["tune", "--recipe", "synthetic_demo", "--run-dir", str(existing / "something" / "x")], capsys)
    assert code == 2 and "is a file" in output
    code, output = run_cli(["tune", "--resume", str(tmp_path / "missing")], capsys)
    assert code == 2 and "not a finegrain run directory" in output


def test_a_run_that_fails_before_training_leaves_no_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad_data = ["--set", f"data.source={tmp_path / 'missing'}", "--quiet"]
    for run_dir in ([], ["--run-dir", "mine"]):  # the default name, then an explicit one
        code, output = run_cli(["tune", "--recipe", "synthetic_demo", *run_dir, *bad_data], capsys)
        assert code == 2 and "does not exist" in output
    assert not (tmp_path / "mine").exists() and not any((tmp_path / "runs").iterdir())


def test_tune_help_does_not_import_tensorflow():
    code = ("import sys; from finegrain.cli.app import app; import finegrain.cli.train; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
