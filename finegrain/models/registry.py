"""The one factory, `create_model`, over the registered architectures, and model-wide settings.

The registry itself (names, descriptions, recorded parameter counts, `register_model`) lives in the
Keras-free `finegrain.models.architectures`, re-exported here. A registered builder turns (images
tensor, bn_momentum, keep_prob) into the final feature map; the factory adds the fixed
preprocessing, the head, DropBlock's shared keep-prob, and optional weights.

Nothing here imports TensorFlow: models build under Keras' JAX and PyTorch backends too. Loading
weights does (TF1 checkpoints), so `finegrain.models.weights` is imported only when weights are given.
"""

from __future__ import annotations

import os

import keras

from finegrain.errors import UserError
from finegrain.models import resnet
from finegrain.models.architectures import (  # noqa: F401  (re-exported: the registry's public names)
    IMAGENET_CLASSES,
    ModelEntry,
    list_models,
    model_entry,
    register_model,
)
from finegrain.models.heads import build_head, check_head_options
from finegrain.models.layers import BN_MOMENTUM, DropBlock, Preprocess, new_keep_prob_variable


def _build_features(entry: ModelEntry, images, **options):
    if entry.spec is not None:
        return resnet.build_backbone(images, entry.spec, **options)[0]
    return entry.build_features(images, **options)


def create_model(name: str, *, num_classes: int = IMAGENET_CLASSES, embedding_size: int = 0,
                 pooling: str = "avg", head: str = "linear", dropblock: bool = False,
                 weights: str | os.PathLike | None = None,
                 input_shape: tuple[int | None, int | None, int] = (None, None, 3),
                 bn_momentum: float = BN_MOMENTUM, zero_init_residual: bool = False) -> keras.Model:
    """Build a registered model: RGB 0..255 (uint8 or float) in, {"features","embedding","logits"} out.

    `zero_init_residual`: start the last BatchNorm gamma of every residual branch at 0, so each block
    begins as the identity (Goyal et al. 2017); it stabilises training from scratch and is irrelevant
    when weights are loaded (they overwrite every gamma).

    `weights`: a Keras weights file (`*.weights.h5`) or an official TF1 checkpoint (a directory with a
    `checkpoint` file or a `model.ckpt-N` prefix). From a TF1 checkpoint every backbone variable is
    loaded, and the classifier too when its shape fits (`num_classes` 1001, linear head); otherwise the
    new head keeps its fresh initialisation (fine-tuning).
    """
    entry = model_entry(name)
    check_head_options(num_classes, embedding_size, pooling, head)  # before the seconds-long build
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise UserError(f"input_shape must be (height, width, 3) with RGB channels last, got {input_shape}")
    images = keras.Input(shape=tuple(input_shape), dtype="float32", name="images")
    keep_prob = new_keep_prob_variable() if dropblock else None
    features = _build_features(entry, Preprocess(name="preprocess")(images), bn_momentum=bn_momentum,
                               keep_prob=keep_prob, zero_init_residual=zero_init_residual)
    outputs = build_head(features, num_classes=num_classes, embedding_size=embedding_size, pooling=pooling,
                         head=head, bn_momentum=bn_momentum)
    model = keras.Model(images, outputs, name=name)
    if weights is not None:
        # Imported here, not at the top: reading TF1 checkpoints needs TensorFlow, building a model not.
        from finegrain.models.weights import load_weights

        load_weights(model, weights)
    return model


def _walk_layers(model: keras.Model):
    return model._flatten_layers(include_self=False, recursive=True)


def set_dropblock_keep_prob(model: keras.Model, keep_prob: float) -> None:
    """Set the keep probability of every DropBlock layer (one shared variable; no retracing needed)."""
    if not 0.0 < float(keep_prob) <= 1.0:
        raise UserError(f"DropBlock keep probability must be in (0, 1], got {keep_prob}")
    variables = {id(layer.keep_prob): layer.keep_prob for layer in _walk_layers(model) if isinstance(layer, DropBlock)}
    if not variables:
        raise UserError(f"model {model.name!r} has no DropBlock layers; create it with dropblock=True")
    for variable in variables.values():
        variable.assign(float(keep_prob))


def get_dropblock_keep_prob(model: keras.Model) -> float | None:
    """The current DropBlock keep probability, or None when the model has no DropBlock."""
    for layer in _walk_layers(model):
        if isinstance(layer, DropBlock):
            return float(keras.ops.convert_to_numpy(layer.keep_prob))
    return None


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of the model, nested ones (Selective Kernel, heads) included."""
    return [layer for layer in _walk_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Set every BatchNorm's moving-average momentum. Call before the train step is traced."""
    if not 0.0 <= float(momentum) < 1.0:
        raise UserError(f"BatchNorm momentum must be in [0, 1), got {momentum}")
    for layer in batchnorm_layers(model):
        layer.momentum = float(momentum)

