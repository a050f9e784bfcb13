"""Index build and search speed and memory, side by side with their plain counterparts, in one run.

Prints:
1. `index build` images/s against plain embedding images/s: the same model (resnet50 with a GeM +
   1536-d cosine head at 64 px, random weights), the same images (the synthetic set's train split),
   the same embedding path (`pipeline.eval_batches` -> `iter_outputs`); the build also writes its chunk
   files, the FAISS index, ids, labels and card (`finegrain.evaluate.index.build_index`). Interleaved
   rounds, medians. Target >= 0.9x.
2. One query against a --size x 1536 gallery (1,000,000 rows: 6.1 GB of float32) of random
   L2-normalised vectors: `finegrain.evaluate.index.search_index` (what `finegrain search` calls on a
   loaded index, after embedding the photos) next to a raw FAISS `index.search` of the same query on
   the same index, interleaved. Target <= 1.2x. The phase's peak RSS is printed.
3. Every index type as `finegrain.evaluate.index_faiss` builds it (flat, fp16, ivf, hnsw): build time,
   the memory it adds (RSS after building minus before), one-query latency (median over single
   queries) and its speed-up over flat, and recall@10 against exact flat search for two query sets of
   100: "random" (fresh random vectors: every similarity is near 0, the worst case for an approximate
   index) and "clustered" (each query has 10 planted gallery neighbours at cosine ~0.64 among the
   random rest, like a product photographed 10 times in a catalogue: real nearest neighbours).
   HNSW is built on the first --hnsw-size gallery rows only (it inserts ~700 vectors/s on 2 busy cores:
   a 1M graph would take about 25 minutes); its speed-up is against flat on those rows.
Each phase runs in its own process (its peak RSS is its own); the gallery is generated once, chunk by
chunk, into a temporary file that each phase reads chunk by chunk (no second copy in memory).

What finegrain does about the 6.1 GB float32 gallery, measured at 1M x 1536 on 2 shared cores (the
README's Benchmarks has the table): `index build --type fp16` stores float16, 3.07 GB, with exact
search (scores rounded to ~1e-3): recall@10 1.000 on both query sets, and one query took 0.38 s
against flat's 1.49 s. `--type ivf` stores 8-bit codes in an inverted file: 1.56 GB on disk (2.1 GB
while built in chunks), 18 ms a query (81x flat), recall@10 0.965 on clustered queries and 0.150 on
random ones (where every item is about as far as any other, so the cells searched rarely hold the
exact top 10); its build took 5 minutes (k-means on 156,000 rows: 2.6 of them). flat stays the
default: exact, and the one-query search through finegrain costs what raw FAISS costs (0.94x).

    .venv/bin/python benchmarks/bench_index.py                   # a 250,000-row gallery
    .venv/bin/python benchmarks/bench_index.py --size 1000000    # the issue's 1M gallery (17.5 min on 2 busy cores)
    .venv/bin/python benchmarks/bench_index.py --skip-embed      # FAISS phases only

Timings on a shared machine are noisy; never assert them in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DIM = 1536
CHUNK = 65_536  # rows generated / read / added at a time: 400 MB of float32
QUERIES = 100  # per query set
CLUSTER = 10  # planted neighbours per clustered query
SPREAD = 0.75  # planted vector = normalise(centre + SPREAD * unit noise): cosine ~0.8 to its centre
K = 10
LATENCY_QUERIES = 20  # single queries timed per index type
PAIRED_ROUNDS = 15  # search_index / raw FAISS pairs
TYPES = ("flat", "fp16", "ivf", "hnsw")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def normalised(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# ---- data: one gallery file, two query sets -------------------------------------------------------

def planted_rows(size: int, subset: int) -> np.ndarray:
    """Rows of the clustered queries' planted neighbours: spread over the first min(size, subset) rows,
    so the HNSW subset holds them too. Query j's neighbours are rows [j * CLUSTER, (j + 1) * CLUSTER)."""
    return np.linspace(0, min(size, subset) - 1, QUERIES * CLUSTER).round().astype(np.int64)


