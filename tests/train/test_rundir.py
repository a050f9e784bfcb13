"""Run directories are claimed atomically: runs started at once never share one."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from finegrain.errors import UserError
from finegrain.train import rundir

SECOND = "20261203-120000"  # every claimer below starts "in the same second"


def _claim_at_once(root: str, barrier, results) -> None:
    """In a fresh process: wait for the others, then claim the default directory of recipe `r`."""
    time.strftime = lambda fmt, *_: SECOND
    is_free = rundir._is_free

    def slowly(path):  # every claimer finds the name free before any takes it: the race at its widest
        free = is_free(path)
        time.sleep(0.3)
        return free

    rundir._is_free = slowly
    barrier.wait()
    try:
        results.put(str(rundir.claim_default("r", root)))
    except Exception as e:  # reported to the test, which fails on it
        results.put(f"error: {e}")


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no state of this process
    count = 4
    barrier, results = context.Barrier(count), context.Queue()
    workers = [context.Process(target=_claim_at_once, args=(str(tmp_path), barrier, results)) for _ in range(count)]
    for w in workers:
        w.start()
    claimed = sorted(results.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    names = [f"r-{SECOND}"] + [f"r-{SECOND}-{n}" for n in range(2, count + 1)]
    assert claimed == sorted(str(tmp_path / name) for name in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_a_directory_claimed_by_another_run_is_refused(tmp_path, monkeypatch):
    run = rundir.claim_new(tmp_path / "run")
    assert rundir.claim_new(run) == run  # this process again, nothing written yet: still its own
    run.joinpath(rundir.CLAIM).unlink()
    run.rmdir()  # as the engine leaves a run that failed before its first checkpoint
    assert rundir.claim_new(run) == run and (run / rundir.CLAIM).is_file()
    monkeypatch.setattr(rundir, "_claimed_here", set())  # as seen from another process
    with pytest.raises(UserError, match="already exists: another run took it"):
        rundir.claim_new(run)
    monkeypatch.setattr(time, "strftime", lambda fmt, *_: SECOND)
    (tmp_path / "runs" / f"r-{SECOND}").mkdir(parents=True)  # empty: a user's own mkdir is fine to use
    assert rundir.claim_default("r", tmp_path / "runs") == tmp_path / "runs" / f"r-{SECOND}"
    monkeypatch.setattr(rundir, "_claimed_here", set())
    assert rundir.claim_default("r", tmp_path / "runs") == tmp_path / "runs" / f"r-{SECOND}-2"


def test_a_claim_is_given_back_only_while_nothing_was_written_and_only_by_its_owner(tmp_path, monkeypatch):
    unused, used = rundir.claim_new(tmp_path / "unused"), rundir.claim_new(tmp_path / "used")
    (used / rundir.RECIPE).write_text("name: x\n")
    rundir.release_unused(unused)
    rundir.release_unused(used)
    assert not unused.exists() and (used / rundir.RECIPE).is_file()
    theirs = rundir.claim_new(tmp_path / "theirs")
    monkeypatch.setattr(rundir, "_claimed_here", set())  # claimed by another process (a multi-worker chief)
    rundir.release_unused(theirs)
    assert (theirs / rundir.CLAIM).is_file()
