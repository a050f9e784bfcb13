"""Fixtures for the evaluate tests: a tiny retrieval run (with its SavedModel export) on the synthetic set."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


def retrieval_recipe():
    from tests.train.conftest import tiny_recipe

    return tiny_recipe(task="retrieval", model={"embedding_size": 16, "pooling": "gem", "head": "cosine"},
                       train={"epochs": 1, "steps_per_epoch": 2, "loss": "cosine_softmax"})


@pytest.fixture(scope="session")
def retrieval_run(tmp_path_factory) -> Path:
    """A trained tiny retrieval run directory (model.json, weights, export/)."""
    from finegrain.train import engine

    run_dir = tmp_path_factory.mktemp("retrieval") / "run"
    engine.tune(retrieval_recipe(), run_dir)
    return run_dir


@pytest.fixture(scope="session")
def synthetic_root() -> Path:
    from finegrain.data.synthetic import ensure_synthetic

    return ensure_synthetic()[0]
