"""The exclusive lock that keeps two jobs off one output (index builds, distillation targets)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from finegrain.errors import UserError
from finegrain.utils.io import exclusive_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")


def test_one_holder_at_a_time(tmp_path):
    lock = tmp_path / "new" / "job.lock"
    with exclusive_lock(lock, "busy"):
        with pytest.raises(UserError, match="^busy$"):
            with exclusive_lock(lock, "busy"):
                pass
    with exclusive_lock(lock, "busy"):  # released on leaving: the next job gets it
        pass


def test_a_killed_holder_does_not_block_the_next_job(tmp_path):
    lock = tmp_path / "job.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom finegrain.utils.io import exclusive_lock\n"
         f"with exclusive_lock({str(lock)!r}, 'busy'):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match="busy"):
            with exclusive_lock(lock, "busy"):
                pass
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with exclusive_lock(lock, "busy"):
        pass
