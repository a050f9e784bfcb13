"""Where the released ImageNet weights live on this machine (`model.init: official` in recipes).

The original authors publish their TF1 checkpoints only in a Google Drive folder, which cannot be
downloaded unattended; users put them under one directory and finegrain finds them by model name.
"""

from __future__ import annotations

import os
from pathlib import Path

from finegrain.errors import UserError

WEIGHTS_DIR_ENV = "FINEGRAIN_WEIGHTS_DIR"
DEFAULT_WEIGHTS_DIR = "~/finegrain_weights"
RELEASE_PAGE = "https://drive.google.com/drive/folders/1o8vj8_ZOPByjRKZzRPZMbuoKyxIwd_IZ"


#: The eval preprocessing each released checkpoint was scored with on ImageNet (training size 224).
#: A 1001-way head of these architectures gets it in its card, so `eval` needs no flags.
OFFICIAL_EVAL_PREPROCESSING = {
    "resnet50": "imagenet",  # short side 256, centre crop 224
    "assemble_resnet50": "imagenet_224_256",  # short side 292, centre crop 256
    "assemble_resnet152": "imagenet_224_256a",  # short side 257, centre crop 256
}
OFFICIAL_IMAGE_SIZE = 224


def weights_dir() -> Path:
    """`$FINEGRAIN_WEIGHTS_DIR` if set, else `~/finegrain_weights`."""
    return Path(os.environ.get(WEIGHTS_DIR_ENV) or DEFAULT_WEIGHTS_DIR).expanduser()


def official_weights(arch: str) -> str:
    """The official weights of `arch`: `<dir>/<arch>.weights.h5` (from `finegrain weights import`) or a
    TF1 checkpoint directory `<dir>/<arch>/` (holding the `checkpoint` file), in that order."""
    root = weights_dir()
    keras_file, tf1_dir = root / f"{arch}.weights.h5", root / arch
    if keras_file.is_file():
        return str(keras_file)
    if (tf1_dir / "checkpoint").is_file():
        return str(tf1_dir)
    raise UserError(
        f"official ImageNet weights for {arch} not found: download the checkpoint from {RELEASE_PAGE} and "
        f"unpack it as {tf1_dir}/ (or run `finegrain weights import CKPT --arch {arch} --out {keras_file}`); "
        f"set {WEIGHTS_DIR_ENV} to look elsewhere, or --set model.init=PATH / model.init=null (from scratch)"
    )
