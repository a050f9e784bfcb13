"""Run a model over a data split: embeddings (L2-normalised) and logits, batched, with a progress bar.

Model sources (`load_model_source`):
- a finegrain run directory (its recipe gives the image size and eval preprocessing),
- a SavedModel directory written by `finegrain export` (signatures `serving_default` and `embedding`,
  uint8 images in),
- a Keras weights file (`*.weights.h5`) or an official TF1 checkpoint, with `arch` naming the model.
Every source is wrapped into one callable: (float32 images [B, H, W, 3] on 0..255, wanted keys) -> dict
of arrays with "embedding" and/or "logits"; softmax(logit_scale * logits) are the class probabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finegrain.errors import UserError

ModelFn = Callable[[Any, Sequence[str]], dict[str, Any]]  # (images, wanted keys) -> {key: array}


@dataclass
class ModelSource:
    """A loaded model and what is known about how it was trained."""

    predict: ModelFn  # (float32 images 0..255, keys) -> {"embedding": [B, D], "logits": [B, C]}
    description: str
    class_names: list[str] | None = None  # in logit order, when known (run directories)
    image_size: int | None = None  # training crop size, when known
    preprocessing: str | None = None  # eval preprocessing name, when known
    logit_scale: float = 1.0  # softmax(scale * logits) gives probabilities (cosine heads)


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def _keras_predict(model: Any) -> ModelFn:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(images: Any) -> dict[str, Any]:
        out = model(images, training=False)
        return {k: tf.cast(out[k], tf.float32) for k in ("embedding", "logits")}

    return lambda images, keys=("embedding", "logits"): forward(images)


def _saved_model_predict(path: Path) -> ModelFn:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    missing = {"serving_default", "embedding"} - set(loaded.signatures)
    if missing:
        raise UserError(f"SavedModel {path} lacks the signature(s) {sorted(missing)}: export it with `finegrain export`")
    serve, embed = loaded.signatures["serving_default"], loaded.signatures["embedding"]

    def predict(images: Any, keys: Sequence[str] = ("embedding", "logits")) -> dict[str, Any]:
        # The export takes uint8; eval images are float 0..255 after resizing, so round first.
        as_uint8 = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
        out = {}
        if "embedding" in keys:
            out["embedding"] = embed(images=as_uint8)["embedding"]
        if "logits" in keys:
            # log of the exported probabilities: softmax of it gives them back whatever logit scale
            # (cosine head) the model was trained with.
            out["logits"] = tf.math.log(serve(images=as_uint8)["probabilities"])
        return out

    return predict


def load_model_source(model: str | os.PathLike, *, arch: str | None = None, num_classes: int = 1001) -> ModelSource:
    """Resolve MODEL (run directory, SavedModel, or weights file / TF1 checkpoint with `arch`)."""
    path = Path(model).expanduser()
    from finegrain.train import rundir

    if path.is_dir() and (path / rundir.RECIPE).is_file():
        keras_model, class_names, recipe = rundir.load_run(path)
        scale = recipe.train.loss_scale if recipe.model.head == "cosine" else 1.0
        return ModelSource(_keras_predict(keras_model), f"run {path}", class_names, recipe.data.image_size,
                           recipe.data.preprocessing, scale)
    if _is_saved_model(path):
        return ModelSource(_saved_model_predict(path), f"SavedModel {path}")
    exists = path.exists() or Path(str(path) + ".index").exists()
    if not exists:
        raise UserError(
            f"model {path} does not exist: pass a run directory, a SavedModel directory, or a weights file / TF1 "
            "checkpoint together with --arch"
        )
    if arch is None:
        raise UserError(f"{path} is a weights file or checkpoint: name its architecture with --arch (see `finegrain models`)")
    from finegrain.models import create_model

    keras_model = create_model(arch, num_classes=num_classes, weights=str(path))
    return ModelSource(_keras_predict(keras_model), f"{arch} with weights {path}")


def run_model(
    predict: ModelFn,
    batches: Any,
    *,
    keys: Sequence[str] = ("embedding",),
    total: int | None = None,
    description: str = "embedding",
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply `predict` to every (images, labels) batch -> ({key: [N, ...] float32}, labels [N])."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from finegrain.cli.console import err

    outputs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    labels: list[np.ndarray] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not progress, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for images, batch_labels in batches:
            out = predict(images, keys)
            for k in keys:
                outputs[k].append(np.asarray(out[k], dtype=np.float32))
            labels.append(np.asarray(batch_labels, dtype=np.int64))
            bar.advance(task, len(labels[-1]))
    if not labels:
        raise UserError("the data split is empty (or every image failed to decode): nothing to evaluate")
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


def split_outputs(
    source: ModelSource,
    split: Any,
    *,
    keys: Sequence[str] = ("embedding",),
    image_size: int | None = None,
    preprocessing: str | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model outputs over a `finegrain.data.Split` under its eval preprocessing.

    Image size / preprocessing: the explicit arguments, else the model's recipe, else 224 and the data
    set's catalog default for the task (retrieval preprocessing when only embeddings are asked for).
    Embeddings come back L2-normalised.
    """
    from finegrain.data import pipeline

    size = image_size or source.image_size or 224
    info = split.info
    default_pre = info.retrieval_preprocessing if tuple(keys) == ("embedding",) else info.classification_preprocessing
    pre = preprocessing or source.preprocessing or default_pre
    batches = pipeline.eval_batches(split, image_size=size, preprocessing=pre, batch_size=batch_size)
    outputs, labels = run_model(source.predict, batches, keys=keys, total=split.num_examples,
                                description=f"{'+'.join(keys)} of {info.name}/{split.name}", progress=progress)
    if "embedding" in outputs:
        outputs["embedding"] = l2_normalize(outputs["embedding"])
    return outputs, labels
