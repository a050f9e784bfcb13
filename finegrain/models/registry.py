"""The model registry and the one factory, `create_model`.

A registered builder turns (images tensor, bn_momentum, keep_prob) into the final feature map; the
factory adds the fixed preprocessing, the head, DropBlock's shared keep-prob, and optional weights.
"""

from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass
from typing import Callable

import keras

from finegrain.errors import UserError
from finegrain.models import resnet
from finegrain.models.heads import build_head, check_head_options
from finegrain.models.layers import BN_MOMENTUM, DropBlock, Preprocess, new_keep_prob_variable
from finegrain.models.weights import load_weights

IMAGENET_CLASSES = 1001  # the official heads: index 0 is "background"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    build_features: Callable  # (images, *, bn_momentum, keep_prob) -> feature map
    has_official_weights: bool = True
    parameters: tuple[int, int] | None = None  # (trainable, non-trainable) at 1001 classes, if recorded


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, *, has_official_weights: bool = True,
                   parameters: tuple[int, int] | None = None) -> Callable:
    """Decorator: register `fn(images, *, bn_momentum, keep_prob) -> feature map` under `name`.

    `parameters`: the (trainable, non-trainable) counts at 1001 classes, so listing models needs no
    build (a test checks them against the built model).
    """

    def decorate(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelEntry(name, description, fn, has_official_weights, parameters)
        return fn

    return decorate


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry record of `name`; UserError listing the known names if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


def _spec_builder(spec: resnet.ResNetSpec) -> Callable:
    def build(images, *, bn_momentum: float, keep_prob, zero_init_residual: bool = False):
        return resnet.build_backbone(images, spec, bn_momentum=bn_momentum, keep_prob=keep_prob,
                                     zero_init_residual=zero_init_residual)[0]

    return build


register_model("resnet50", "ResNet-50 v1.5 (stride on the 3x3 conv)", parameters=(25_559_081, 53_120))(
    _spec_builder(resnet.RESNET50))
register_model("assemble_resnet50", "ResNet-50 + Big-Little (a2, b4) + Selective Kernel + anti-alias",
               parameters=(41_848_489, 77_312))(
    _spec_builder(resnet.ASSEMBLE_RESNET50))
register_model("assemble_resnet152", "blocks [5,12,30,3] + Big-Little (a1, b2) + Selective Kernel + anti-alias",
               parameters=(117_006_249, 249_600))(
    _spec_builder(resnet.ASSEMBLE_RESNET152))
register_model("assemble_resnet50_ir", "retrieval backbone: ResNet-50-D + Selective Kernel",
               has_official_weights=False, parameters=(38_793_097, 64_576))(_spec_builder(resnet.ASSEMBLE_RESNET50_IR))


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
    features = entry.build_features(Preprocess(name="preprocess")(images), bn_momentum=bn_momentum,
                                    keep_prob=keep_prob, zero_init_residual=zero_init_residual)
    outputs = build_head(features, num_classes=num_classes, embedding_size=embedding_size, pooling=pooling,
                         head=head, bn_momentum=bn_momentum)
    model = keras.Model(images, outputs, name=name)
    if weights is not None:
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


def parameter_counts(name: str, num_classes: int = IMAGENET_CLASSES, *, build: bool = False) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts of a registered model: the recorded ones at 1001
    classes, else (or with `build`) counted on a built model (seconds for R152)."""
    recorded = model_entry(name).parameters
    if recorded is not None and num_classes == IMAGENET_CLASSES and not build:
        return recorded
    model = create_model(name, num_classes=num_classes)
    count = lambda weights: sum(math.prod(w.shape) for w in weights)  # noqa: E731
    counts = count(model.trainable_weights), count(model.non_trainable_weights)
    del model
    gc.collect()  # free R152's half a gigabyte before the next model is built
    return counts
