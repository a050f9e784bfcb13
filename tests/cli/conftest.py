"""Helpers for the CLI tests."""

from __future__ import annotations

from finegrain.cli.app import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """The console script's function in-process: (exit code, stdout, stderr)."""
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
