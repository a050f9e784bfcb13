"""The protocol card: everything a retrieval figure depends on, written beside it.

Published retrieval numbers are hard to compare because the model's weights, the image size, the
eval preprocessing, test-time augmentation, the similarity and exactly which images were queries and
gallery are left out. Every retrieval result of finegrain (`retrieval-eval --json`, an index's
`index.json`) carries this card. A set of images is identified by its source, split, count and the
SHA-256 of its item list (identities and labels, in order): change one file and the hash changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finegrain import __version__
from finegrain.data import Split
from finegrain.models import ModelCard
from finegrain.models.card import CARD_FILE, WEIGHTS_FILE, last_checkpoint, official_arch
from finegrain.models.official import official_weights
from finegrain.models.refs import reference_kind
from finegrain.models.tf1 import resolve_checkpoint

_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class ItemSet:
    """A set of images (or embedding rows) as evaluation sees it: who they are, and their labels."""

    source: str  # a folder path, a catalog name, or a .npy file
    split: str | None
    ids: list[str]  # identity of each item: its real file path, DATASET:SPLIT#i for tfds, FILE.npy#i for arrays
    labels: np.ndarray  # int64 [N]
    class_names: list[str] | None = None

    def identity(self) -> dict[str, Any]:
        return {"source": self.source, "split": self.split, "count": len(self.ids),
                "items_sha256": items_hash(self.ids, self.labels)}


def split_items(split: Split, source: str) -> ItemSet:
    """The identities of a split's images in data-set order (see `ItemSet.ids`); labels filled in later
    by whoever embeds it (they come with the images)."""
    if split.paths is not None:
        ids = [os.path.realpath(p) for p in split.paths]  # the same file however the folder was named
    else:
        ids = [f"{split.info.name}:{split.name}#{i}" for i in range(split.num_examples)]
    return ItemSet(source, split.name, ids, np.zeros(0, np.int64), list(split.class_names))


def array_items(path: str | os.PathLike, labels: np.ndarray) -> ItemSet:
    """Rows of a .npy embeddings file: FILE#row (the same file as query and gallery excludes by row)."""
    where = os.path.realpath(path)
    return ItemSet(str(path), None, [f"{where}#{i}" for i in range(len(labels))], np.asarray(labels, np.int64))


def items_hash(ids: Sequence[str], labels: np.ndarray) -> str:
    """SHA-256 of the item list: identities and labels, in order."""
    digest = hashlib.sha256()
    for item, label in zip(ids, np.asarray(labels).tolist()):
        digest.update(os.fsencode(item) + b"\t" + str(label).encode() + b"\n")
    return digest.hexdigest()


def weights_files(reference: str | os.PathLike) -> list[Path]:
    """The files that hold a model reference's weights (what `weights_hash` reads)."""
    arch = official_arch(str(reference))
    path = Path(official_weights(arch)) if arch else Path(reference).expanduser()
    kind = reference_kind(path)
    if kind == "saved_model":
        return sorted(p for p in (path / "variables").glob("*") if p.is_file())
    if kind == "model_dir":
        if (path / WEIGHTS_FILE).is_file():
            return [path / WEIGHTS_FILE]
        prefix = last_checkpoint(path)
        return sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")) if prefix else [path / CARD_FILE]
    if kind == "tf1_checkpoint":
        prefix = Path(resolve_checkpoint(path))
        return sorted(p for p in prefix.parent.glob(prefix.name + ".*") if ".data-" in p.name or p.suffix == ".index")
    return [path]


def weights_hash(reference: str | os.PathLike) -> str:
    """SHA-256 over the weight files of a reference (names and contents, in name order)."""
    digest = hashlib.sha256()
    for file in weights_files(reference):
        digest.update(file.name.encode() + b"\n")
        with open(file, "rb") as f:
            while block := f.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def model_identity(reference: str | os.PathLike, card: ModelCard) -> dict[str, Any]:
    """The model part of the card: reference, weights hash, and the card fields retrieval depends on."""
    return {"reference": str(reference), "weights_sha256": weights_hash(reference), "arch": card.arch,
            "pooling": card.pooling, "embedding_size": card.embedding_size, "head": card.head,
            "source": card.source}


def protocol_card(*, model: dict[str, Any] | None, image_size: int | None, preprocessing: str | None,
                  tta: str, metric: str, ks: Sequence[int] | None, query: ItemSet | None, gallery: ItemSet,
                  definitions: dict[str, str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The card (a plain dict for JSON). `model` None: embeddings given as arrays (no model known);
    `query` None: the query set is the gallery."""
    return {
        "model": model,
        "embedding": {"image_size": image_size, "preprocessing": preprocessing, "tta": tta,
                      "normalised": metric == "cosine"},
        "similarity": metric,
        "recall_ks": list(ks) if ks is not None else None,
        "query": query.identity() if query is not None else "the gallery (each query excluded from its own results)",
        "gallery": gallery.identity(),
        "definitions": definitions,
        "finegrain_version": __version__,
        **(extra or {}),
    }
