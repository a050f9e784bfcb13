"""Fixtures for the engine tests: small recipes on the built-in synthetic data set."""

from __future__ import annotations

import os
import tempfile

import pytest

from finegrain.train.recipe import Recipe, recipe_from_dict

# The synthetic set is generated once into a shared, versioned cache (subprocess workers inherit it).
os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


def small_recipe(**sections: object) -> Recipe:
    """A recipe that trains in seconds on 2 CPU cores: synthetic data at 32 px, a few steps (ResNet-50;
    `tiny_recipe` for the tiny test architecture)."""
    values = {
        "name": "test",
        "model": {"arch": "resnet50", "init": None},
        "data": {"source": "synthetic", "image_size": 32},
        "train": {"epochs": 2, "batch_size": 8, "steps_per_epoch": 2, "base_lr": 0.01, "warmup_epochs": 0.5,
                  "weight_decay": 0.0005},
        "eval": {"every_epochs": 1, "keep_best": 1},
        "runtime": {"deterministic": True},
    }
    for section, changes in sections.items():
        if isinstance(changes, dict):
            values.setdefault(section, {}).update(changes)
        else:  # a top-level field such as task="retrieval"
            values[section] = changes
    return recipe_from_dict(values)


@pytest.fixture
def make_recipe():
    return small_recipe


def tiny_recipe(**sections: object) -> Recipe:
    """`small_recipe` on the registered tiny test architecture (tests/tiny_arch.py)."""
    model = {"arch": "tiny_test_net", **dict(sections.pop("model", {}))}  # type: ignore[arg-type]
    return small_recipe(model=model, **sections)


@pytest.fixture(scope="session")
def multiworker_run(tmp_path_factory):
    """(run dir, [chief, worker] result files) of one deterministic 2-worker run on 127.0.0.1: checked by
    test_distributed, and the uninterrupted reference of test_preemption (a multi-worker launch is slow)."""
    from tests.train.test_distributed import finish_workers, launch_workers

    root = tmp_path_factory.mktemp("multiworker")
    outs = [root / f"worker{index}.json" for index in range(2)]
    finish_workers(launch_workers(root / "run", outs, ["--deterministic"], ["--deterministic"]))
    return root / "run", outs

