"""What several command modules share: the model-reference options and loading, small checks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

from finegrain.errors import UserError
from finegrain.models.card import REFERENCE_HELP

MODEL_HELP = f"The model: {REFERENCE_HELP}."
ARCH_HELP = "Architecture of a weights file without its card, or of a TF1 checkpoint it cannot be read from."
NUM_CLASSES_HELP = "Classifier size of a weights file without its card (1001 for the official heads)."


def positive(value: Optional[int], option: str, allow_zero: bool = False) -> None:
    if value is not None and (value < 0 or (value == 0 and not allow_zero)):
        raise UserError(f"{option} must be {'0 or more' if allow_zero else 'a positive integer'}, got {value}")


def load_reference(model: Path, arch: Optional[str], num_classes: Optional[int]) -> Any:
    from finegrain.models import load_model

    return load_model(model, arch=arch, num_classes=num_classes)


def no_nan(obj: Any) -> Any:
    """JSON has no NaN: undefined figures become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [no_nan(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(no_nan(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def images_source(dataset: Optional[str], data: Optional[Path], model_dataset: Optional[str], others: str = "") -> str:
    """The images a command runs on: --dataset NAME or --data FOLDER, else the data set the model was
    trained on (its card's). `others`: the command's further options for the message, e.g. ", --imagenet-c DIR"."""
    if dataset and data:
        raise UserError("give either --dataset NAME or --data FOLDER, not both")
    if data is not None and not data.is_dir():
        raise UserError(f"--data {data} is not a folder of class sub-folders")
    source = str(data) if data is not None else dataset or model_dataset
    if source is None:
        raise UserError(f"name the images: --dataset NAME (e.g. cub200), --data FOLDER{others} "
                        "(a run directory knows its own data set)")
    return source

