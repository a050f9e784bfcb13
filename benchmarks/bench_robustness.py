"""Corrupted-eval images/s next to clean-eval images/s: same model, same split, one process.

The model is assemble_resnet50 with random weights (10 classes) on the synthetic test split at the eval
size of `--size` (preprocessing `imagenet`). Clean = finegrain's eval pipeline; corrupted = the
robustness pipeline (eval geometry, 8-bit rounding, the corruption through tf.numpy_function in parallel
tf.data calls). Passes alternate (clean, corruption 1, clean, corruption 2, ..., clean) and each
corruption's ratio is to the mean of the clean passes on either side of it (the machine may be shared).
A third column times the corrupted pipeline alone (no model): when it is far above the corrupted-eval
rate, the model is the bottleneck, as it should be. Target: corrupted/clean >= 0.5x on 2 CPU cores.

    .venv/bin/python benchmarks/bench_robustness.py [--size 224] [--images 128] [--rounds 2] [--severity 3]

Timings on a shared machine are noisy; never assert them in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import finegrain  # noqa: E402,F401  (before TensorFlow loads: sets its CPU-kernel default as for users)

CORRUPTIONS = ("gaussian_noise", "glass_blur", "zoom_blur", "elastic_transform", "motion_blur", "snow", "fog",
               "brightness", "spatter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="assemble_resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=128, help="images of the synthetic test split per pass")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    args = parser.parse_args()

    import numpy as np

    from finegrain.data import load_split, pipeline
    from finegrain.data.corruptions import on_the_fly
    from finegrain.evaluate.inference import predict_batches
    from finegrain.models import create_model
    from finegrain.models.refs import keras_forward

    corruptions = args.corruptions.split(",")
    split = load_split("synthetic", "test")
    split.dataset = split.dataset.take(args.images).cache()  # encoded bytes in memory: no disk in the timing
    source = on_the_fly(split)
    forward = keras_forward(create_model(args.arch, num_classes=10))
    geometry = {"image_size": args.size, "preprocessing": "imagenet"}

    def clean_batches():
        return pipeline.eval_batches(split, batch_size=args.batch, **geometry)

    def corrupted_batches(corruption: str):
        return source.images(corruption, args.severity, **geometry).batch(args.batch).prefetch(2)

    def rate(batches, with_model: bool = True) -> float:
        start = time.perf_counter()
        if with_model:
            _, labels = predict_batches(forward, batches, keys=("logits",))
            n = len(labels)
        else:
            n = sum(len(labels) for _, labels in batches)
        return n / (time.perf_counter() - start)

    rate(clean_batches())  # trace, warm up, fill the cache
    load_before = os.getloadavg()[0]
    # clean, c1, clean, c2, ..., clean: each corruption is compared with the clean passes on either side
    # of it, so that load from other processes drifting during the run does not favour either.
    ratios: dict[str, list[float]] = {c: [] for c in corruptions}
    rates: dict[str, list[float]] = {c: [] for c in ["clean", *corruptions]}
    alone: dict[str, list[float]] = {c: [] for c in corruptions}
    for _ in range(args.rounds):
        before = rate(clean_batches())
        rates["clean"].append(before)
        for c in corruptions:
            corrupted = rate(corrupted_batches(c))
            after = rate(clean_batches())
            rates["clean"].append(after)
            rates[c].append(corrupted)
            ratios[c].append(corrupted / ((before + after) / 2))
            alone[c].append(rate(corrupted_batches(c), with_model=False))
            before = after
    print(f"{args.arch}, eval size {args.size}, {args.images} synthetic test images, batch {args.batch}, "
          f"severity {args.severity}, {args.rounds} round(s), {os.cpu_count()} CPUs, load average "
          f"{load_before:.1f} -> {os.getloadavg()[0]:.1f} (medians)")
    print(f"{'pass':<20}{'eval img/s':>12}{'vs clean':>10}{'corruption alone img/s':>25}")
    print(f"{'clean':<20}{statistics.median(rates['clean']):>12.1f}{1.0:>9.2f}x")
    for c in corruptions:
        print(f"{c:<20}{statistics.median(rates[c]):>12.1f}{statistics.median(ratios[c]):>9.2f}x"
              f"{statistics.median(alone[c]):>25.1f}")
    medians = [statistics.median(r) for r in ratios.values()]
    print(f"corrupted/clean (each against the clean passes beside it): geometric mean "
          f"{float(np.exp(np.mean(np.log(medians)))):.2f}x, lowest {min(medians):.2f}x (target >= 0.5x)")


if __name__ == "__main__":
    main()
