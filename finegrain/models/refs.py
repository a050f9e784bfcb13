"""One resolver for every way of naming a model: a *model reference*.

A reference is one of
- a model directory: a finegrain run directory (or anything with a `model.json` card and weights),
- a SavedModel export (`saved_model.pb` with the `serving_default` and `embedding` signatures),
- a Keras weights file `NAME.weights.h5` (its card `NAME.json` beside it, else `arch` must be given),
- an official TF1 checkpoint: a directory with a `checkpoint` file or a `model.ckpt-N` prefix
  (the architecture is read off its variable names when `arch` is not given),
- `official:ARCH` (or `official` with `arch`): the released ImageNet weights in the weights directory,
- `keras:NAME` / `keras:NAME:WEIGHTS.h5`: a keras.applications ImageNet classifier (inference and
  distillation teachers only: its variables are not finegrain's).

`load_model` turns any of them into a `LoadedModel` (a forward function and the model card);
`build_model` makes a model shaped by a card and initialises it from any of them (fine-tuning).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from finegrain.errors import UserError, first_line
from finegrain.models import tf1
from finegrain.models.card import (
    BACKGROUND_HEAD_CLASSES,
    CARD_FILE,
    REFERENCE_HELP,
    WEIGHTS_FILE,
    ModelCard,
    label_offset_for,
    last_checkpoint,
    official_arch,
    read_card,
    write_card,
)
from finegrain.models.official import OFFICIAL_EVAL_PREPROCESSING, OFFICIAL_IMAGE_SIZE, official_weights
from finegrain.models.registry import create_model, model_entry
from finegrain.models.weights import copy_weights, is_keras_weights, load_weights, save_weights

KERAS_WEIGHTS_SUFFIX = ".weights.h5"

Forward = Callable[[Any], dict[str, Any]]  # float32 RGB 0..255 [B, H, W, 3] -> {"embedding", "logits"}


@dataclass
class LoadedModel:
    """A model ready for inference, whatever the reference was."""

    card: ModelCard
    forward: Forward  # float32 tensors out; softmax(card.logit_scale * logits) are probabilities
    variables: Mapping[str, Any]  # variable path -> variable, to initialise another model by path
    description: str
    keras_model: keras.Model | None = None  # None for a SavedModel


def model_outputs(model: keras.Model, images: Any) -> dict[str, Any]:
    """The model's embedding and logits in float32 (inference mode); the one forward pass of finegrain."""
    out = model(tf.cast(images, tf.float32), training=False)
    return {key: tf.cast(out[key], tf.float32) for key in ("embedding", "logits")}


def keras_forward(model: keras.Model) -> Forward:
    return tf.function(lambda images: model_outputs(model, images), reduce_retracing=True)


def card_beside(weights: Path) -> Path:
    """`NAME.weights.h5` -> `NAME.json` (so a run directory's `model.weights.h5` has `model.json`)."""
    name = weights.name[: -len(KERAS_WEIGHTS_SUFFIX)] if weights.name.endswith(KERAS_WEIGHTS_SUFFIX) else weights.stem
    return weights.with_name(name + ".json")


def _is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CARD_FILE).is_file() or (path / LEGACY_RECIPE).is_file())


def _is_tf1_checkpoint(path: Path) -> bool:
    return (path / "checkpoint").is_file() or Path(f"{path}.index").is_file() or path.name.endswith(".index")


# ---------------------------------------------------------------------------------------------
# Run directories written before model cards existed: the card is read off the recipe.

LEGACY_RECIPE, LEGACY_CLASSES = "recipe.yaml", "classes.json"


