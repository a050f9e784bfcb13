"""finegrain.models: the Assemble-ResNet family in Keras 3 (keras.ops only) and official-weights import.

Public surface (see ARCHITECTURE.md):
    create_model(name, *, num_classes=1001, embedding_size=0, pooling="avg"|"gem", head="linear"|"cosine",
                 dropblock=False, weights=None, input_shape=(None, None, 3)) -> keras.Model
    list_models(), register_model(name, description), load_weights(model, path),
    set_dropblock_keep_prob(model, p), get_dropblock_keep_prob(model), set_bn_momentum(model, m),
    batchnorm_layers(model),
    replace_classifier(model, num_classes, head="linear")
    finegrain.models.tf1.load_tf1_checkpoint(model, path)  (imports TensorFlow)
"""

from finegrain.models.heads import replace_classifier
from finegrain.models.registry import (
    batchnorm_layers,
    create_model,
    get_dropblock_keep_prob,
    list_models,
    load_weights,
    model_entry,
    register_model,
    set_bn_momentum,
    set_dropblock_keep_prob,
)

__all__ = [
    "batchnorm_layers",
    "create_model",
    "get_dropblock_keep_prob",
    "list_models",
    "load_weights",
    "model_entry",
    "register_model",
    "replace_classifier",
    "set_bn_momentum",
    "set_dropblock_keep_prob",
]
