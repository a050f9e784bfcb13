"""Build an index chunk by chunk and SIGKILL the process after a given number of chunks (test_index.py).

usage: python index_kill_worker.py RUN_DIR DATA_FOLDER OUT_DIR KILL_AFTER_CHUNKS
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import finegrain  # noqa: E402,F401
import tests.tiny_arch  # noqa: E402,F401
from tests.evaluate.test_index import build  # noqa: E402


def kill_after(count: int):
    def on_chunk(number: int) -> None:
        if number == count:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_chunk


if __name__ == "__main__":
    run_dir, data, out, count = sys.argv[1:5]
    build(run_dir, data, out, on_chunk=kill_after(int(count)))
    sys.exit(3)  # not killed: fewer chunks than asked
