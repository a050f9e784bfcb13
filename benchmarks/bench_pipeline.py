"""Input pipeline throughput, side by side in one run on the same photo-like JPEGs (~500x400, or --photo-size).

Prints images/s of (1) decode only, (2) the `imagenet` training pipeline (fused decode-and-crop,
resize 224), (3) that pipeline + AutoAugment `good` + mixup type 1, both as the training step receives
them (uint8; the step flips, casts and mixes on the accelerator), (4) = (3) finished on the host as
well, and the ratios to (1). Target: (3) >= 0.6 x (1). Usage: .venv/bin/python benchmarks/bench_pipeline.py [--images 400] [--batches 16] [--batch-size 32]
[--photo-size 500x400] (FGVC-Aircraft's photos, banner cropped, are about 1000x700: --photo-size 1000x700)
[--gpu-images-per-s 250,500,1000,2000] [--per-op].

Cores per GPU: pipeline (3) at 224 px is run again with tf.data's private thread pool limited to 1 and
to 2 threads (intra-op parallelism 1), so the images/s one core delivers is measured, not assumed; the
cores one GPU needs are its training-step images/s divided by the smaller per-core figure (also
printed: divided by the images per CPU-second of the 1-thread run, the figure that holds when idle). No GPU is
measured here: the consumption rates are an input (`--gpu-images-per-s`, the training-step images/s
that `benchmarks/bench_gpu.py --modes train` prints on the GPU in question). The defaults, 250, 500,
1000 and 2000 images/s, only span the range from an older card at float32 to a recent one at mixed
precision for a ResNet-50-sized model at 224 px; they are not measurements.

Where AutoAugment's time goes (`--per-op`): each op's CPU time per application inside a tf.data map
(one thread, steady state), beside how often the `good` policy applies it; their product summed is
the policy's expected cost per image, next to the measured cost of the policy as drawn.

Steady state, like with like: every pipeline is timed inside one epoch of the same files. A real
epoch holds thousands of images, so the drain and restart of the parallel pipeline at an epoch's
end costs nothing there; with a few hundred files it would dominate (mixup type 1 ends an epoch
every 5 batches), so each photo is linked several times into the folder to make an epoch long
enough for the warm-up and the timed batches of every pipeline.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def make_photos(folder: Path, count: int, size: tuple[int, int] = (500, 400)) -> None:
    """Gradient + ellipses + blur + noise, JPEG quality 90, two class folders; about `size` (width, height):
    -4%..+2.4% of the width, +-5% of the height (480-512 x 380-420 px for 500x400), ellipses to scale."""
    rng = np.random.default_rng(0)
    scale = size[0] / 500
    for i in range(count):
        w = int(rng.integers(round(0.96 * size[0]), round(1.024 * size[0]) + 1))
        h = int(rng.integers(round(0.95 * size[1]), round(1.05 * size[1]) + 1))
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x / w * 255, y / h * 255, np.full((h, w), rng.uniform(0, 255))], -1)
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(25):
            x0, y0 = rng.integers(0, w), rng.integers(0, h)
            draw.ellipse([x0, y0, x0 + scale * rng.integers(10, 150), y0 + scale * rng.integers(10, 150)],
                         fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        image = image.filter(ImageFilter.GaussianBlur(2))
        noisy = np.clip(np.asarray(image, np.float32) + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        out = folder / f"c{i % 2}" / f"{i:04d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(out, quality=90)


def link_copies(folder: Path, copies: int) -> None:
    """Hard-link every photo `copies - 1` more times under new names (same bytes, same decode cost)."""
    for path in sorted(folder.glob("*/*.jpg")):
        for k in range(1, copies):
            os.link(path, path.with_name(f"{path.stem}_{k}.jpg"))


def rates(makers: dict, batch: int, batches: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (images/s, process CPU ms per image) of each pipeline; rounds take turns so that load
    changes hit all alike. CPU time counts every thread of this process only, so on a shared machine
    it is steadier than the wall-clock rate (which it cannot replace: it does not see idle cores).

    Each timed run starts a fresh iterator (a new epoch) and skips 3 warm-up batches (tracing,
    autotuning, buffers); the epoch must hold 3 + `batches` batches."""
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    for _ in range(repeats):
        for name, make in makers.items():
            it = iter(make())
            for _ in range(3):
                next(it)
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(batches):
                next(it)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            results[name].append((batch * batches / wall, cpu * 1e3 / (batch * batches)))
    return {name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)) for name, runs in results.items()}


