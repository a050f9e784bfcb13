"""The family is keras.ops only: weights saved under TensorFlow give the same outputs under PyTorch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from finegrain.models import create_model

TORCH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "torch", keras.backend.backend()
    from finegrain.models import create_model

    weights, data, result = sys.argv[1:4]
    arrays = np.load(data)
    model = create_model("assemble_resnet50", num_classes=10, weights=weights)
    outputs = {}
    for key in ("square", "wide"):
        out = model(arrays[key], training=False)
        for name, value in out.items():
            outputs[f"{key}/{name}"] = keras.ops.convert_to_numpy(value)
    np.savez(result, **outputs)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_assemble_resnet50_under_torch_matches_tensorflow(tmp_path):
    model = create_model("assemble_resnet50", num_classes=10)
    rng = np.random.default_rng(0)
    for variable in model.weights:  # non-trivial BN statistics and head, so a wrong op would show
        if variable.name == "moving_variance":
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype(np.float32))
        elif variable.name in ("gamma", "beta", "moving_mean", "bias"):
            variable.assign(rng.normal(0.0 if variable.name != "gamma" else 1.0, 0.1, variable.shape)
                            .astype(np.float32))
    weights = tmp_path / "a50.weights.h5"
    model.save_weights(weights)
    images = {"square": rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8),
              "wide": rng.integers(0, 256, (1, 64, 96, 3)).astype(np.float32)}
    np.savez(tmp_path / "images.npz", **images)
    expected = {f"{key}/{name}": np.asarray(value)
                for key, batch in images.items() for name, value in model(batch, training=False).items()}

    env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}
    script = tmp_path / "run_torch.py"
    script.write_text(TORCH_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(weights), str(tmp_path / "images.npz"),
                             str(tmp_path / "torch.npz")], capture_output=True, text=True, env=env, timeout=300,
                            cwd=os.getcwd())
    assert result.returncode == 0, result.stderr[-3000:]
    got = np.load(tmp_path / "torch.npz")
    assert sorted(got.files) == sorted(expected)
    for key, value in expected.items():
        scale = max(np.abs(value).max(), 1.0)
        np.testing.assert_allclose(got[key], value, rtol=1e-3, atol=1e-3 * scale, err_msg=key)
