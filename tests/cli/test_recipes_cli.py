"""`finegrain recipes` through the console entry point."""

import pytest

from finegrain.cli.app import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_recipes_lists_every_shipped_recipe(capsys):
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    for name in ("food101_assemble", "sop_ir", "synthetic_demo"):
        assert name in out


def test_recipes_show_applies_overrides(capsys):
    code, out, _ = run(capsys, "recipes", "show", "food101_assemble", "--set", "train.epochs=3")
    assert code == 0 and "epochs: 3" in out and "base_lr: 0.01" in out


def test_recipes_show_bad_key_is_one_line(capsys):
    code, out, err = run(capsys, "recipes", "show", "food101_assemble", "--set", "train.nope=1")
    assert code == 2
    assert "unknown recipe key 'train.nope'" in err and "Traceback" not in err + out