def limited(ds, threads: int):
    """`ds` on a private tf.data thread pool of `threads` threads, one thread per op."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return ds.with_options(options)


def autoaugment_costs(split, image_size: int, policy: str, images: int, repeats: int) -> None:
    """Print each AutoAugment op's CPU ms per application in a 1-thread map, and the policy's expected and
    measured CPU ms per image. Every variant keeps one iterator (steady state, no prefetch threads) and
    the variants take turns; an op's cost is its variant's time minus that of the identity policy."""
    import tensorflow as tf

    from finegrain.data.autoaugment import IDENTITY, OPS, POLICIES, apply_policy, draw_policy
    from finegrain.data.preprocessing import train_image

    names = list(OPS)
    subs = POLICIES[policy]
    frequency = {name: sum(p for sub in subs for op, p, _ in sub if op == name) / len(subs) for name in names}
    level = {name: statistics.mean([lv for sub in subs for op, _, lv in sub if op == name] or [5.0]) for name in names}
    drawn = draw_policy(policy, tf.constant([0, 1], tf.int64), split.num_examples)
    no_background_work = tf.data.Options()  # nothing runs between timings: no autotuning, no prefetch
    no_background_work.autotune.enabled = False
    no_background_work.experimental_optimization.inject_prefetch = False

    def variant(choose):
        """A steady iterator over batches of 50 images, each cropped and given the policy `choose(i)`."""
        def example(encoded, label, i):
            image = train_image(encoded, tf.stack([i, 7]), image_size=image_size, preprocessing="imagenet")
            return apply_policy(image, *choose(i), tf.stack([i, 7 * i]))
        ds = split.dataset.enumerate().map(lambda i, x: example(*x, i), num_parallel_calls=1)
        it = iter(limited(ds.repeat().batch(50), 1).with_options(no_background_work))
        next(it)
        return it

    def fixed(k: int):  # op k at the first stage (at its mean level in the policy), nothing at the second
        lv = level[names[k]] if k < IDENTITY else 0.0
        return lambda i: (tf.constant([k, IDENTITY]), tf.constant([lv, 0.0]), tf.ones([2]))

    variants = {"identity": variant(fixed(IDENTITY)), "policy": variant(lambda i: tuple(t[i] for t in drawn))}
    variants.update({name: variant(fixed(k)) for k, name in enumerate(names)})
    cpu = {name: [] for name in variants}
    for _ in range(repeats):
        for name, it in variants.items():
            start = time.process_time()
            for _ in range(max(1, images // 50)):
                next(it)
            cpu[name].append((time.process_time() - start) * 1e3 / (50 * max(1, images // 50)))
    ms = {name: statistics.median(v) for name, v in cpu.items()}
    base = ms["identity"]
    print(f"\nAutoAugment {policy!r} at {image_size} px, CPU ms per image in a 1-thread map (crop + resize + flip: {base:.2f})")
    print(f"{'op':<14}{'ms/use':>8}{'uses/image':>12}{'ms/image':>10}")
    expected = 0.0
    for name in sorted(names, key=lambda n: -(ms[n] - base) * frequency[n]):
        cost = ms[name] - base
        expected += cost * frequency[name]
        print(f"{name:<14}{cost:8.2f}{frequency[name]:12.3f}{cost * frequency[name]:10.3f}")
    print(f"expected {expected:.2f} ms per image; the policy as drawn measured {ms['policy'] - base:.2f} ms per image")


def rates_list(text: str) -> list[float]:
    """`R[,R...]` -> positive images/s values."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of images/s, e.g. 500,1000") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: every rate must be positive")
    return values


