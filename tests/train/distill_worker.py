"""Compute distillation targets and SIGKILL the process after a given number of committed rows
(used by test_distill.py).  usage: python distill_worker.py TEACHER_RUN OUT KILL_AT_ROWS (0 = never)"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import finegrain  # noqa: E402,F401
import tests.tiny_arch  # noqa: E402,F401
from finegrain.data import load_split  # noqa: E402
from finegrain.models import load_model  # noqa: E402
from finegrain.train.distill import compute_targets  # noqa: E402


def kill_after(rows: int):
    def on_chunk(done: int) -> None:
        if rows and done >= rows:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_chunk


def compute_all(teacher: str, out: str, kill_at: int = 0) -> None:
    compute_targets(load_model(teacher), teacher, load_split("synthetic", "train"), "synthetic", out,
                    batch_size=32, image_size=32, chunk_batches=2, on_chunk=kill_after(kill_at))


if __name__ == "__main__":
    compute_all(sys.argv[1], sys.argv[2], int(sys.argv[3]))
