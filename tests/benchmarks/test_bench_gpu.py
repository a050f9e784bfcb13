"""benchmarks/bench_gpu.py on the CPU: Keras' JAX backend with TensorFlow made unimportable, as on the GPU
machine, and its timm side through a stand-in `timm` module (a small PyTorch net) when PyTorch is here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Runs the benchmark as __main__ with `import tensorflow` failing, so any TensorFlow import on the path
# from keras to create_model and the training step breaks the run.
RUNNER = textwrap.dedent(
    """
    import runpy, sys
    sys.modules["tensorflow"] = None
    import keras
    from finegrain.models import register_model

    @register_model("bench_test_net", "two conv layers: a training step that compiles in seconds")
    def features(images, *, bn_momentum, keep_prob=None, zero_init_residual=False):
        x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="conv0")(images)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=bn_momentum, name="bn0")(x))
        return keras.layers.Conv2D(16, 3, strides=2, name="conv1")(x)

    sys.argv = ["bench_gpu.py", *sys.argv[1:]]
    runpy.run_path({script!r}, run_name="__main__")
    """
)
# What the benchmark uses of timm: create_model(name, pretrained=False, num_classes=N) -> torch.nn.Module.
FAKE_TIMM = textwrap.dedent(
    """
    import torch

    def create_model(name, pretrained=False, num_classes=1000):
        assert name in ("resnet50", "resnet152") and not pretrained
        return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                   torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, num_classes))
    """
)


def _run(tmp_path: Path, *args: str, with_fake_timm: bool) -> subprocess.CompletedProcess:
    runner = tmp_path / "run_bench.py"
    runner.write_text(RUNNER.format(script=str(ROOT / "benchmarks" / "bench_gpu.py")))
    path = [str(ROOT)]
    if with_fake_timm:
        (tmp_path / "fake").mkdir()
        (tmp_path / "fake" / "timm.py").write_text(FAKE_TIMM)
        path.insert(0, str(tmp_path / "fake"))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.run([sys.executable, str(runner), *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=tmp_path)


@pytest.mark.slow  # ~20 s: imports JAX, Keras and PyTorch, compiles two small steps
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (CI installs it: .ci/run)")
def test_bench_gpu_runs_under_jax_without_tensorflow_and_prints_the_table(tmp_path):
    with_timm = importlib.util.find_spec("torch") is not None
    result = _run(tmp_path, "--size", "32", "--batches", "2", "--models", "bench_test_net", "--precisions",
                  "mixed_bfloat16", "--steps", "1", "--rounds", "2", with_fake_timm=with_timm)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "backend jax" in out and "mixed_bfloat16, batch 2, 32x32" in out
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in out.splitlines()
            if line.startswith(("finegrain ", "timm "))}
    infer, infer_vs_timm, train, train_vs_timm, paper = rows["finegrain bench_test_net"]
    assert float(infer) > 0 and float(train) > 0
    assert paper == "-"  # the paper's figures are float32 at batch 64 only
    if with_timm:  # the stand-in is the baseline: finegrain's row is compared with it, its own row is 1.00x
        assert infer_vs_timm.endswith("x") and train_vs_timm.endswith("x") and float(infer_vs_timm[:-1]) > 0
        assert rows["timm resnet50"][1] == rows["timm resnet50"][3] == "1.00x"
    else:
        assert infer_vs_timm == train_vs_timm == "-"
