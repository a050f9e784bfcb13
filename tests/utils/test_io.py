"""The exclusive lock that keeps two jobs off one output (index builds, distillation targets)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finegrain.utils.io import exclusive_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_one_holder_at_a_time(tmp_path):
    lock = tmp_path / "job.lock"
    with exclusive_lock(lock) as first:
        with exclusive_lock(lock) as second:
            assert (first, second) == (True, False)
    with exclusive_lock(lock) as again:
        assert again


def test_a_killed_holder_does_not_block_the_next_job(tmp_path):
    lock = tmp_path / "job.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom finegrain.utils.io import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}) as held:\n    print(held, flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "True"
        with exclusive_lock(lock) as held:
            assert not held
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with exclusive_lock(lock) as held:
        assert held
