"""Shared fixtures for the model tests: the reference manifests, fake TF1 checkpoints, built models.

tests/models/data/*_variables.tsv are copies of the official checkpoints' variable manifests (names and
shapes in the original's creation order), so these tests do not depend on anything outside the repo.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
MANIFESTS = {
    "resnet50": "vanilla_resnet50_variables.tsv",
    "assemble_resnet50": "assemble_resnet50_variables.tsv",
    "assemble_resnet152": "assemble_resnet152_variables.tsv",
}


def read_manifest(model_name: str) -> list[tuple[str, tuple[int, ...]]]:
    """[(tf1 name, shape)] in the original's creation order."""
    with open(DATA / MANIFESTS[model_name], newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(row["name"], tuple(int(d) for d in row["shape"].split("x"))) for row in rows]


def fake_values(manifest: list[tuple[str, tuple[int, ...]]], seed: int = 0) -> dict[str, np.ndarray]:
    """Distinct random float32 values per variable (moving variances positive, so forward passes work)."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape in manifest:
        if name.endswith("moving_variance"):
            values[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        else:
            values[name] = (rng.standard_normal(size=shape, dtype=np.float32) * 0.05).astype(np.float32)
    return values


def write_tf1_checkpoint(directory: Path, values: dict[str, np.ndarray], step: int = 1234,
                         extra: dict[str, np.ndarray] | None = None) -> Path:
    """Write a TF1 name-based checkpoint (SaveV2 + `checkpoint` state file); return the prefix."""
    import tensorflow as tf

    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / f"model.ckpt-{step}"
    tensors = dict(values)
    tensors.update(extra or {})
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[name]) for name in names])
    (directory / "checkpoint").write_text(
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n')
    return prefix


def training_extras(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What a checkpoint saved during training also holds: global_step and Momentum slots."""
    first = next(iter(values))
    return {"global_step": np.array(1234, np.int64), f"{first}/Momentum": np.zeros_like(values[first])}


@pytest.fixture(scope="session")
def built_models():
    """Models built once per session (building assemble_resnet152 takes ~10 s): name -> keras.Model.

    Tests using these must not rely on their weight values (the import tests overwrite them).
    """
    from finegrain.models import create_model

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = create_model(name)
        return cache[name]

    return get
