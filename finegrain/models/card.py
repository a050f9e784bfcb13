"""The model card: what a saved model is and how to use it, in one small JSON beside its weights.

No TensorFlow here: the CLI reads these names and help texts at start-up.

Like a KerasHub preset's config or timm's pretrained config, the card answers every question the
rest of finegrain asks about a model without reading a recipe or building an engine: which
architecture and head to build, the image size and eval preprocessing it was trained for, its class
names (in logit order), the softmax scale of its logits, and which output evaluation reads.

A *model directory* is a card (`model.json`) plus weights: final Keras weights (`model.weights.h5`),
or else a `tf.train.Checkpoint` holding `model=` named by `checkpoints/state.json` (a run still
training). A finegrain run directory and a SavedModel export are both model directories.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finegrain.errors import UserError
from finegrain.utils.io import atomic_write_json

#: The same words for every command that takes a model reference (--model, model.init).
REFERENCE_HELP = ("a run directory, a SavedModel export, a .weights.h5 file, an official TF1 checkpoint "
                  "(directory or model.ckpt-N prefix), official:ARCH, or keras:NAME (a keras.applications "
                  "ImageNet classifier)")
CARD_FILE = "model.json"
WEIGHTS_FILE = "model.weights.h5"
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE = "state.json"
OUTPUTS = ("logits", "embedding")


#: The released ImageNet checkpoints have 1001-way heads whose index 0 is "background".
BACKGROUND_HEAD_CLASSES = 1001


def label_offset_for(num_classes: int) -> int:
    """Logit index of class 0 for a head of `num_classes`: 1 for a 1001-way (background) head, else 0."""
    return 1 if num_classes == BACKGROUND_HEAD_CLASSES else 0


@dataclass(frozen=True)
class ModelCard:
    arch: str
    num_classes: int = 1001
    embedding_size: int = 0
    pooling: str = "avg"
    head: str = "linear"
    image_size: int | None = None  # the training crop size, eval's too; None = not known (224)
    preprocessing: str | None = None  # eval preprocessing type; None = not known (the data set's default)
    class_names: tuple[str, ...] | None = None  # in logit order, when known
    logit_scale: float = 1.0  # softmax(logit_scale * logits) are the class probabilities
    output: str = "logits"  # what evaluation reads: "logits" (classification) or "embedding" (retrieval)
    source: str = ""  # where the weights came from, for people
    dataset: str | None = None  # the data set (catalog name or folder) a run trained on
    eval_split: str | None = None  # and the split it was evaluated on: what `eval --model RUN` uses
    label_offset: int = 0  # logit index of a data set's class 0: 1 for the official ImageNet heads (0 = background)

    def model_options(self) -> dict[str, Any]:
        """The keyword arguments of `create_model` that shape this model's head."""
        return {"num_classes": self.num_classes, "embedding_size": self.embedding_size, "pooling": self.pooling,
                "head": self.head}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "model card") -> ModelCard:
        """Validate plain data into a card; unknown keys (a newer finegrain's) are ignored."""
        if not isinstance(values, dict) or not isinstance(values.get("arch"), str):
            raise UserError(f"{where} is damaged: it needs at least an 'arch' name")
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        if "label_offset" not in kept:  # a card from before label offsets: a 1001-way head is the original's
            kept["label_offset"] = label_offset_for(kept.get("num_classes", BACKGROUND_HEAD_CLASSES))
        if kept.get("class_names") is not None:
            kept["class_names"] = tuple(str(c) for c in kept["class_names"])
        try:
            card = cls(**kept)
        except TypeError as e:
            raise UserError(f"{where} is damaged: {e}") from None
        if card.output not in OUTPUTS:
            raise UserError(f"{where} is damaged: output must be one of {', '.join(OUTPUTS)}")
        if not isinstance(card.label_offset, int) or not 0 <= card.label_offset < card.num_classes:
            raise UserError(f"{where} is damaged: label_offset must be an integer in [0, num_classes)")
        return card


def _card_path(where: str | os.PathLike) -> Path:
    path = Path(where)
    return path / CARD_FILE if path.is_dir() else path


def write_card(card: ModelCard, where: str | os.PathLike) -> Path:
    """Write the card atomically to `where` (a JSON file, or a directory's model.json)."""
    path = _card_path(where)
    atomic_write_json(path, card.to_dict())
    return path


def read_card(where: str | os.PathLike) -> ModelCard:
    """The card in `where` (a JSON file, or a directory's model.json); UserError if damaged."""
    path = _card_path(where)
    try:
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the model card {path}: {type(e).__name__}; restore it from a copy") from None
    return ModelCard.from_dict(values, where=f"model card {path}")


def official_arch(ref: str) -> str | None:
    """The reference 'official:ARCH' -> 'ARCH'; 'official' -> ''; anything else -> None."""
    text = str(ref)
    if text == "official":
        return ""
    return text.split(":", 1)[1] if text.startswith("official:") else None


def last_checkpoint(directory: str | os.PathLike) -> str | None:
    """The `tf.train.Checkpoint` prefix that `checkpoints/state.json` names as the last, if any."""
    state_file = Path(directory) / CHECKPOINTS_DIR / CHECKPOINT_STATE
    if not state_file.is_file():
        return None
    try:
        last = json.loads(state_file.read_text()).get("last") or {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise UserError(f"{state_file} is damaged (not the JSON finegrain writes)") from None
    name = last.get("name") if isinstance(last, dict) else None
    return str(Path(directory) / CHECKPOINTS_DIR / name / "ckpt") if name else None
