"""Shared rich consoles (results to stdout, progress and messages to stderr), and a quiet TensorFlow start."""

from __future__ import annotations

import os
import sys
import tempfile

from rich.console import Console

out: Console
err: Console


def open_consoles() -> None:
    """(Re)make `out` and `err` for the streams and environment as they are now.

    rich settles colour and terminal-ness when a Console is made, while it writes to whatever
    sys.stdout / sys.stderr are at print time. `main` calls this first, so a command run in-process
    (tests, notebooks, a caller that redirected the streams) never prints with the colours of the
    terminal that was there at import. Use them as `console.out` or import them inside a function.
    """
    global out, err
    out = Console()
    err = Console(stderr=True)


open_consoles()


def start_tensorflow() -> None:
    """Import TensorFlow and probe its devices without its native start-up chatter on the terminal.

    TensorFlow's C++ code logs through abseil before abseil logging is initialised, and those lines
    ignore TF_CPP_MIN_LOG_LEVEL (abseil/abseil-cpp#1718): every command would open with about seven
    INFO lines and, on a machine without a GPU, a "failed call to cuInit" error. So the import and the
    device probe run with file descriptor 2 pointed at a temporary file; if either fails, the captured
    text is written back before the exception goes on. TF_CPP_MIN_LOG_LEVEL=0 shows everything.
    Call it first thing in a command that uses TensorFlow (not at start-up: `--help` stays fast).
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") == "0":
        return
    with tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            _restore_stderr(saved)
            capture.seek(0)
            sys.stderr.write(capture.read().decode(errors="replace"))
            raise
        _restore_stderr(saved)


def _restore_stderr(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
