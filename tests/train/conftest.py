"""Fixtures for the engine tests: small recipes on the built-in synthetic data set."""

from __future__ import annotations

import os
import tempfile

import pytest

from finegrain.train.recipe import Recipe, recipe_from_dict

# The synthetic set is generated once into a shared, versioned cache (subprocess workers inherit it).
os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


def small_recipe(**sections: object) -> Recipe:
    """A recipe that trains in seconds on 2 CPU cores: synthetic data at 32 px, a few steps."""
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


def tiny_model(arch: str, *, num_classes: int, head: str = "linear", weights=None, input_shape=(None, None, 3),
               **_: object):
    """A conv net with the finegrain output contract, for tests that do not need a real architecture."""
    import keras

    from finegrain.models.layers import CosineClassifier

    images = keras.Input(input_shape)
    x = keras.layers.Rescaling(1 / 255.0)(images)
    for filters, stride in ((16, 2), (32, 2), (32, 1)):
        x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    features = x
    embedding = keras.layers.GlobalAveragePooling2D()(features)
    if head == "cosine":
        logits = CosineClassifier(num_classes)(embedding)
    else:
        logits = keras.layers.Dense(num_classes, dtype="float32")(embedding)
    model = keras.Model(images, {"features": features, "embedding": embedding, "logits": logits})
    if weights is not None:
        model.load_weights(weights)
    return model


@pytest.fixture
def tiny_arch(monkeypatch):
    """Make the engine build `tiny_model` whatever model.arch says."""
    from finegrain.train import engine

    monkeypatch.setattr(engine, "_create_model", tiny_model)

