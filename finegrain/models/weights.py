"""Putting weights into a built model: from a Keras weights file, an official TF1 checkpoint, or the
variables of another model matched by path."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from finegrain.errors import UserError, first_line
from finegrain.models import tf1
from finegrain.models.heads import HEAD_LAYERS
from finegrain.utils.io import atomic_path


def is_keras_weights(path: str | os.PathLike) -> bool:
    return str(path).endswith(".h5")


def load_weights(model: keras.Model, path: str | os.PathLike, *, skip_mismatch: bool = False) -> list[str]:
    """Load a Keras weights file or an official TF1 checkpoint into `model` (UserError if unfit).

    `skip_mismatch`: layers whose shapes differ (a classifier of another size) keep their values;
    their names are returned. A TF1 checkpoint always skips a head that does not fit.
    """
    path = Path(path)
    if not is_keras_weights(path):
        return tf1.load_tf1_checkpoint(model, path).skipped_head
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path, skip_mismatch=skip_mismatch)
        except Exception as e:  # Keras raises ValueError/KeyError/OSError depending on the mismatch
            raise UserError(f"weights file {path} does not fit model {model.name!r}: {first_line(e)}") from None
    return [str(w.message) for w in caught if "could not be loaded" in str(w.message)]


def copy_weights(source: Mapping[str, Any], model: keras.Model, *, where: str) -> list[str]:
    """Assign `source[path]` to each weight of `model` with the same variable path and shape.

    Head layers (classifier, embedding) of another shape keep their fresh values (fine-tuning to a
    new class count); every other weight must be found, else the architectures differ. Returns the
    paths that kept their fresh values. Values are all checked before any is assigned.
    """
    assignments, fresh = [], []
    for variable in model.weights:
        value = source.get(variable.path)
        if value is not None and tuple(value.shape) == tuple(variable.shape):
            assignments.append((variable, value))
        elif variable.path.split("/", 1)[0] in HEAD_LAYERS:
            fresh.append(variable.path)
        else:
            found = "is missing" if value is None else f"has shape {list(value.shape)}"
            raise UserError(f"{where} does not fit model {model.name!r}: variable {variable.path} {found} there "
                            f"(model {list(variable.shape)}); it was trained with another model.arch, pooling or "
                            f"embedding_size")
    for variable, value in assignments:
        variable.assign(np.asarray(value))
    return fresh


def save_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """`model.save_weights(path)` atomically (a kill leaves the old file or the new one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # Keras insists on a name ending in .weights.h5, which the atomic temporary name lacks.
        staging = tmp.with_name(tmp.name + ".weights.h5")
        try:
            model.save_weights(staging)
            os.replace(staging, tmp)
        finally:
            staging.unlink(missing_ok=True)
