"""GPU throughput: finegrain's models under the current Keras backend against timm's ResNets under PyTorch.

For each precision (float32, mixed_bfloat16, mixed_float16) and batch size, every contender is built
and warmed up (compilation untimed), then the contenders take turns, round after round, so that clock
and thermal drift hit all alike. Printed per contender: inference and training-step images/s (median over
rounds), the ratio to timm's ResNet of the same depth measured in the same run, and, for float32 at batch
64, the ratio to the paper's Tesla P40 inference figures (ResNet-50 536, Assemble-ResNet-50 312,
Assemble-ResNet-152 143 images/s).

- finegrain: `create_model(...)` logits only, `predict_on_batch` (inference) and `train_on_batch` (SGD with
  momentum, softmax cross-entropy) under whatever KERAS_BACKEND says (jax, tensorflow or torch); Keras'
  compiled step (XLA under JAX), mixed precision via `keras.mixed_precision`. Inputs live on the device.
- timm (when torch and timm import): `timm.create_model("resnet50"/"resnet152")`, channels-last,
  `torch.autocast` for the mixed precisions (GradScaler for float16), SGD with momentum; eager unless
  `--torch-compile`. cuDNN autotuning on.

Finegrain's models need no TensorFlow under JAX or PyTorch: only keras and its small pure-Python
dependencies must be importable.

usage:
    KERAS_BACKEND=jax python benchmarks/bench_gpu.py [--models resnet50,assemble_resnet50,assemble_resnet152]
        [--precisions float32,mixed_bfloat16] [--batches 64,256] [--size 224] [--steps 10] [--rounds 3]
        [--modes infer,train] [--no-timm] [--torch-compile]
    CPU smoke run: KERAS_BACKEND=jax python benchmarks/bench_gpu.py --size 32 --batches 2 --models resnet50
        --precisions float32 --steps 1 --rounds 1

On a GPU machine that has PyTorch, timm and JAX but neither TensorFlow nor Keras (no network there),
carry the keras wheel and the two packages it needs that the machine lacks (namex; optree, a binary
wheel). Here, from the repository root (once):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
        keras==3.15.1 namex==0.1.0 optree==0.20.0

(keras needs absl-py, numpy, rich, namex, h5py, optree, ml-dtypes, packaging; check with
`python3 -m pip show` there which are missing.) Then on the GPU machine, carrying `.whl`:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
    KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false python3 benchmarks/bench_gpu.py \
        --precisions mixed_bfloat16,float32 --batches 256,64

A full run (3 models x 2 precisions x 2 batches, XLA compiles of the Assemble-ResNet-152 training step)
takes minutes; shrink with --models/--precisions/--batches to fit a time budget.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

# JAX grabs 75% of GPU memory at start unless told otherwise; timm's PyTorch models share the device.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NUM_CLASSES = 1000
PAPER_P40_FP32_BATCH64 = {"resnet50": 536.0, "assemble_resnet50": 312.0, "assemble_resnet152": 143.0}
TIMM_BASELINE = {"assemble_resnet152": "resnet152"}  # timm's ResNet of the same depth; resnet50 otherwise
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def timm_baseline(arch: str) -> str:
    return TIMM_BASELINE.get(arch, "resnet50")


@dataclass
class Contender:
    """One model in one framework: a callable per mode that runs one batch and waits for the result."""

    name: str  # "finegrain assemble_resnet50" / "timm resnet50"
    arch: str  # the key for ratios and paper figures
    steps: dict[str, Callable[[], None]]
    rates: dict[str, list[float]] = field(default_factory=dict)


def finegrain_contenders(archs: list[str], precision: str, batch: int, size: int, modes: list[str]) -> list[Contender]:
    import keras
    import numpy as np

    from finegrain.models import create_model

    keras.mixed_precision.set_global_policy(precision)
    rng = np.random.default_rng(0)
    images = keras.ops.convert_to_tensor(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    labels = keras.ops.convert_to_tensor(
        np.eye(NUM_CLASSES, dtype="float32")[rng.integers(0, NUM_CLASSES, batch)])
    contenders = []
    for arch in archs:
        full = create_model(arch, num_classes=NUM_CLASSES, input_shape=(size, size, 3))
        model = keras.Model(full.input, full.output["logits"], name=arch)  # logits only: no feature-map copy
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        steps = {"infer": lambda model=model: model.predict_on_batch(images),  # returns NumPy: waits
                 "train": lambda model=model: model.train_on_batch(images, labels)}
        contenders.append(Contender(f"finegrain {arch}", arch, {mode: steps[mode] for mode in modes}))
    keras.mixed_precision.set_global_policy("float32")
    return contenders


def timm_contenders(archs: list[str], precision: str, batch: int, size: int, modes: list[str],
                    compile_models: bool) -> list[Contender]:
    import timm
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    dtype = {"float32": None, "mixed_bfloat16": torch.bfloat16, "mixed_float16": torch.float16}[precision]
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, size, size, generator=generator) * 255).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator).to(device)

    def synchronize() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    contenders = []
    for arch in sorted({timm_baseline(a) for a in archs}):
        model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES)
        model = model.to(device).to(memory_format=torch.channels_last)
        run = torch.compile(model) if compile_models else model
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)
        autocast = lambda: torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa: E731

        def infer(model=model, run=run) -> None:
            model.eval()
            with torch.no_grad(), autocast():
                run(images)
            synchronize()

        def train(model=model, run=run, optimizer=optimizer, scaler=scaler) -> None:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(run(images), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            synchronize()

        steps = {"infer": infer, "train": train}
        contenders.append(Contender(f"timm {arch}", arch, {mode: steps[mode] for mode in modes}))
    return contenders


def timm_available() -> bool:
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def measure(contenders: list[Contender], batch: int, steps: int, rounds: int) -> None:
    """Warm up each (untimed: compilation), then `rounds` rounds of `steps` calls per contender and mode."""
    for contender in contenders:
        for mode, step in contender.steps.items():
            start = time.perf_counter()
            step()
            step()
            print(f"  warm-up {contender.name} {mode}: {time.perf_counter() - start:.1f} s", flush=True)
            contender.rates[mode] = []
    for _ in range(rounds):
        for contender in contenders:
            for mode, step in contender.steps.items():
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                contender.rates[mode].append(steps * batch / (time.perf_counter() - start))


def print_table(contenders: list[Contender], precision: str, batch: int, size: int, backend: str,
                modes: list[str]) -> None:
    timm_rates = {c.arch: c for c in contenders if c.name.startswith("timm ")}
    print(f"\n{precision}, batch {batch}, {size}x{size}, Keras backend {backend} (images/s, median of rounds)")
    header = f"{'model':32}"
    for mode in modes:
        header += f" {mode + ' img/s':>12} {'vs timm':>8}"
    header += f" {'vs paper P40 (infer)':>21}"
    print(header)
    for contender in contenders:
        line = f"{contender.name:32}"
        for mode in modes:
            rate = statistics.median(contender.rates[mode])
            baseline = timm_rates.get(contender.arch if contender.name.startswith("timm ") else
                                      timm_baseline(contender.arch))
            ratio = f"{rate / statistics.median(baseline.rates[mode]):.2f}x" if baseline else "-"
            line += f" {rate:12.1f} {ratio:>8}"
        paper = PAPER_P40_FP32_BATCH64.get(contender.arch) if contender.name.startswith("finegrain ") else None
        if paper and "infer" in modes and precision == "float32" and batch == 64:
            line += f" {statistics.median(contender.rates['infer']) / paper:20.2f}x"
        else:
            line += f" {'-':>21}"
        print(line, flush=True)


def csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,assemble_resnet50,assemble_resnet152")
    parser.add_argument("--precisions", default="float32,mixed_bfloat16")
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10, help="timed calls per contender, mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="infer,train")
    parser.add_argument("--no-timm", action="store_true", help="finegrain's models only")
    parser.add_argument("--torch-compile", action="store_true", help="torch.compile the timm models")
    args = parser.parse_args()
    archs, modes = csv_list(args.models), csv_list(args.modes)
    precisions, batches = csv_list(args.precisions), [int(b) for b in csv_list(args.batches)]
    if unknown := [p for p in precisions if p not in PRECISIONS]:
        parser.error(f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}")
    if unknown := [m for m in modes if m not in ("infer", "train")]:
        parser.error(f"unknown mode {unknown[0]!r}; choose from infer, train")

    import finegrain  # noqa: F401  (before any TensorFlow import: its CPU-kernel default, as for users)
    import keras

    with_timm = not args.no_timm and timm_available()
    backend = keras.backend.backend()
    print(f"Keras {keras.__version__}, backend {backend}; timm: {'yes' if with_timm else 'not used'}", flush=True)
    for precision in precisions:
        for batch in batches:
            contenders = finegrain_contenders(archs, precision, batch, args.size, modes)
            if with_timm:
                contenders += timm_contenders(archs, precision, batch, args.size, modes, args.torch_compile)
            measure(contenders, batch, args.steps, args.rounds)
            print_table(contenders, precision, batch, args.size, backend, modes)
            del contenders
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