def write_data(folder: Path, size: int, subset: int, seed: int = 0) -> None:
    """gallery.f32 (raw float32 rows), queries.npz (random, clustered)."""
    rng = np.random.default_rng([seed, 0])
    centres = normalised(rng.standard_normal((QUERIES, DIM), dtype=np.float32))

    def near_centres(centre_of: np.ndarray) -> np.ndarray:
        noise = rng.standard_normal((len(centre_of), DIM), dtype=np.float32) * np.float32(SPREAD / np.sqrt(DIM))
        return normalised(centres[centre_of] + noise)

    planted = planted_rows(size, subset)
    planted_vectors = near_centres(np.arange(len(planted)) // CLUSTER)
    with open(folder / "gallery.f32", "wb") as f:
        for start in range(0, size, CHUNK):
            stop = min(start + CHUNK, size)
            chunk = normalised(np.random.default_rng([seed, 1, start]).standard_normal((stop - start, DIM),
                                                                                       dtype=np.float32))
            here = (planted >= start) & (planted < stop)
            chunk[planted[here] - start] = planted_vectors[here]
            chunk.tofile(f)
    random_queries = normalised(rng.standard_normal((QUERIES, DIM), dtype=np.float32))
    np.savez(folder / "queries.npz", random=random_queries, clustered=near_centres(np.arange(QUERIES)))


def read_chunks(folder: Path, count: int) -> Iterator[np.ndarray]:
    """The first `count` gallery rows, CHUNK at a time (plain reads: no mapping stays resident)."""
    with open(folder / "gallery.f32", "rb") as f:
        for start in range(0, count, CHUNK):
            rows = min(CHUNK, count - start)
            yield np.fromfile(f, np.float32, rows * DIM).reshape(rows, DIM)


def read_rows(folder: Path, count: int, rows: np.ndarray) -> np.ndarray:
    """Gallery rows `rows` (sorted) of the first `count`."""
    picked, start = [], 0
    for chunk in read_chunks(folder, count):
        here = rows[(rows >= start) & (rows < start + len(chunk))] - start
        picked.append(chunk[here])
        start += len(chunk)
    return np.concatenate(picked)


# ---- phases (each in its own process) -------------------------------------------------------------

def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _latency(index, queries: np.ndarray) -> float:
    """Median seconds of finegrain's search of one query, over `queries` one by one, after a warm-up pass
    (the first searches after a build are up to 2x slower)."""
    from finegrain.evaluate import index_faiss

    times = []
    for i in range(2 * len(queries)):
        t = time.perf_counter()
        index_faiss.search(index, queries[i % len(queries)][None], K)
        times.append(time.perf_counter() - t)
    return statistics.median(times[len(queries) :])


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float((found[:, :, None] == truth[:, None, :]).any(axis=1).mean())


def _paired_search(index, queries: np.ndarray) -> dict:
    """finegrain's search path and raw FAISS on the same index and query, alternating."""
    from finegrain.evaluate.index import search_index
    from finegrain.evaluate.index_store import StoredIndex

    n = int(index.ntotal)
    stored = StoredIndex(Path("in-memory"), index, [f"gallery/{i:07d}.jpg" for i in range(n)], np.zeros(n, np.int64),
                         ["class"], {"index": {"search_parameters": ""}})
    finegrain_s, raw_s = [], []
    for i in range(PAIRED_ROUNDS + 1):  # round 0 warms up
        q = queries[i % len(queries)][None]
        pair = [("finegrain", lambda: search_index(stored, q, K)), ("raw", lambda: index.search(q, K))]
        for name, run in pair if i % 2 == 0 else pair[::-1]:
            t = time.perf_counter()
            run()
            if i:
                (finegrain_s if name == "finegrain" else raw_s).append(time.perf_counter() - t)
    assert (search_index(stored, queries[:1], K)[1] == index.search(queries[:1], K)[1]).all()
    return {"finegrain_s": statistics.median(finegrain_s), "raw_s": statistics.median(raw_s),
            "ratio": statistics.median(np.array(finegrain_s) / np.array(raw_s)), "ids_gb": rss_gb()}


def _file_gb(index, folder: Path) -> float:
    import faiss

    path = folder / "index.faiss"
    faiss.write_index(index, str(path))
    size = path.stat().st_size / 1e9
    path.unlink()
    return size


def phase_index(kind: str, folder: Path, size: int, subset: int) -> dict:
    """Build one index type from the gallery file; its memory, latency and recall (see the docstring)."""
    from finegrain.evaluate import index_faiss

    n = min(size, subset) if kind == "hnsw" else size
    queries = dict(np.load(folder / "queries.npz"))
    factory_string, parameters = index_faiss.factory(kind, n)
    sample = index_faiss.sample_rows(n, index_faiss.training_rows(kind, n))
    before = rss_gb()
    t = time.perf_counter()
    index = index_faiss.new_index(factory_string, DIM, lambda: read_rows(folder, n, sample))
    train_s = time.perf_counter() - t
    for chunk in read_chunks(folder, n):
        index.add(chunk)
    del chunk  # so that the memory below is the index's alone
    build_s = time.perf_counter() - t
    index_faiss.set_search_parameters(index, parameters)
    result = {"type": kind, "rows": n, "factory": factory_string, "parameters": parameters, "train_s": train_s,
              "build_s": build_s, "index_gb": rss_gb() - before, "file_gb": _file_gb(index, folder),
              "training_rows": int(len(sample))}
    singles = np.concatenate([queries["random"][: LATENCY_QUERIES // 2], queries["clustered"][: LATENCY_QUERIES // 2]])
    result["latency_s"] = _latency(index, singles)

    if kind == "flat":
        result["paired"] = _paired_search(index, queries["random"])
        truth = {name: index_faiss.search(index, q, K)[1] for name, q in queries.items()}
        np.savez(folder / "truth.npz", **truth)
    elif n == size:
        with np.load(folder / "truth.npz") as z:
            truth = dict(z)
    else:  # a subset: exact search on the same rows, and flat's latency there for the speed-up
        flat = index_faiss.new_index("Flat", DIM)
        for chunk in read_chunks(folder, n):
            flat.add(chunk)
        truth = {name: index_faiss.search(flat, q, K)[1] for name, q in queries.items()}
        result["flat_latency_s"] = _latency(flat, singles)
    result["recall"] = {name: _recall(index_faiss.search(index, q, K)[1], truth[name]) for name, q in queries.items()}
    result["peak_rss_gb"] = peak_rss_gb()
    return result


def _embedding_model(folder: Path) -> str:
    """A resnet50 model directory (random weights, GeM, 1536-d cosine head, 64 px) for the embed phase."""
    from finegrain.models import create_model
    from finegrain.models.card import WEIGHTS_FILE, ModelCard, write_card
    from finegrain.models.weights import save_weights

    card = ModelCard("resnet50", num_classes=10, embedding_size=DIM, pooling="gem", head="cosine", image_size=64,
                     output="embedding", source="random weights (bench_index)")
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(create_model(card.arch, **card.model_options()), folder / WEIGHTS_FILE)
    write_card(card, folder)
    return str(folder)


def phase_embed(folder: Path, rounds: int, batch_size: int) -> dict:
    import finegrain  # noqa: F401  (before TensorFlow loads: its CPU-kernel default, as for users)
    from finegrain.data import load_split, pipeline
    from finegrain.evaluate.index import build_index, settings_for
    from finegrain.evaluate.inference import iter_outputs, l2_normalize
    from finegrain.models import load_model

    reference = _embedding_model(folder / "model")
    loaded = load_model(reference)
    split = load_split("synthetic", "train")
    settings = settings_for(loaded, split)

    def plain() -> None:
        batches = pipeline.eval_batches(split, image_size=settings.image_size, preprocessing=settings.preprocessing,
                                        batch_size=batch_size)
        vectors = [out["embedding"] for out, _ in iter_outputs(loaded.forward, batches, keys=("embedding",))]
        l2_normalize(np.concatenate(vectors))

    def build() -> None:
        build_index(folder / "index", loaded, reference, split, "synthetic", settings=settings, batch_size=batch_size,
                    force=True)

    plain()  # warm-up: traces the model, fills the file cache
    rates: dict[str, list[float]] = {"plain": [], "build": [], "plain_cpu": [], "build_cpu": []}
    for r in range(rounds):
        for name, run in ((("plain", plain), ("build", build)) if r % 2 == 0 else (("build", build), ("plain", plain))):
            t, cpu = time.perf_counter(), cpu_seconds()
            run()
            rates[name].append(split.num_examples / (time.perf_counter() - t))
            rates[f"{name}_cpu"].append(split.num_examples / (cpu_seconds() - cpu))
    return {"images": split.num_examples, "image_size": settings.image_size, "rounds": rounds, "peak_rss_gb": peak_rss_gb(),
            **{f"{name}_per_s": statistics.median(values) for name, values in rates.items()}}


def run_phase(args: argparse.Namespace, phase: str, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--folder", str(args.folder), "--size", str(args.size),
           "--hnsw-size", str(args.hnsw_size), "--rounds", str(args.rounds), "--batch", str(args.batch), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- report ---------------------------------------------------------------------------------------

def print_embed(r: dict) -> None:
    ratio = r["build_per_s"] / r["plain_per_s"]
    print(f"\n1. index build vs plain embedding ({r['images']} synthetic train images, resnet50 GeM 1536-d at "
          f"{r['image_size']} px, median of {r['rounds']} interleaved rounds)")
    print(f"   plain embedding {r['plain_per_s']:7.1f} images/s {r['plain_cpu_per_s']:7.1f} images per CPU-second")
    print(f"   index build     {r['build_per_s']:7.1f} images/s {r['build_cpu_per_s']:7.1f} images per CPU-second")
    print(f"   ratio build / plain: {ratio:.2f}x wall, {r['build_cpu_per_s'] / r['plain_cpu_per_s']:.2f}x CPU "
          f"(target >= 0.9x; CPU time is the steadier figure on a shared machine); peak RSS {r['peak_rss_gb']:.2f} GB")


def print_faiss(size: int, results: list[dict]) -> None:
    flat = results[0]
    p = flat["paired"]
    print(f"\n2. one query, k={K}, against {size:,} x {DIM} random L2-normalised float32 "
          f"({size * DIM * 4 / 1e9:.1f} GB), flat index, median of {PAIRED_ROUNDS} interleaved pairs")
    print(f"   finegrain search_index {p['finegrain_s'] * 1e3:8.1f} ms")
    print(f"   raw FAISS index.search {p['raw_s'] * 1e3:8.1f} ms   ratio {p['ratio']:.3f}x (target <= 1.2x); "
          f"peak RSS of the phase {flat['peak_rss_gb']:.2f} GB (the {size:,} ids as strings included)")
    print(f"\n3. index types (recall@{K} against exact flat search; {QUERIES} random and {QUERIES} clustered queries; "
          f"latency: median of {LATENCY_QUERIES} single queries after a warm-up pass; file: the index written to disk, what `search` "
          "reads back into memory; memory: RSS added by building it)")
    print(f"   {'type':<5} {'rows':>9} {'faiss':<16} {'build s':>8} {'file GB':>8} {'memory GB':>9} {'ms/query':>9} "
          f"{'speed-up':>8} {'R@10 clust':>10} {'R@10 rand':>9} {'peak GB':>8}")
    for r in results:
        reference = r.get("flat_latency_s", flat["latency_s"])
        print(f"   {r['type']:<5} {r['rows']:>9,} {r['factory']:<16} {r['build_s']:8.1f} {r['file_gb']:8.2f} "
              f"{r['index_gb']:9.2f} {r['latency_s'] * 1e3:9.2f} {reference / r['latency_s']:7.1f}x {r['recall']['clustered']:10.3f} "
              f"{r['recall']['random']:9.3f} {r['peak_rss_gb']:8.2f}")
    for r in results:
        notes = []
        if r["parameters"]:
            notes.append(f"search {r['parameters']}")
        if r["training_rows"]:
            notes.append(f"trained on {r['training_rows']:,} evenly spaced rows in {r['train_s']:.0f} s")
        if "flat_latency_s" in r:
            notes.append(f"built on the first {r['rows']:,} rows only; speed-up against flat on those rows "
                         f"({r['flat_latency_s'] * 1e3:.2f} ms); {r['rows'] / r['build_s']:.0f} vectors/s inserted")
        if notes:
            print(f"   {r['type']}: {'; '.join(notes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=250_000, help="gallery rows (default 250,000; the issue's "
                        "figure is 1,000,000)")
    parser.add_argument("--hnsw-size", type=int, default=20_000, help="gallery rows HNSW is built on (default 20,000)")
    parser.add_argument("--types", default=",".join(TYPES), help="index types to measure (flat always runs)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the embed phase")
    parser.add_argument("--batch", type=int, default=64, help="embedding batch size")
    parser.add_argument("--skip-embed", action="store_true", help="leave out the index build / embedding phase")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size < QUERIES * CLUSTER or args.hnsw_size < QUERIES * CLUSTER:
        parser.error(f"--size and --hnsw-size must be at least {QUERIES * CLUSTER}")
    if args.phase == "embed":
        print(json.dumps(phase_embed(args.folder, args.rounds, args.batch)))
        return
    if args.phase:
        print(json.dumps(phase_index(args.phase, args.folder, args.size, args.hnsw_size)))
        return

    import faiss

    sys.stdout.reconfigure(line_buffering=True)
    types = ["flat", *(t for t in args.types.split(",") if t in TYPES and t != "flat")]
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} OpenMP threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="bench_index.") as tmp:
        args.folder = Path(tmp)
        if not args.skip_embed:
            print_embed(run_phase(args, "embed"))
        t = time.perf_counter()
        write_data(args.folder, args.size, args.hnsw_size)
        print(f"\n(gallery of {args.size:,} rows generated in {time.perf_counter() - t:.0f} s, parent peak RSS "
              f"{peak_rss_gb():.2f} GB)", flush=True)
        print_faiss(args.size, [run_phase(args, kind) for kind in types])


if __name__ == "__main__":
    main()
