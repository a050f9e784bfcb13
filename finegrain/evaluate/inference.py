"""The one inference loop: a model's outputs over a data split, under the model's eval preprocessing.

Training-time evaluation, `eval`, `retrieval-eval`, `predict` and the export checks all come here.
Image size and preprocessing: the explicit arguments, else the model card's (its preprocessing only
for the output the model was made for), else 224 and the data set's catalog default for the output
(retrieval preprocessing for embeddings).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from finegrain.data import Split, pipeline
from finegrain.data.preprocessing import eval_image
from finegrain.errors import UserError
from finegrain.models import ModelCard
from finegrain.models.refs import Forward

DEFAULT_IMAGE_SIZE = 224
TTA_MODES: tuple[str, ...] = ("none", "flip")


def check_tta(tta: str | None) -> str:
    """'none' or 'flip' (None = 'none'); UserError otherwise."""
    tta = tta or "none"
    if tta not in TTA_MODES:
        raise UserError(f"unknown test-time augmentation {tta!r}: use one of {', '.join(TTA_MODES)}")
    return tta


def with_tta(forward: Forward, tta: str | None) -> Forward:
    """`forward`, or with tta="flip" the mean of its outputs on the images and their left-right mirrors.

    Both halves go through the network as one batch of 2B images (one call, better throughput);
    embeddings are L2-normalised afterwards by the callers, so "flip" is normalise(mean(e, e_mirror)).
    """
    if check_tta(tta) == "none":
        return forward

    def flipped(images: Any) -> dict[str, Any]:
        images = tf.convert_to_tensor(images)
        out = forward(tf.concat([images, tf.reverse(images, [2])], axis=0))
        n = tf.shape(images)[0]
        return {key: (value[:n] + value[n:]) / 2 for key, value in out.items()}

    return flipped


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


def iter_outputs(forward: Forward, batches: Any, *, keys: Sequence[str],
                 tta: str | None = None) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """({key: [b, ...] float32}, labels [b]) for each (images, labels) batch, through `forward` with
    test-time augmentation `tta` (see `with_tta`); embeddings as the model gives them (not normalised)."""
    forward = with_tta(forward, tta)
    for images, batch_labels in batches:
        out = forward(images)
        yield {k: np.asarray(out[k], dtype=np.float32) for k in keys}, np.asarray(batch_labels, dtype=np.int64)


def predict_batches(forward: Forward, batches: Any, *, keys: Sequence[str],
                    on_batch: Callable[[int], None] | None = None,
                    tta: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply `forward` (with test-time augmentation `tta`, see `with_tta`) to every (images, labels)
    batch -> ({key: [N, ...] float32}, labels [N])."""
    outputs: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    labels: list[np.ndarray] = []
    for out, batch_labels in iter_outputs(forward, batches, keys=keys, tta=tta):
        for k in keys:
            outputs[k].append(out[k])
        labels.append(batch_labels)
        if on_batch is not None:
            on_batch(len(labels[-1]))
    if not labels:
        raise UserError("the data split is empty (or every image failed to decode): nothing to evaluate")
    return {k: np.concatenate(v) for k, v in outputs.items()}, np.concatenate(labels)


def embed_files(forward: Forward, paths: Sequence[str | os.PathLike], *, image_size: int, preprocessing: str,
                tta: str | None = None, batch_size: int = 32) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """L2-normalised embeddings of image files under the eval preprocessing.

    Returns (embeddings [n_ok, D], positions of the embedded files in `paths`, [(position, reason)] of
    files that could not be read or decoded): one bad file does not stop the others.
    """
    readable, encoded, failed = [], [], []
    for position, path in enumerate(paths):
        try:
            encoded.append(Path(path).read_bytes())
            readable.append(position)
        except OSError as e:
            failed.append((position, f"cannot read ({e.strerror or e})"))
    vectors, kept = [], []
    if readable:
        ds = tf.data.Dataset.from_tensor_slices((tf.constant(readable, tf.int64), tf.constant(encoded, tf.string)))
        ds = ds.map(lambda i, data: (eval_image(data, image_size=image_size, preprocessing=preprocessing), i),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches = ds.ignore_errors().batch(batch_size).prefetch(tf.data.AUTOTUNE)  # undecodable files drop out
        for out, positions in iter_outputs(forward, batches, keys=("embedding",), tta=tta):
            vectors.append(out["embedding"])
            kept += positions.tolist()
    failed = sorted(failed + [(p, "not a decodable image (JPEG, PNG, BMP or GIF)") for p in set(readable) - set(kept)])
    if not kept:
        return np.zeros((0, 0), np.float32), kept, failed
    return l2_normalize(np.concatenate(vectors)), kept, failed


def split_outputs(forward: Forward, card: ModelCard, split: Split, *, keys: Sequence[str] | None = None,
                  image_size: int | None = None, preprocessing: str | None = None, batch_size: int = 64,
                  on_batch: Callable[[int], None] | None = None,
                  tta: str | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model outputs (`keys`, default the card's evaluation output) over every image of `split`.

    Embeddings come back L2-normalised; `tta="flip"` averages each output over the image and its mirror.
    """
    keys = tuple(keys or (card.output,))
    size, pre = eval_settings(card, split, keys[0], image_size, preprocessing)
    batches = pipeline.eval_batches(split, image_size=size, preprocessing=pre, batch_size=batch_size)
    outputs, labels = predict_batches(forward, batches, keys=keys, on_batch=on_batch, tta=tta)
    if "embedding" in outputs:
        outputs["embedding"] = l2_normalize(outputs["embedding"])
    return outputs, labels
