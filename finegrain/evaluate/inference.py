"""The one inference loop: a model's outputs over a data split, under the model's eval preprocessing.

Training-time evaluation, `eval`, `retrieval-eval`, `predict` and the export checks all come here.
Image size and preprocessing: the explicit arguments, else the model card's (its preprocessing only
for the output the model was made for), else 224 and the data set's catalog default for the output
(retrieval preprocessing for embeddings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from finegrain.data import Split, pipeline
from finegrain.errors import UserError
from finegrain.models import ModelCard
from finegrain.models.refs import Forward

DEFAULT_IMAGE_SIZE = 224


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


def eval_settings(card: ModelCard, split: Split, output: str, image_size: int | None = None,
                  preprocessing: str | None = None) -> tuple[int, str]:
    """(image size, preprocessing) to evaluate `card`'s `output` on `split` (see the module docstring).

    The card's preprocessing is what the model was scored with for its own output; another output
    (the embedding of an ImageNet classifier, say) takes the data set's default for that output.
    """
    info = split.info
    default = info.retrieval_preprocessing if output == "embedding" else info.classification_preprocessing
    own = card.preprocessing if output == card.output else None
    return (image_size or card.image_size or DEFAULT_IMAGE_SIZE), (preprocessing or own or default)


def predict_batches(forward: Forward, batches: Any, *, keys: Sequence[str],
                    on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply `forward` to every (images, labels) batch -> ({key: [N, ...] float32}, labels [N])."""
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    labels: list[np.ndarray] = []
    for images, batch_labels in batches:
        out = forward(images)
        for k in keys:
            outputs[k].append(np.asarray(out[k], dtype=np.float32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
        if on_batch is not None:
            on_batch(len(labels[-1]))
    if not labels:
        raise UserError("the data split is empty (or every image failed to decode): nothing to evaluate")
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


def split_outputs(forward: Forward, card: ModelCard, split: Split, *, keys: Sequence[str] | None = None,
                  image_size: int | None = None, preprocessing: str | None = None, batch_size: int = 64,
                  on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model outputs (`keys`, default the card's evaluation output) over every image of `split`.

    Embeddings come back L2-normalised.
    """
    keys = tuple(keys or (card.output,))
    size, pre = eval_settings(card, split, keys[0], image_size, preprocessing)
    batches = pipeline.eval_batches(split, image_size=size, preprocessing=pre, batch_size=batch_size)
    outputs, labels = predict_batches(forward, batches, keys=keys, on_batch=on_batch)
    if "embedding" in outputs:
        outputs["embedding"] = l2_normalize(outputs["embedding"])
    return outputs, labels
