"""Preemption of a multi-worker run: one worker SIGKILLed mid-epoch, both restarted with resume, and the
final weights equal those of an uninterrupted run (deterministic mode; 2 worker processes on 127.0.0.1)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.train.test_distributed import TIMEOUT_S, _load, finish_workers, launch_workers


def _launch(run_dir, outs, *, resume: bool = False, kill_worker_1_at: int | None = None) -> list[subprocess.Popen]:
    flags = ["--deterministic", *(["--resume"] if resume else [])]
    kill = ["--kill-at-step", str(kill_worker_1_at)] if kill_worker_1_at else []
    return launch_workers(run_dir, outs, flags, flags + kill)


@pytest.mark.slow
def test_a_killed_worker_resumes_with_every_worker_from_the_last_checkpoint(tmp_path, multiworker_run):
    _, reference = multiworker_run  # the same run, uninterrupted

    run, outs = tmp_path / "run", [tmp_path / f"w{i}.json" for i in range(2)]
    procs = _launch(run, outs, kill_worker_1_at=4)  # step 4: after the end-of-epoch-1 checkpoint (step 3)
    try:
        assert procs[1].wait(timeout=TIMEOUT_S) == -signal.SIGKILL
        time.sleep(2)  # the survivor now waits in a collective for its lost peer, as on a real cluster
        procs[0].kill()  # the scheduler restarts the whole job
        procs[0].wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    state = json.loads((run / "checkpoints" / "state.json").read_text())
    assert state["last"]["step"] == 3 and not outs[0].exists()

    finish_workers(_launch(run, outs, resume=True))
    (chief, chief_weights), (worker, worker_weights) = (_load(o) for o in outs)
    _, reference_weights = _load(reference[0])
    assert [h["epoch"] for h in chief["history"]] == [1, 2]
    for a, b, c in zip(chief_weights, worker_weights, reference_weights):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
