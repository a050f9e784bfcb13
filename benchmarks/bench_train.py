"""Training throughput: finegrain's train step on several architectures, side by side, in one process.

Each architecture trains through the engine's step (loss, weight decay, SGD momentum) on the same
synthetic batches; the contenders take turns (A, B, ..., A, B, ...) so that load from other processes
hits all alike. Prints images/s of each and its ratio to the first one, per round and as medians.
`--keras-reference` adds keras.applications.ResNet50 trained by `model.fit` as one more contender.

The FLOP ratio sets what to expect: Assemble-ResNet-50 costs 1.40x the FLOPs of ResNet-50 at 224 px
(the paper: 11.55 G vs 8.24 G), so assemble_resnet50 / resnet50 = 0.71x is the ratio the architecture
allows when every op runs as fast per FLOP as a plain convolution.

`--profile N` instead traces one step of each architecture with the TensorFlow profiler and prints
the N most costly op types (forward / backward), layers and layer kinds, by summed op time.

Besides images/s the table shows the process's CPU seconds per step (user + system, all threads):
other processes on a shared machine stretch wall time but hardly the CPU time a step needs, so the
CPU ratio is the steadier estimate of what a dedicated machine would show.

usage: python benchmarks/bench_train.py [--archs resnet50,assemble_resnet50] [--batch 32] [--size 64]
                                        [--steps 3] [--rounds 3] [--precision float32] [--keras-reference]
                                        [--profile 8]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet50,assemble_resnet50",
                        help="comma-separated finegrain architectures; ratios are to the first")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns per contender")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--precision", default="float32", choices=["float32", "mixed_bfloat16"])
    parser.add_argument("--keras-reference", action="store_true",
                        help="also time keras.applications.ResNet50 trained by model.fit")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N costliest op types and layer kinds of one traced step, then stop")
    args = parser.parse_args()

    import finegrain  # noqa: F401  (first: its CPU-kernel default must be set before TensorFlow loads)
    import keras
    import numpy as np
    import tensorflow as tf

    from finegrain.models import create_model
    from finegrain.train.recipe import recipe_from_dict
    from finegrain.train.step import make_train_step
    from finegrain.train.tasks import get_task

    keras.mixed_precision.set_global_policy(args.precision)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
    labels = tf.one_hot(rng.integers(0, args.classes, args.batch), args.classes)
    batches = tf.data.Dataset.from_tensors((images, labels)).repeat(args.steps).cache()

    def engine_turn(arch: str) -> Callable[[], None]:
        recipe = recipe_from_dict({"model": {"arch": arch},
                                   "train": {"batch_size": args.batch, "base_lr": 0.01, "weight_decay": 0.001}})
        model = create_model(arch, num_classes=args.classes)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = make_train_step(model, optimizer, tf.distribute.get_strategy(), get_task(recipe.task)(recipe),
                               args.batch)

        def turn() -> list[float]:
            times = []
            for batch in batches:
                start = time.perf_counter()
                float(step(batch)[0])  # wait for the step
                times.append(time.perf_counter() - start)
            return times

        return turn

    def fit_turn() -> Callable[[], None]:
        model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3),
                                            classes=args.classes, classifier_activation=None)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        def turn() -> list[float]:  # fit runs the steps back to back: their mean stands for each
            start = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0)
            return [(time.perf_counter() - start) / args.steps] * args.steps

        return turn

    turns = {arch: engine_turn(arch) for arch in args.archs.split(",")}
    if args.profile:
        for arch, turn in turns.items():
            turn()  # trace + warm up
            print_profile(arch, turn, args.profile)
        return
    if args.keras_reference:
        turns["keras.applications.ResNet50 fit"] = fit_turn()

    for name, turn in turns.items():  # trace + warm up, untimed
        start = time.perf_counter()
        turn()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", flush=True)

    first = next(iter(turns))
    rates: dict[str, list[float]] = {name: [] for name in turns}  # per turn
    best: dict[str, float] = {name: 0.0 for name in turns}  # the fastest single step of all turns
    cpu: dict[str, list[float]] = {name: [] for name in turns}  # CPU seconds per step, per turn
    for round_index in range(args.rounds):
        for name, turn in turns.items():
            cpu_start = cpu_seconds()
            times = turn()
            cpu[name].append((cpu_seconds() - cpu_start) / len(times))
            rates[name].append(len(times) * args.batch / sum(times))
            best[name] = max(best[name], args.batch / min(times))
        print(f"round {round_index + 1}: " + ", ".join(
            f"{name} {rates[name][-1]:.1f} img/s ({rates[name][-1] / rates[first][-1]:.2f}x, "
            f"CPU {cpu[first][-1] / cpu[name][-1]:.2f}x)" for name in turns), flush=True)

    # On a shared machine the load drifts between rounds and stalls single steps; the ratio within a
    # round (back-to-back turns) is steadier than the ratio of medians, and the fastest step of each
    # (the one least disturbed) steadier still, and the CPU time a step takes steadiest (the load
    # stretches wall time, hardly CPU time), so all four are printed. CPU ratio: first's / this one's.
    print(f"\nbatch {args.batch}, {args.size}x{args.size}, {args.precision}, CPU threads default, "
          f"{args.rounds} turns x {args.steps} steps each")
    width = max(len(name) for name in turns)
    print(f"{'':{width}}  {'median img/s':>12}  {'ratio':>6}  {'per-round ratio':>15}  {'best step img/s':>15}  "
          f"{'ratio':>6}  {'CPU s/step':>10}  {'ratio':>6}")
    for name in turns:
        median = statistics.median(rates[name])
        round_ratio = statistics.median(a / b for a, b in zip(rates[name], rates[first]))
        cpu_step = statistics.median(cpu[name])
        print(f"{name:{width}}  {median:12.2f}  {median / statistics.median(rates[first]):5.2f}x  "
              f"{round_ratio:14.2f}x  {best[name]:15.2f}  {best[name] / best[first]:5.2f}x  "
              f"{cpu_step:10.3f}  {statistics.median(cpu[first]) / cpu_step:5.2f}x")


def cpu_seconds() -> float:
    """User + system CPU time of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def print_profile(arch: str, turn: Callable[[], list[float]], top: int) -> None:
    """Trace `turn` with the TensorFlow profiler; print op time summed by op type, layer and layer kind.

    Layers are named by their name scope in the step's graph (Keras may append a call suffix: `_1`).
    """
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        wall = sum(turn())
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    by_type: collections.Counter = collections.Counter()
    by_kind: collections.Counter = collections.Counter()
    by_layer: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/.../op_name:OpType"
                if ":" not in name or "::" in name:
                    continue
                op, op_type = name.rsplit(":", 1)
                backward = op.startswith("gradient_tape/")
                parts = op.split("/")[1 if backward else 0:]  # model / layer / op
                layer = parts[1] if len(parts) > 2 else parts[-1]
                kind = re.sub(r"(_\d+)+$", "", layer.rsplit("-", 1)[-1])  # stage1-big1-conv2d_3_1 -> conv2d
                milliseconds = event.duration_ps / 1e9
                by_type[("backward " if backward else "forward ") + op_type] += milliseconds
                by_kind[kind] += milliseconds
                by_layer[layer] += milliseconds
    total = sum(by_type.values())
    print(f"\n{arch}: {wall:.2f} s wall for the traced steps, op time summed over threads {total / 1e3:.2f} s")
    for title, counter in (("op types", by_type), ("layers (forward + backward)", by_layer),
                           ("layer kinds", by_kind)):
        print(f"  top {title}:")
        for key, milliseconds in counter.most_common(top):
            print(f"    {100 * milliseconds / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
