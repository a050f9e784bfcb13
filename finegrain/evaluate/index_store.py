"""The files of an index directory, and the chunk files a build keeps while it embeds.

An index directory:
    index.faiss   the FAISS index (inner product on L2-normalised embeddings)
    items.json    {"ids": [identity of each row: its file path, or DATASET:SPLIT#i], "class_names": [...]}
    labels.npy    int64 [N]: the class of each row (index into class_names)
    index.json    the protocol card, the index type and search parameters, the build's parity check

It is written whole into a temporary directory and renamed into place; replacing an index (--force,
`index add`) renames the old one aside first and deletes it only once the new one is in place.

While a build embeds, complete chunks of embeddings go to a work directory beside the index
(`.NAME.partial/`): `plan.json` (what is being built) and `chunk-00000.npz`, ... each written
atomically, so a killed build, started again with the same plan, continues after the last chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from finegrain.errors import UserError
from finegrain.utils.io import atomic_dir, atomic_path, atomic_write_json

INDEX_FILE, ITEMS_FILE, LABELS_FILE, CARD_FILE = "index.faiss", "items.json", "labels.npy", "index.json"
FORMAT = 1
_CHUNK = "chunk-{:05d}.npz"


@dataclass
class StoredIndex:
    """An index directory read into memory."""

    directory: Path
    index: faiss.Index
    ids: list[str]
    labels: np.ndarray
    class_names: list[str]
    card: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.index.ntotal)


def is_index(directory: str | os.PathLike) -> bool:
    return (Path(directory) / CARD_FILE).is_file() and (Path(directory) / INDEX_FILE).is_file()


def require_index(directory: str | os.PathLike) -> Path:
    """`directory` (expanded) if it holds an index; UserError when it does not."""
    directory = Path(directory).expanduser()
    if not is_index(directory):
        raise UserError(f"{directory} is not an index (no {CARD_FILE} and {INDEX_FILE}): build one with "
                        "`finegrain index build`")
    return directory


def read_index(directory: str | os.PathLike) -> StoredIndex:
    """Read an index directory; UserError when it is not one, or is damaged."""
    directory = require_index(directory)
    try:
        card = json.loads((directory / CARD_FILE).read_text())
        items = json.loads((directory / ITEMS_FILE).read_text())
        labels = np.load(directory / LABELS_FILE, allow_pickle=False)
        index = faiss.read_index(str(directory / INDEX_FILE))
    except (OSError, ValueError, RuntimeError, UnicodeDecodeError) as e:
        raise UserError(f"the index {directory} is damaged ({type(e).__name__}): build it again") from None
    if not (len(items.get("ids", ())) == labels.shape[0] == index.ntotal) or card.get("format") != FORMAT:
        raise UserError(f"the index {directory} is damaged (its ids, labels and vectors disagree): build it again")
    return StoredIndex(directory, index, list(items["ids"]), labels.astype(np.int64), list(items["class_names"]), card)


def write_index(directory: str | os.PathLike, stored_index: faiss.Index, ids: list[str], labels: np.ndarray,
                class_names: list[str], card: dict[str, Any], *, replace: bool = False) -> Path:
    """Write an index directory whole; an existing one only with `replace` (then swapped in)."""
    directory = Path(directory).expanduser()
    if directory.exists() and not replace:
        raise UserError(f"{directory} exists; pass --force to replace it")
    if directory.exists() and not (directory.is_dir() and (is_index(directory) or not any(directory.iterdir()))):
        raise UserError(f"{directory} exists and is not an index: choose another --out")
    replacing = directory.exists()
    target = directory.with_name(f".{directory.name}.new") if replacing else directory
    if replacing:
        shutil.rmtree(target, ignore_errors=True)  # left by a swap that was killed
    with atomic_dir(target) as tmp:
        faiss.write_index(stored_index, str(tmp / INDEX_FILE))
        (tmp / ITEMS_FILE).write_text(json.dumps({"ids": ids, "class_names": class_names}))
        np.save(tmp / LABELS_FILE, np.asarray(labels, np.int64))
        atomic_write_json(tmp / CARD_FILE, {**card, "format": FORMAT})
        for name in (INDEX_FILE, ITEMS_FILE, LABELS_FILE):
            _fsync(tmp / name)
    if replacing:  # swap: the old index is removed only once the new one is complete
        old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.old-"))
        os.rename(directory, old / "index")
        os.rename(target, directory)
        shutil.rmtree(old, ignore_errors=True)
    return directory


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class ChunkStore:
    """Complete chunks of embeddings of one build, in a work directory beside the index."""

    def __init__(self, directory: Path, plan: dict[str, Any], chunk_size: int) -> None:
        self.directory, self.plan, self.chunk_size = directory, plan, chunk_size

    @classmethod
    def open(cls, directory: str | os.PathLike, plan: dict[str, Any], *, restart: bool) -> ChunkStore:
        """The work directory for `plan` (its chunk size under "chunk_size"): kept if it was made for the
        same plan, else an error (or, with `restart`, emptied)."""
        directory = Path(directory)
        plan_file = directory / "plan.json"
        if directory.exists() and not restart:
            try:
                same = json.loads(plan_file.read_text()) == json.loads(json.dumps(plan))
            except (OSError, ValueError):
                same = False
            if not same:
                raise UserError(f"{directory} holds a partial build of another model, data or setting: pass --force "
                                "to discard it, or run the same command as before to continue it")
        if restart:
            shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            directory.mkdir(parents=True)
            atomic_write_json(plan_file, plan)
        return cls(directory, plan, int(plan["chunk_size"]))

    def chunks_done(self) -> int:
        """Complete chunks, counted from 0 without a gap."""
        done = 0
        while (self.directory / _CHUNK.format(done)).is_file():
            done += 1
        return done

    def write(self, number: int, embeddings: np.ndarray, labels: np.ndarray) -> None:
        with atomic_path(self.directory / _CHUNK.format(number)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, embeddings=embeddings.astype(np.float32), labels=labels.astype(np.int64))

    def read(self, number: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(self.directory / _CHUNK.format(number), allow_pickle=False) as z:
                return z["embeddings"], z["labels"]
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"chunk {number} in {self.directory} is damaged ({type(e).__name__}): pass --force "
                            "to start the build over") from None

    def embeddings(self) -> Iterator[np.ndarray]:
        for number in range(self.chunks_done()):
            yield self.read(number)[0]

    def labels(self) -> np.ndarray:
        return np.concatenate([np.zeros(0, np.int64), *(self.read(i)[1] for i in range(self.chunks_done()))])

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def work_directory(index_directory: str | os.PathLike, purpose: str = "partial") -> Path:
    """Where a build (or an `add`) of `index_directory` keeps its chunks: a hidden sibling."""
    path = Path(index_directory).expanduser()
    return path.with_name(f".{path.name}.{purpose}")
