"""Distillation costs nothing per step: training images/s with teacher targets against without, one run.

Both contenders run the engine's real path on the built-in synthetic set: the task's training
pipeline (decode, crop, flip, mixup type 1; with distillation, each batch's teacher rows looked up
in the memory-mapped targets by example position and mixed like the labels) feeding the engine's
train step (label loss, plus T^2 * CE of the softened distributions with distillation). They take
turns, one epoch slice each, so that load from other processes hits both alike.

usage: python benchmarks/bench_distill.py [--arch resnet50] [--batch 32] [--size 64] [--steps 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns per contender")
    args = parser.parse_args()

    import finegrain  # noqa: F401  (first: its CPU-kernel default must be set before TensorFlow loads)
    import keras
    import numpy as np
    import tensorflow as tf

    from finegrain.data import load_split
    from finegrain.models import ModelCard, create_model
    from finegrain.train import distill
    from finegrain.train.recipe import recipe_from_dict
    from finegrain.train.step import make_train_step
    from finegrain.train.tasks import get_task

    split = load_split("synthetic", "train")
    work = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    # Targets as distill-targets writes them (random teacher logits: the cost does not depend on them).
    labels = np.array([int(y) for _, y in split.dataset.as_numpy_iterator()])
    np.save(work / distill.LOGITS_FILE, np.random.default_rng(0).normal(size=(len(labels), 10)).astype(np.float16))
    np.save(work / distill.LABELS_FILE, labels)
    distill.atomic_write_json(work / distill.INFO_FILE, {
        "teacher": "random", "teacher_card": ModelCard("resnet50", num_classes=10).to_dict(), "image_size": args.size,
        "preprocessing": "imagenet", "split": distill.split_identity(split, "synthetic")})

    def turn_for(kd: bool) -> Callable[[], None]:
        recipe = recipe_from_dict({
            "model": {"arch": args.arch},
            "data": {"source": "synthetic", "image_size": args.size, "mixup_type": 1},
            "train": {"batch_size": args.batch, "kd_targets": str(work) if kd else None, "kd_temperature": 2.0}})
        task = get_task(recipe.task)(recipe)
        task.prepare(split)
        model = create_model(args.arch, num_classes=split.num_classes)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = make_train_step(model, optimizer, tf.distribute.get_strategy(), task, args.batch)
        epoch = [0]

        def turn() -> None:
            epoch[0] += 1
            for batch in task.train_batches(split, epoch[0]).take(args.steps):
                loss, _ = step(batch)
            float(loss)  # wait for the last step

        return turn

    turns = {"without distillation": turn_for(False), "with distillation": turn_for(True)}
    for name, turn in turns.items():  # trace + warm up, untimed
        turn()
    rates: dict[str, list[float]] = {name: [] for name in turns}
    for round_index in range(args.rounds):
        for name, turn in turns.items():
            start = time.perf_counter()
            turn()
            rates[name].append(args.steps * args.batch / (time.perf_counter() - start))
        print(f"round {round_index + 1}: " + ", ".join(f"{n} {r[-1]:.1f} img/s" for n, r in rates.items()), flush=True)
    base = statistics.median(rates["without distillation"])
    print(f"\n{args.arch}, batch {args.batch}, {args.size}x{args.size}, mixup type 1, "
          f"{args.rounds} turns x {args.steps} steps (median)")
    for name, r in rates.items():
        within = statistics.median(a / b for a, b in zip(r, rates["without distillation"]))
        print(f"{name:22} {statistics.median(r):8.2f} img/s  {statistics.median(r) / base:5.2f}x  "
              f"(median per-round ratio {within:.2f}x)")


if __name__ == "__main__":
    main()
