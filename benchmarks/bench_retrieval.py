"""Retrieval evaluation at Stanford Online Products scale, side by side with one raw FAISS search.

Data: 60,502 x 2048 L2-normalised float32 embeddings in 11,316 classes of 2-12 items (class centroid
+ noise, so neighbours mean something). Prints, from one run:
- the whole evaluation (`finegrain.evaluate.metrics.evaluate_retrieval`, Recall@{1,10,100,1000} +
  MAP@R + R-precision, search depth chosen by the evaluator), and
- one raw FAISS `IndexFlatIP` search with k=1001 over the same data (index build included),
with the wall time and peak RSS of each and their ratios. Each phase runs in its own subprocess and
reports its own peak RSS (`ru_maxrss`), so one phase's memory never hides another's.

    .venv/bin/python benchmarks/bench_retrieval.py            # full SOP scale (minutes)
    .venv/bin/python benchmarks/bench_retrieval.py --n 5000   # smaller, same class structure
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SOP_N, SOP_CLASSES, DIM = 60_502, 11_316, 2048
KS = (1, 10, 100, 1000)


def make_data(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class sizes 2..12 summing to n (SOP's mean size), embeddings = centroid + noise, normalised."""
    rng = np.random.default_rng(seed)
    num_classes = max(1, round(n * SOP_CLASSES / SOP_N))
    mean = n / num_classes
    sizes = 2 + rng.binomial(10, min(max((mean - 2) / 10, 0.0), 1.0), num_classes)
    while sizes.sum() != n:  # nudge random classes, staying within 2..12
        diff = n - sizes.sum()
        pick = rng.integers(0, num_classes, abs(diff))
        sizes[pick] = np.clip(sizes[pick] + np.sign(diff), 2, 12)
    labels = rng.permutation(np.repeat(np.arange(num_classes), sizes))
    x = np.empty((n, dim), np.float32)
    centroids = rng.standard_normal((num_classes, dim), dtype=np.float32)
    for s in range(0, n, 8192):  # chunked so generation never holds float64 copies of everything
        block = centroids[labels[s : s + 8192]] + 3.0 * rng.standard_normal((min(8192, n - s), dim), dtype=np.float32)
        x[s : s + 8192] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run_phase(phase: str, data_path: str) -> dict:
    x = np.load(data_path + ".x.npy")
    labels = np.load(data_path + ".y.npy")
    loaded_gb = _peak_rss_gb()
    if phase == "raw":
        import faiss

        t, cpu = time.perf_counter(), _cpu_seconds()
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        index.search(x, min(max(KS) + 1, len(x)))
        seconds = time.perf_counter() - t
        extra = {}
    else:
        from finegrain.evaluate.metrics import evaluate_retrieval

        ks = [k for k in KS if k < len(x)]
        t, cpu = time.perf_counter(), _cpu_seconds()
        report = evaluate_retrieval(x, labels, ks)
        seconds = time.perf_counter() - t
        extra = {"recall_at_k": report.recall_at_k, "map_at_r": report.map_at_r, "k_searched": report.k_searched}
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "peak_rss_gb": _peak_rss_gb(), "after_load_gb": loaded_gb, **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=SOP_N, help="number of embeddings (default: SOP test, 60,502)")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--phase", choices=["raw", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data)))
        return

    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "bench")
        x, labels = make_data(args.n, args.dim)
        np.save(data + ".x.npy", x)
        np.save(data + ".y.npy", labels)
        sizes = np.bincount(labels)
        print(
            f"data: {x.shape[0]:,} x {x.shape[1]} float32 ({x.nbytes / 2**30:.2f} GiB), {sizes.size:,} classes of "
            f"{sizes.min()}-{sizes.max()}; faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, "
            f"{os.cpu_count()} CPUs, GPUs seen by faiss: {faiss.get_num_gpus()}"
        )
        del x, labels
        results = {}
        for phase in ("raw", "eval"):
            cmd = [sys.executable, __file__, "--phase", phase, "--data", data]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[phase] = json.loads(done.stdout.strip().splitlines()[-1])
    raw, ev = results["raw"], results["eval"]
    print(f"{'phase':<44} {'wall s':>8} {'CPU s':>8} {'peak RSS GB':>12} {'after load GB':>14}")
    for name, r in ((f"raw FAISS IndexFlatIP add + search k={min(1001, args.n)}", raw),
                    (f"finegrain evaluate_retrieval (k={ev['k_searched']})", ev)):
        print(f"{name:<44} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} {r['peak_rss_gb']:12.2f} {r['after_load_gb']:14.2f}")
    print(f"ratio eval / raw: wall time {ev['seconds'] / raw['seconds']:.2f}x, CPU time "
          f"{ev['cpu_seconds'] / raw['cpu_seconds']:.2f}x (target <= 1.2x); peak memory "
          f"{ev['peak_rss_gb'] / raw['peak_rss_gb']:.2f}x (target: eval peak < 3 GB). CPU time is the steadier "
          "figure on a shared machine.")
    recalls = ", ".join(f"R@{k} {v:.4f}" for k, v in ev["recall_at_k"].items())
    print(f"metrics: {recalls}, MAP@R {ev['map_at_r']:.4f}")


if __name__ == "__main__":
    main()
