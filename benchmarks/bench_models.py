"""Inference throughput of finegrain's resnet50 and assemble_resnet50 against keras.applications.ResNet50.

All three are measured in the same process, in interleaved rounds (model A, B, C, A, B, C, ...), with the
same call style (`predict_on_batch`, i.e. Keras' compiled predict step without XLA, which does not help on
this CPU), random weights, fp32, and only the logits as output. Prints images/s (median over rounds) and
the ratios to keras ResNet50. Targets: resnet50 >= 1.0x, assemble_resnet50 >= 0.70x.

    .venv/bin/python benchmarks/bench_models.py [--batch 32] [--size 224] [--rounds 5] [--calls 2]

Timings on a shared machine are noisy (1.7x between runs); never assert them in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import finegrain  # noqa: E402,F401  (before TensorFlow loads: sets its CPU-kernel default as for users)


def build_models(size: int) -> dict:
    import keras

    from finegrain.models import create_model

    def logits_only(model):
        return keras.Model(model.input, model.output["logits"], name=model.name)

    return {
        "keras ResNet50": keras.applications.ResNet50(weights=None, input_shape=(size, size, 3)),
        "finegrain resnet50": logits_only(create_model("resnet50", input_shape=(size, size, 3))),
        "finegrain assemble_resnet50": logits_only(create_model("assemble_resnet50", input_shape=(size, size, 3))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median is reported)")
    parser.add_argument("--calls", type=int, default=2, help="timed predict calls per model per round")
    args = parser.parse_args()

    import keras
    import numpy as np

    models = build_models(args.size)
    images = np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32")
    for model in models.values():  # trace and warm up
        model.predict_on_batch(images)
        model.predict_on_batch(images)

    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                model.predict_on_batch(images)
            rates[name].append(args.calls * args.batch / (time.perf_counter() - start))

    baseline = statistics.median(rates["keras ResNet50"])
    print(f"backend {keras.backend.backend()}, batch {args.batch}, {args.size}x{args.size}, fp32, "
          f"{args.rounds} interleaved rounds x {args.calls} calls")
    print(f"{'model':<30}{'images/s (median)':>18}{'min':>8}{'max':>8}{'ratio':>8}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<30}{median:>18.1f}{min(values):>8.1f}{max(values):>8.1f}{median / baseline:>8.2f}")


if __name__ == "__main__":
    main()
