"""Input pipeline throughput, side by side in one run on the same photo-like JPEGs (~500x400).

Prints images/s of (1) decode only, (2) the `imagenet` training pipeline (fused decode-and-crop,
resize 224, flip), (3) that pipeline + AutoAugment `good` + mixup type 1, and the ratios to (1).
Target: (3) >= 0.5 x (1). Usage: .venv/bin/python benchmarks/bench_pipeline.py [--images 400] [--batches 20] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_photos(folder: Path, count: int) -> None:
    """Gradient + ellipses + blur + noise, 480-512 x 380-420 px, JPEG quality 90, two class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = int(rng.integers(480, 513)), int(rng.integers(380, 421))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x / w * 255, y / h * 255, np.full((h, w), rng.uniform(0, 255))], -1)
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(25):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            draw.ellipse([x0, y0, x0 + rng.integers(10, 150), y0 + rng.integers(10, 150)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image = image.filter(ImageFilter.GaussianBlur(2))
        noisy = np.clip(np.asarray(image, np.float32) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        out = folder / f"c{i % 2}" / f"{i:04d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(out, quality=90)


def rates(makers: dict, batch: int, batches: int, repeats: int = 3) -> dict[str, float]:
    """Median images/s of each pipeline; repeats take turns so that load changes hit all alike.

    Each timed run starts a fresh iterator and skips 3 warm-up batches (tracing, autotuning, buffers)."""
    results: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            it = iter(make())
            for _ in range(3):
                next(it)
            start = time.perf_counter()
            for _ in range(batches):
                next(it)
            results[name].append(batch * batches / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import tensorflow as tf

    from finegrain.data import load_split
    from finegrain.data.pipeline import train_batches

    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp) / "photos", args.images)
        split = load_split(Path(tmp) / "photos", "train", data_dir=Path(tmp) / "data")
        b = args.batch_size

        def decode_only():
            # full decode of every JPEG; only the shape travels on, so batching adds no copies
            decode = lambda s, y: (tf.shape(tf.io.decode_jpeg(s, channels=3)), y)  # noqa: E731
            ds = split.dataset.repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.batch(b).prefetch(tf.data.AUTOTUNE)

        def pipeline(**extra):
            ds = train_batches(split, image_size=224, preprocessing="imagenet", batch_size=b, **extra)
            return lambda: ds.repeat()

        print(f"{split.num_examples} JPEGs ~500x400, batch {b}, {args.batches} batches x 3 repeats (median), tf {tf.__version__}")
        measured = rates(
            {"decode": decode_only, "plain": pipeline(), "full": pipeline(autoaugment="good", mixup_type=1)},
            b,
            args.batches,
        )
        decode, plain, full = measured["decode"], measured["plain"], measured["full"]
        # mixup type 1 decodes and augments 2 images per output image
        print(f"{'':<38}{'out img/s':>10}{'ratio':>8}{'decoded img/s':>15}{'ratio':>8}")
        for label, out_rate, per_out in (("decode only", decode, 1), ("imagenet train pipeline", plain, 1),
                                         ("+ AutoAugment good + mixup type 1", full, 2)):
            print(f"{label:<38}{out_rate:10.0f}{out_rate / decode:7.2f}x{out_rate * per_out:15.0f}{out_rate * per_out / decode:7.2f}x")
        print("target: full pipeline >= 0.50x decode only. The machine may be shared: compare ratios, not absolutes.")


if __name__ == "__main__":
    main()
