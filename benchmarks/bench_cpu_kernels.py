"""CPU kernels: a training step with TensorFlow's oneDNN kernels on (finegrain's default) vs off.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import, so each setting runs in its own child process;
the parent alternates them (off, on, off, on, ...) so that load from other processes hits both alike,
and prints images/s of each and the ratio on / off. The step is the engine's (loss, weight decay, SGD
momentum) on synthetic batches.

usage: python benchmarks/bench_cpu_kernels.py [--arch assemble_resnet50] [--batch 32] [--size 64]
                                              [--steps 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    """Build, warm up, time `--steps` steps; print {"rate": images/s} as the last line."""
    import finegrain  # noqa: F401  (sets the default only; the parent passes the variable explicitly)
    import keras
    import numpy as np
    import tensorflow as tf

    from finegrain.models import create_model
    from finegrain.train.recipe import recipe_from_dict
    from finegrain.train.step import make_train_step
    from finegrain.train.tasks import get_task

    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
    labels = tf.one_hot(rng.integers(0, 10, args.batch), 10)
    recipe = recipe_from_dict({"model": {"arch": args.arch},
                               "train": {"batch_size": args.batch, "base_lr": 0.01, "weight_decay": 0.0001}})
    model = create_model(args.arch, num_classes=10, zero_init_residual=True)
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    step = make_train_step(model, optimizer, tf.distribute.get_strategy(), get_task(recipe.task)(recipe), args.batch)
    for _ in range(2):  # trace + warm up
        float(step((images, labels))[0])
    start = time.perf_counter()
    for _ in range(args.steps):
        loss, _ = step((images, labels))
    float(loss)
    print(json.dumps({"rate": args.steps * args.batch / (time.perf_counter() - start)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="assemble_resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per turn")
    parser.add_argument("--rounds", type=int, default=3, help="turns per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    rates: dict[str, list[float]] = {"0": [], "1": []}
    command = [sys.executable, __file__, "--child", "--arch", args.arch, "--batch", str(args.batch),
               "--size", str(args.size), "--steps", str(args.steps)]
    for round_index in range(args.rounds):
        for setting in ("0", "1"):
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting, "TF_CPP_MIN_LOG_LEVEL": "2"}
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"child with TF_ENABLE_ONEDNN_OPTS={setting} failed:\n{done.stderr[-3000:]}")
            rates[setting].append(json.loads(done.stdout.strip().splitlines()[-1])["rate"])
        print(f"round {round_index + 1}: oneDNN off {rates['0'][-1]:.2f} img/s, on {rates['1'][-1]:.2f} img/s, "
              f"ratio {rates['1'][-1] / rates['0'][-1]:.2f}x", flush=True)

    off, on = statistics.median(rates["0"]), statistics.median(rates["1"])
    print(f"\n{args.arch}, batch {args.batch}, {args.size}x{args.size}, float32, "
          f"{args.rounds} turns x {args.steps} steps each (median)")
    print(f"TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels) : {off:8.2f} img/s")
    print(f"TF_ENABLE_ONEDNN_OPTS=1 (oneDNN)        : {on:8.2f} img/s")
    print(f"ratio on / off                          : {on / off:8.2f}x")


if __name__ == "__main__":
    main()