def photo_size(text: str) -> tuple[int, int]:
    """`WxH` -> (W, H), each 64..4096 pixels."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1000x700") from None
    if not (64 <= width <= 4096 and 64 <= height <= 4096):
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be 64..4096 pixels")
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photo-size", type=photo_size, default=(500, 400), metavar="WxH",
                        help="about how large the photos are, e.g. 1000x700 (FGVC-Aircraft); default 500x400")
    parser.add_argument("--gpu-images-per-s", type=rates_list, default=[250.0, 500.0, 1000.0, 2000.0], metavar="R[,R...]",
                        help="training-step images/s of one GPU (an input: bench_gpu.py --modes train measures it)")
    parser.add_argument("--per-op", action="store_true", help="also print where AutoAugment's CPU time goes, op by op")
    args = parser.parse_args()

    import tensorflow as tf

    from finegrain.data import load_split
    from finegrain.data.pipeline import train_batches

    b = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp) / "photos", args.images, args.photo_size)
        # the full pipeline decodes 2 images per output image; the train split is ~80% of the folder
        copies = -(-(3 + args.batches) * 2 * b // int(0.75 * args.images))
        link_copies(Path(tmp) / "photos", copies)
        split = load_split(Path(tmp) / "photos", "train", data_dir=Path(tmp) / "data")

        def decode_only():
            # full decode of every JPEG; only the shape travels on, so batching adds no copies
            decode = lambda s, y: (tf.shape(tf.io.decode_jpeg(s, channels=3)), y)  # noqa: E731
            ds = split.shuffled(0).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
            return ds.batch(b).prefetch(tf.data.AUTOTUNE)

        def pipeline(**extra):
            ds = train_batches(split, image_size=224, preprocessing="imagenet", batch_size=b, **extra)
            return lambda: ds  # one epoch; each iterator starts it afresh

        width, height = args.photo_size
        print(f"{args.images} photos ~{width}x{height} x {copies} links: {split.num_examples} JPEGs in the train split, batch {b}, "
              f"{args.batches} batches x {args.repeats} rounds (median), tf {tf.__version__}")
        full = dict(autoaugment="good", mixup_type=1)
        measured = rates(
            {"decode": decode_only, "plain": pipeline(finish=False), "full": pipeline(finish=False, **full),
             "finished": pipeline(**full)},
            b,
            args.batches,
            args.repeats,
        )
        decode, decode_cpu = measured["decode"]
        # mixup type 1 decodes and augments 2 images per output image
        print(f"{'':<40}{'out img/s':>10}{'ratio':>7}{'decoded img/s':>15}{'ratio':>7}{'CPU ms/decoded':>16}{'ratio':>7}")
        for label, name, per_out in (("decode only", "decode", 1),
                                     ("imagenet train pipeline", "plain", 1),
                                     ("+ AutoAugment good + mixup type 1", "full", 2),
                                     ("  and finished on the host (CPU runs)", "finished", 2)):
            out_rate, cpu_per_out = measured[name]
            cpu = cpu_per_out / per_out
            print(f"{label:<40}{out_rate:10.0f}{out_rate / decode:6.2f}x{out_rate * per_out:15.0f}{out_rate * per_out / decode:6.2f}x"
                  f"{cpu:16.2f}{decode_cpu / cpu:6.2f}x")
        print("target: the training pipeline (AutoAugment + mixup, as the training step receives it) >= 0.60x decode\n"
              "only (decoded img/s); the step flips, casts and mixes each batch on the accelerator (the last row does\n"
              "that on the host, as a CPU-only run pays it). The machine may be shared: compare ratios, not absolutes;\n"
              "the CPU-time ratio (decode CPU / pipeline CPU per decoded image) is the steadier one.")

        full_pipeline = pipeline(finish=False, **full)()
        per_threads = rates({n: (lambda n=n: limited(full_pipeline, n)) for n in (1, 2)}, b, args.batches, args.repeats)
        per_core = min(per_threads[1][0], per_threads[2][0] / 2)
        print(f"\ncores per GPU: pipeline (3) at 224 px, output images/s (2 decoded each) on a private pool of n threads")
        for n, (rate, cpu) in per_threads.items():
            print(f"  {n} thread{'s' if n > 1 else ' '}: {rate:7.0f} img/s = {rate / n:6.0f} per core   (CPU {cpu:.2f} ms per output image)")
        per_cpu_second = 1e3 / per_threads[1][1]  # output images per second of one core's CPU time
        print(f"  per core: {per_core:.0f} img/s (the smaller wall figure; on a busy machine the 2-thread one drops),"
              f" {per_cpu_second:.0f} img/s per CPU-second (1 thread)")
        print("  cores one GPU needs (its consumption rate is an input):   by wall   by CPU time")
        for r in args.gpu_images_per_s:
            print(f"    GPU at {r:7.0f} img/s {'':>31}{math.ceil(r / per_core):4d} {math.ceil(r / per_cpu_second):11d}")
        if args.per_op:
            autoaugment_costs(split, 224, "good", 200, args.repeats)


if __name__ == "__main__":
    main()
