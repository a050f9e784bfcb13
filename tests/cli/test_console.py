"""The CLI's consoles take colour and terminal-ness from the command's own run, not from import time."""

from __future__ import annotations

import pytest

from finegrain.cli import console
from tests.cli.conftest import run

ESCAPE = "\x1b["


@pytest.fixture
def no_colour_settings(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_command_prints_for_the_streams_it_runs_with_not_those_at_import(capsys, no_colour_settings):
    no_colour_settings.setenv("FORCE_COLOR", "1")  # as when the module was first imported in a terminal
    console.open_consoles()
    no_colour_settings.delenv("FORCE_COLOR")  # the command itself runs captured: plain text
    code, out, _ = run(capsys, "recipes", "show", "synthetic_demo")
    assert code == 0 and "epochs:" in out and ESCAPE not in out
    code, _, err = run(capsys, "recipes", "show", "no_such_recipe")
    assert code == 2 and err.startswith("error:") and ESCAPE not in err


def test_colour_follows_the_environment_of_the_run(capsys, no_colour_settings):
    no_colour_settings.setenv("FORCE_COLOR", "1")
    code, out, _ = run(capsys, "recipes", "show", "synthetic_demo")
    assert code == 0 and ESCAPE in out
    code, _, err = run(capsys, "recipes", "show", "no_such_recipe")
    assert code == 2 and ESCAPE in err
