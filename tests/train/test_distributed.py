"""The same training step under MirroredStrategy (2 logical CPUs, mixup type 1) and MultiWorkerMirroredStrategy
(2 worker processes on 127.0.0.1): a few steps each, identical weights on every replica.

Each strategy needs a fresh process (see dist_worker.py).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("dist_worker.py")
TIMEOUT_S = 300


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _load(out: Path) -> tuple[dict, list[np.ndarray]]:
    weights = np.load(str(out) + ".npz")
    return json.loads(out.read_text()), [weights[k] for k in sorted(weights.files, key=lambda k: int(k.split("_")[1]))]


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored.json"
    proc = subprocess.run([sys.executable, str(WORKER), "mirrored", str(tmp_path / "run"), str(out),
                           "--logical-cpus", "2", "--mixup"], env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result, _ = _load(out)
    assert result["num_replicas_in_sync"] == 2 and result["replicas"] == 2
    assert result["replica_weights_equal"], proc.stderr[-2000:]
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert (tmp_path / "run" / "export" / "saved_model.pb").is_file()


def launch_workers(run_dir: Path, outs: list[Path], *flags_of: list[str]) -> list[subprocess.Popen]:
    """Two dist_worker.py processes forming a multi-worker cluster on 127.0.0.1 (flags_of[i]: worker i's extra flags)."""
    ports = _free_ports(len(outs))
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index, out in enumerate(outs):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        flags = flags_of[index] if index < len(flags_of) else []
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "multiworker", str(run_dir), str(out), *flags],
                                      env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    return procs


def finish_workers(procs: list[subprocess.Popen]) -> None:
    """Wait for every worker (killing all after TIMEOUT_S); each must have exited with 0."""
    try:
        logs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, logs):
        assert p.returncode == 0, err[-3000:]


def test_multi_worker_mirrored_strategy_two_processes(multiworker_run):
    run_dir, outs = multiworker_run
    (chief, chief_weights), (worker, worker_weights) = (_load(o) for o in outs)
    assert chief["num_replicas_in_sync"] == worker["num_replicas_in_sync"] == 2
    assert len(chief_weights) == len(worker_weights)
    for a, b in zip(chief_weights, worker_weights):
        np.testing.assert_array_equal(a, b)
    # Only the chief writes the run directory; the other worker's scratch copy is gone.
    assert (run_dir / "metrics.jsonl").is_file()
    assert [h["epoch"] for h in chief["history"]] == [1, 2]
