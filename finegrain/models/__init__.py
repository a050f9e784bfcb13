"""finegrain.models: the Assemble-ResNet family in Keras 3 (keras.ops only), model cards, and one
resolver for every kind of model reference.

Public surface (see ARCHITECTURE.md):
    create_model(name, *, num_classes=1001, embedding_size=0, pooling="avg"|"gem", head="linear"|"cosine",
                 dropblock=False, weights=None, input_shape=(None, None, 3)) -> keras.Model
    list_models(), register_model(name, description), model_entry(name)
    load_model(ref) -> LoadedModel (card, forward, variables);  build_model(card, init_ref) -> (model, fresh)
    ModelCard, read_card, write_card, REFERENCE_HELP
    set_dropblock_keep_prob(model, p), get_dropblock_keep_prob(model), set_bn_momentum(model, m),
    batchnorm_layers(model), replace_classifier(model, num_classes, head="linear"), load_weights(model, path)
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> submodule. Resolved on first access (PEP 562) rather than imported here, so that the
# TensorFlow-free submodules (`card`, `architectures`) can be read by the CLI at start-up without starting Keras.
_EXPORTS = {
    "REFERENCE_HELP": "card", "ModelCard": "card", "read_card": "card", "write_card": "card",
    "replace_classifier": "heads",
    "LoadedModel": "refs", "build_model": "refs", "load_model": "refs",
    "batchnorm_layers": "registry", "create_model": "registry", "get_dropblock_keep_prob": "registry",
    "list_models": "architectures", "model_entry": "architectures", "register_model": "architectures",
    "set_bn_momentum": "registry", "set_dropblock_keep_prob": "registry",
    "load_weights": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'finegrain.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"finegrain.models.{_EXPORTS[name]}"), name)
