"""Pooling, embedding and classifier heads, and classifier replacement for fine-tuning.

Every model returns {"features": [B,h,w,C], "embedding": [B,D], "logits": [B,N]}:
- embedding: the pooled vector (GAP or GeM), or with `embedding_size` E > 0 a bias-free dense to E plus
  BatchNorm, taken before the ReLU (as the original's `embedding_dense`); float32 under any policy.
- logits: float32. head="linear": dense with bias on the (ReLU'd, when E > 0) embedding, as the
  original. head="cosine": cosine similarities with L2-normalised class weights (no scale/margin).
Layer names follow the original's TF1 names (`dense`, `embedding_dense`, ...) so TF1 import maps them.
"""

from __future__ import annotations

import keras
from keras import layers

from finegrain.errors import UserError
from finegrain.models.layers import BN_MOMENTUM, CosineClassifier, GeMPooling, GlobalAvgPool, batch_norm

POOLINGS = ("avg", "gem")
HEADS = ("linear", "cosine")
CLASSIFIER_NAMES = {"linear": "dense", "cosine": "cosine_dense"}
EMBEDDING_DENSE = "embedding_dense"
EMBEDDING_BN = "embedding_dense_batch_normalization"
#: Layers that fine-tuning may replace (another class count or embedding size); the rest is the backbone.
HEAD_LAYERS = (*CLASSIFIER_NAMES.values(), EMBEDDING_DENSE, EMBEDDING_BN)


def _classifier(embedding, num_classes: int, head: str, has_embedding_layer: bool):
    if head == "cosine":
        return CosineClassifier(num_classes, name=CLASSIFIER_NAMES["cosine"])(embedding)
    inputs = layers.ReLU(dtype="float32")(embedding) if has_embedding_layer else embedding
    return layers.Dense(num_classes, name=CLASSIFIER_NAMES["linear"], dtype="float32")(inputs)


def check_head_options(num_classes: int, embedding_size: int, pooling: str, head: str) -> None:
    """Raise UserError for head options that cannot work."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    if not isinstance(embedding_size, int) or embedding_size < 0:
        raise UserError(f"embedding_size must be 0 (none) or a positive integer, got {embedding_size!r}")
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}")
    if head not in HEADS:
        raise UserError(f"unknown head {head!r}; choose one of: {', '.join(HEADS)}")


def build_head(features, *, num_classes: int, embedding_size: int = 0, pooling: str = "avg",
               head: str = "linear", bn_momentum: float = BN_MOMENTUM) -> dict:
    """Feature map -> the model's output dict."""
    check_head_options(num_classes, embedding_size, pooling, head)
    pooled = (GeMPooling(3.0, name="gem_pool") if pooling == "gem" else GlobalAvgPool(name="avg_pool"))(features)
    embedding = pooled
    if embedding_size > 0:
        embedding = layers.Dense(embedding_size, use_bias=False, kernel_initializer="variance_scaling",
                                 name=EMBEDDING_DENSE, dtype="float32")(pooled)
        embedding = batch_norm(EMBEDDING_BN, bn_momentum, dtype="float32")(embedding)
    logits = _classifier(embedding, num_classes, head, embedding_size > 0)
    return {"features": features, "embedding": embedding, "logits": logits}


def replace_classifier(model: keras.Model, num_classes: int, head: str = "linear") -> keras.Model:
    """A new model sharing every layer of `model` except a freshly initialised N-way classifier.

    All other weights are kept (the layers are the same objects, so also shared with `model`).
    """
    check_head_options(num_classes, 0, "avg", head)
    outputs = model.output
    if not isinstance(outputs, dict) or set(outputs) != {"features", "embedding", "logits"}:
        raise UserError("replace_classifier needs a finegrain model (outputs features/embedding/logits)")
    has_embedding_layer = any(layer.name == EMBEDDING_DENSE for layer in model.layers)
    logits = _classifier(outputs["embedding"], num_classes, head, has_embedding_layer)
    return keras.Model(model.input, {"features": outputs["features"], "embedding": outputs["embedding"],
                                      "logits": logits}, name=model.name)
