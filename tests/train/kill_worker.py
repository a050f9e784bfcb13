"""Run a tiny deterministic `tune` and SIGKILL the process at a given phase (used by test_kill.py).

usage: python kill_worker.py RUN_DIR PHASE   with PHASE one of
  first-epoch   at step 2 of epoch 1, before any checkpoint
  mid-epoch     at step 3 of epoch 2, after the mid-epoch checkpoint at step 2
  last-epoch    when the last epoch has ended and been checkpointed, before the final weights and export
"""

from __future__ import annotations

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import finegrain  # noqa: E402,F401
import tests.tiny_arch  # noqa: E402,F401
from finegrain.train import engine  # noqa: E402
from finegrain.train.progress import Reporter  # noqa: E402
from tests.train.test_kill import kill_recipe  # noqa: E402


class KillAt(Reporter):
    def __init__(self, phase: str) -> None:
        self.phase = phase

    def on_step(self, epoch: int, step: int, logs: dict) -> None:
        if (self.phase, epoch + 1, step) in (("first-epoch", 1, 2), ("mid-epoch", 2, 3)):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self.phase == "last-epoch" and epoch + 1 == kill_recipe().train.epochs:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    run_dir, phase = sys.argv[1:3]
    engine.tune(kill_recipe(), run_dir, reporter=KillAt(phase), checkpoint_every_steps=2)
    sys.exit(3)  # not killed: the phase was never reached
