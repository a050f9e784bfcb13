"""Export a trained model as a SavedModel for serving (TF Serving, `tf.saved_model.load`).

Signatures (both take `images`: uint8 [None, None, None, 3], RGB, already resized/cropped the way
the model was evaluated; the network is fully convolutional, so any size works):
- `serving_default` -> {"probabilities": [B, K], "logits": [B, K]}; for a cosine head the
  probabilities are softmax(scale * cosine), the scale the model was trained with.
- `embedding` -> {"embedding": [B, D]}: the retrieval embedding (L2-normalise it for cosine search).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf


def export_saved_model(model: keras.Model, path: str | os.PathLike, *, logit_scale: float = 1.0) -> Path:
    """Write the SavedModel to `path` atomically (temporary directory renamed into place)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"export target {path} exists")
    spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.cast(model(tf.cast(images, tf.float32), training=False)["logits"], tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logit_scale * logits, axis=-1)}

    def embed(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"embedding": tf.cast(model(tf.cast(images, tf.float32), training=False)["embedding"], tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint("embedding", embed, input_signature=[spec])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        archive.write_out(str(tmp), verbose=False)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