def _legacy_card(run_dir: Path) -> ModelCard:
    try:
        recipe = yaml.safe_load((run_dir / LEGACY_RECIPE).read_text()) or {}
        classes = json.loads((run_dir / LEGACY_CLASSES).read_text())
        model, data, train = recipe.get("model", {}), recipe.get("data", {}), recipe.get("train", {})
        head = model.get("head", "linear")
        return ModelCard(
            arch=model["arch"], num_classes=len(classes), embedding_size=model.get("embedding_size", 0),
            pooling=model.get("pooling", "avg"), head=head, image_size=data.get("image_size", 224),
            preprocessing=data.get("preprocessing", "imagenet"), class_names=tuple(classes),
            logit_scale=float(train.get("loss_scale", 30.0)) if head == "cosine" else 1.0,
            output="embedding" if recipe.get("task") == "retrieval" else "logits", source=f"run {run_dir}",
            dataset=data.get("source"), eval_split=data.get("eval_split"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError, AttributeError, KeyError, TypeError):
        raise UserError(f"{run_dir} is a damaged run directory: its {LEGACY_RECIPE} or {LEGACY_CLASSES} "
                        "cannot be read") from None


def _dir_card(path: Path) -> ModelCard:
    return read_card(path) if (path / CARD_FILE).is_file() else _legacy_card(path)


# ---------------------------------------------------------------------------------------------
# Loading


def _from_keras(model: keras.Model, card: ModelCard, description: str) -> LoadedModel:
    variables = {v.path: v for v in model.weights}
    return LoadedModel(card, keras_forward(model), variables, description, model)


def _load_model_dir(path: Path) -> LoadedModel:
    card = _dir_card(path)
    model = create_model(card.arch, **card.model_options())
    if (path / WEIGHTS_FILE).is_file():
        load_weights(model, path / WEIGHTS_FILE)
    else:
        ckpt = last_checkpoint(path)
        if ckpt is None:
            raise UserError(f"{path} holds neither final weights ({WEIGHTS_FILE}) nor a checkpoint yet")
        try:
            tf.train.Checkpoint(model=model).read(ckpt).expect_partial()
        except Exception as e:  # damaged files surface as OpError, ValueError, IndexError, ... from TF
            raise UserError(f"the last checkpoint of {path} cannot be read: {first_line(e)}") from None
    return _from_keras(model, card, f"run {path}")


def _load_saved_model(path: Path) -> LoadedModel:
    try:
        loaded = tf.saved_model.load(str(path))
    except (tf.errors.OpError, ValueError, OSError) as e:
        raise UserError(f"cannot load the SavedModel {path}: {first_line(e)}") from None
    missing = {"serving_default", "embedding"} - set(loaded.signatures)
    if missing:
        raise UserError(f"SavedModel {path} lacks the signature(s) {', '.join(sorted(missing))}: "
                        "it was not exported by finegrain")
    serve, embed = loaded.signatures["serving_default"], loaded.signatures["embedding"]
    if (path / CARD_FILE).is_file():
        card = read_card(path)
    elif _is_model_dir(path.parent):  # an export from before cards, inside its run directory
        card = _dir_card(path.parent)
    else:
        card = ModelCard(arch="unknown", image_size=None, preprocessing=None)
    # The export takes uint8 and gives probabilities with the training scale applied: its logits
    # for finegrain are their log, so that softmax gives them back (logit scale 1).
    card = dataclasses.replace(card, logit_scale=1.0, source=card.source or f"SavedModel {path}")

    def forward(images: Any) -> dict[str, Any]:
        as_uint8 = tf.cast(tf.clip_by_value(tf.round(images), 0, 255), tf.uint8)
        return {"embedding": embed(images=as_uint8)["embedding"],
                "logits": tf.math.log(serve(images=as_uint8)["probabilities"])}

    variables = dict(getattr(loaded, "model_variables", {}) or {})
    return LoadedModel(card, forward, variables, f"SavedModel {path}")


def _card_for_weights(path: Path, arch: str | None, num_classes: int | None) -> ModelCard:
    beside = card_beside(path)
    if beside.is_file():
        card = read_card(beside)
        if card.preprocessing is None:  # written by an import from before cards carried it
            card = _imagenet_card(card)
        return dataclasses.replace(card, source=card.source or str(path))
    if arch is None:
        raise UserError(f"{path} is a weights file without its card ({beside.name}): name its architecture "
                        "with --arch (see `finegrain models`)")
    model_entry(arch)
    return _imagenet_card(ModelCard(arch=arch, num_classes=num_classes or BACKGROUND_HEAD_CLASSES,
                                    image_size=None, preprocessing=None, source=str(path)))


def _imagenet_card(card: ModelCard) -> ModelCard:
    """A card for weights of unknown provenance: a 1001-way head is the original's ImageNet head, so its
    labels are offset by one and it is evaluated the way its architecture's release was scored."""
    if card.num_classes != BACKGROUND_HEAD_CLASSES or card.embedding_size:
        return card
    preprocessing = OFFICIAL_EVAL_PREPROCESSING.get(card.arch)
    return dataclasses.replace(card, label_offset=label_offset_for(card.num_classes), dataset="imagenet",
                               image_size=OFFICIAL_IMAGE_SIZE if preprocessing else None,
                               preprocessing=preprocessing)


def _card_for_tf1(path: Path, arch: str | None, *, require_classifier: bool = False) -> ModelCard:
    prefix = tf1.resolve_checkpoint(path)
    shapes = tf1.read_variable_shapes(prefix)  # read once: architecture and head both come from it
    arch = arch or tf1.guess_arch(shapes)
    if arch is None:
        raise UserError(f"cannot tell the architecture of TF1 checkpoint {path}: name it with --arch")
    model_entry(arch)
    num_classes, embedding_size = tf1.head_of(shapes)
    if require_classifier and num_classes is None:
        raise UserError(f"checkpoint {path} has no classifier (resnet_model/dense/*): not an official one")
    return _imagenet_card(ModelCard(arch=arch, num_classes=num_classes or BACKGROUND_HEAD_CLASSES,
                                    embedding_size=embedding_size, image_size=None, preprocessing=None,
                                    source=f"TF1 checkpoint {prefix}"))


def _resolve_path(ref: str | os.PathLike, arch: str | None) -> tuple[Path, str | None]:
    """The file-system path of a reference (official:ARCH looked up) and the architecture it implies."""
    official = official_arch(str(ref))
    if official is not None:
        arch = official or arch
        if not arch:
            raise UserError("'official' needs an architecture: write official:ARCH, e.g. official:assemble_resnet50")
        model_entry(arch)
        return Path(official_weights(arch)), arch
    path = Path(ref).expanduser()
    if not (path.exists() or Path(f"{path}.index").exists()):
        raise UserError(f"model {ref} does not exist: give {REFERENCE_HELP}")
    return path, arch


def reference_kind(path: Path) -> str:
    """'model_dir', 'saved_model', 'keras_weights' or 'tf1_checkpoint' (UserError for anything else)."""
    if _is_saved_model(path):
        return "saved_model"
    if _is_model_dir(path):
        return "model_dir"
    if is_keras_weights(path) and path.is_file():
        return "keras_weights"
    if _is_tf1_checkpoint(path):
        return "tf1_checkpoint"
    what = "an empty directory" if path.is_dir() and not any(path.iterdir()) else (
        "a directory" if path.is_dir() else "a file")
    raise UserError(f"{path} is {what} that holds no model: give {REFERENCE_HELP}")


# ---------------------------------------------------------------------------------------------
# keras.applications classifiers by name: teachers for distillation and reference points in `eval`.

KERAS_PREFIX = "keras:"


def _load_keras_application(ref: str) -> LoadedModel:
    """`keras:NAME` (ImageNet weights, which Keras downloads once into ~/.keras) or `keras:NAME:WEIGHTS.h5`
    (the same weights from a local file, for machines without internet): a 1000-way classifier."""
    name, _, weights = ref[len(KERAS_PREFIX):].partition(":")
    constructor = getattr(keras.applications, name, None)
    if not name or not callable(constructor):
        raise UserError(f"{ref}: keras.applications has no model {name!r} (e.g. keras:EfficientNetB7, keras:ResNet50)")
    if weights and not Path(weights).expanduser().is_file():
        raise UserError(f"{ref}: weights file {weights} does not exist")
    try:
        model = constructor(weights=str(Path(weights).expanduser()) if weights else "imagenet",
                            classifier_activation=None)
    except Exception as e:  # a failed download (offline) or a weights file of another model
        raise UserError(f"cannot load {ref}: {first_line(e)}; on a machine without internet download the "
                        f"weights elsewhere and give keras:{name}:WEIGHTS.h5") from None
    # Each application has its own input scaling (caffe-style BGR means, [-1, 1], or none): its module says.
    preprocess = importlib.import_module(constructor.__module__).preprocess_input
    # The embedding: the last global pooling's output (every application pools before its classifier).
    pooling = [layer for layer in model.layers if type(layer).__name__.startswith("Global")] or model.layers[-2:-1]
    features = keras.Model(model.inputs, [pooling[-1].output, model.outputs[0]])
    size = model.input_shape[1] or 224

    @tf.function(reduce_retracing=True)
    def forward(images: Any) -> dict[str, Any]:
        pooled, logits = features(preprocess(tf.cast(images, tf.float32)), training=False)
        return {"embedding": tf.cast(tf.reshape(pooled, [tf.shape(pooled)[0], -1]), tf.float32),
                "logits": tf.cast(logits, tf.float32)}

    card = ModelCard(arch=ref if not weights else f"{KERAS_PREFIX}{name}", num_classes=int(model.outputs[0].shape[-1]),
                     image_size=int(size), preprocessing="imagenet", dataset="imagenet",
                     source=f"keras.applications.{name}" + (f" ({weights})" if weights else " (ImageNet weights)"))
    return LoadedModel(card, forward, {v.path: v for v in model.weights}, card.source, None)


def load_model(ref: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None) -> LoadedModel:
    """Load any model reference for inference (see the module docstring).

    `arch` and `num_classes` are needed only for a weights file without its card (and `arch` for a
    TF1 checkpoint whose architecture cannot be read off its variables).
    """
    if str(ref).startswith(KERAS_PREFIX):
        return _load_keras_application(str(ref))
    path, arch = _resolve_path(ref, arch)
    kind = reference_kind(path)
    if kind == "model_dir":
        return _load_model_dir(path)
    if kind == "saved_model":
        return _load_saved_model(path)
    card = _card_for_weights(path, arch, num_classes) if kind == "keras_weights" else _card_for_tf1(path, arch)
    if official_arch(str(ref)) is not None:
        card = dataclasses.replace(card, source=f"official {card.arch} weights ({path})")
    model = create_model(card.arch, **card.model_options())
    load_weights(model, path)
    return _from_keras(model, card, card.source)


def build_model(card: ModelCard, init: str | os.PathLike | None, *, dropblock: bool = False,
                bn_momentum: float | None = None) -> tuple[keras.Model, list[str]]:
    """A new model shaped by `card`, initialised from the reference `init` (None: from scratch).

    Every weight comes from `init` by variable path (by TF1 name for official checkpoints) except
    head layers of another shape, which start fresh (a new class count); their names are returned.
    From scratch, residual blocks start as identities (zero-initialised last BatchNorm gamma).
    """
    options: dict[str, Any] = {**card.model_options(), "dropblock": dropblock}
    if bn_momentum is not None:
        options["bn_momentum"] = bn_momentum
    if init is None:
        return create_model(card.arch, zero_init_residual=True, **options), []
    if str(init).startswith(KERAS_PREFIX):
        raise UserError(f"{init} can teach (distill-targets) and be evaluated, but not initialise a finegrain "
                        "model: its variables are another architecture's")
    path, _ = _resolve_path(init, card.arch)
    kind = reference_kind(path)
    model = create_model(card.arch, **options)
    if kind in ("keras_weights", "tf1_checkpoint"):
        return model, load_weights(model, path, skip_mismatch=True)
    source = _load_model_dir(path) if kind == "model_dir" else _load_saved_model(path)
    return model, copy_weights(source.variables, model, where=source.description)


def import_checkpoint(checkpoint: str | os.PathLike, arch: str | None, out: str | os.PathLike, *,
                      overwrite: bool = False) -> tf1.LoadReport:
    """Convert an official TF1 checkpoint to a Keras weights file `NAME.weights.h5` plus its card
    `NAME.json`, atomically. Every variable, head included, must map; an existing `out` is kept
    unless `overwrite`."""
    out = Path(out)
    if not out.name.endswith(KERAS_WEIGHTS_SUFFIX):
        raise UserError(f"--out must end with {KERAS_WEIGHTS_SUFFIX} (Keras weights file), got {out}")
    if out.is_dir():
        raise UserError(f"--out {out} is a directory: give a file name ending with {KERAS_WEIGHTS_SUFFIX}")
    if out.exists() and not overwrite:
        raise UserError(f"{out} exists; pass --force to overwrite it")
    if arch is not None:
        model_entry(arch)  # unknown arch: fail before reading anything
    card = _card_for_tf1(Path(checkpoint).expanduser(), arch, require_classifier=True)
    model = create_model(card.arch, **card.model_options())
    report = tf1.load_tf1_checkpoint(model, checkpoint, head="require")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of --out {out}: {e.strerror or first_line(e)}") from None
    save_weights(model, out)
    write_card(card, card_beside(out))
    return report
