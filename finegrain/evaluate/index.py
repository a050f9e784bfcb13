"""Retrieval as a product: embed a gallery once into an index directory, then search it with photos.

`build_index` embeds every image of a split with the model's own eval preprocessing (optionally with
test-time flip), chunk by chunk into a resumable work directory (`index_store.ChunkStore`), then
writes the FAISS index (`index_faiss`), the item identities and labels, and the protocol card
(`protocol`) as one directory. `add_to_index` appends images embedded the same way, with the same
model (its weights hash is checked). `search_index` returns the nearest stored items of query
embeddings; `embed_files` (inference) makes those from photos.

Parity: when a SavedModel export of the model is named, the first few gallery images are embedded by
the export too (it takes uint8 images, so they are rounded first) and compared with what the index
stores; a served model and its index cannot silently disagree.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from finegrain.data import Split, pipeline
from finegrain.errors import UserError
from finegrain.evaluate import index_faiss
from finegrain.evaluate.index_store import ChunkStore, StoredIndex, read_index, require_index, work_directory, write_index
from finegrain.evaluate.inference import check_tta, eval_settings, iter_outputs, l2_normalize
from finegrain.evaluate.metrics import SEPARATE_DEFINITIONS
from finegrain.evaluate.protocol import ItemSet, model_identity, protocol_card, split_items
from finegrain.models.refs import LoadedModel, load_model
from finegrain.utils.io import exclusive_lock

DEFAULT_CHUNK_SIZE = 4096
PARITY_IMAGES = 8
PARITY_MIN_COSINE = 0.999  # the export sees the images rounded to uint8: a little below 1 is expected
RECALL_SAMPLE = 1000

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EmbedSettings:
    """How images become the index's vectors: the same for the gallery, added images and queries."""

    image_size: int
    preprocessing: str
    tta: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_for(loaded: LoadedModel, split: Split, image_size: int | None = None,
                 preprocessing: str | None = None, tta: str | None = None) -> EmbedSettings:
    size, pre = eval_settings(loaded.card, split, "embedding", image_size, preprocessing)
    return EmbedSettings(size, pre, check_tta(tta))


def _subset(split: Split, keep: np.ndarray | None = None, start: int = 0, count: int | None = None) -> Split:
    """`split` restricted to the items where `keep` is true, then from `start`, at most `count` of them."""
    ds, n = split.dataset, split.num_examples
    if keep is not None:
        flags = tf.data.Dataset.from_tensor_slices(tf.constant(keep))
        ds = tf.data.Dataset.zip(ds, flags).filter(lambda item, flag: flag).map(lambda item, flag: item)
        n = int(np.count_nonzero(keep))
    ds, n = ds.skip(start), max(0, n - start)
    if count is not None:
        ds, n = ds.take(count), min(n, count)
    return dataclasses.replace(split, dataset=ds, num_examples=n)


def embed_into_chunks(loaded: LoadedModel, split: Split, settings: EmbedSettings, store: ChunkStore, *,
                      batch_size: int = 64, progress: Progress | None = None,
                      on_chunk: Callable[[int], None] | None = None) -> None:
    """Embed the split's images that the store does not hold yet into chunk files (L2-normalised)."""
    size = store.chunk_size
    number = store.chunks_done()
    total = split.num_examples
    done = min(number * size, total)
    if progress is not None:
        progress(done, total)
    if done >= total:
        return
    rest = _subset(split, start=done)
    batches = pipeline.eval_batches(rest, image_size=settings.image_size, preprocessing=settings.preprocessing,
                                    batch_size=batch_size)
    vectors: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    held = 0

    def flush(rows: int) -> None:
        nonlocal number, vectors, labels, held
        x, y = np.concatenate(vectors), np.concatenate(labels)
        store.write(number, l2_normalize(x[:rows]), y[:rows])
        vectors, labels, held = [x[rows:]], [y[rows:]], held - rows
        number += 1
        if on_chunk is not None:
            on_chunk(number)

    for out, batch_labels in iter_outputs(loaded.forward, batches, keys=("embedding",), tta=settings.tta):
        vectors.append(out["embedding"])
        labels.append(batch_labels)
        held += len(batch_labels)
        done += len(batch_labels)
        while held >= size:
            flush(size)
        if progress is not None:
            progress(done, total)
    if held:
        flush(held)
    if done != total:
        raise UserError(f"{total - done} image(s) of {split.info.name}/{split.name} could not be decoded while "
                        "embedding: remove them and build again")


def export_parity(export: str | os.PathLike, split: Split, settings: EmbedSettings,
                  count: int = PARITY_IMAGES) -> np.ndarray:
    """Embeddings of the first `count` images of `split` by a SavedModel export (L2-normalised)."""
    served = load_model(export)
    first = _subset(split, count=count)
    batches = pipeline.eval_batches(first, image_size=settings.image_size, preprocessing=settings.preprocessing,
                                    batch_size=count)
    rows = [out["embedding"] for out, _ in iter_outputs(served.forward, batches, keys=("embedding",), tta=settings.tta)]
    return l2_normalize(np.concatenate(rows))


def compare_parity(stored: np.ndarray, served: np.ndarray, export: str | os.PathLike) -> dict[str, Any]:
    """The parity record; UserError when the export's embeddings are not the stored ones."""
    if stored.shape != served.shape:
        raise UserError(f"the export {export} gives {served.shape[1]}-d embeddings but the model gives "
                        f"{stored.shape[1]}-d: export this model again")
    cosine = (stored * served).sum(axis=1)
    record = {"export": str(export), "images": int(len(stored)), "min_cosine": float(cosine.min()),
              "max_abs_diff": float(np.abs(stored - served).max()), "threshold": PARITY_MIN_COSINE}
    if cosine.min() < PARITY_MIN_COSINE:
        raise UserError(f"the export {export} does not give the embeddings this index stores (cosine "
                        f"{cosine.min():.4f} < {PARITY_MIN_COSINE}): export the model again, or build from the export")
    return record


def _faiss_from_chunks(store: ChunkStore, count: int, factory_string: str, dim: int, sample: np.ndarray) -> Any:
    """A FAISS index of every chunk's vectors, trained (if needed) on the rows `sample`."""

    def training() -> np.ndarray:
        return _rows(store, sample)

    index = index_faiss.new_index(factory_string, dim, training)
    for chunk in store.embeddings():
        index.add(np.ascontiguousarray(chunk))
    assert index.ntotal == count
    return index


def _rows(store: ChunkStore, rows: np.ndarray) -> np.ndarray:
    """Stored vectors at `rows` (sorted), read chunk by chunk."""
    picked, offset = [], 0
    for chunk in store.embeddings():
        here = rows[(rows >= offset) & (rows < offset + len(chunk))] - offset
        picked.append(chunk[here])
        offset += len(chunk)
    return np.concatenate(picked)


def approximate_recall(index: Any, store: ChunkStore, count: int, sample_size: int = RECALL_SAMPLE) -> float:
    """Recall@10 of `index` against exact search, on `sample_size` stored vectors used as queries."""
    rows = index_faiss.sample_rows(count, sample_size)
    queries = _rows(store, rows)
    k = min(index_faiss.RECALL_K + 1, count)
    exact = index_faiss.exact_neighbours(store.embeddings(), queries, k)
    return index_faiss.recall_against_exact(index, queries, rows, exact, k - 1)


def build_index(
    out: str | os.PathLike,
    loaded: LoadedModel,
    model_reference: str,
    split: Split,
    source: str,
    *,
    index_type: str = "flat",
    settings: EmbedSettings,
    export: str | os.PathLike | None = None,
    force: bool = False,
    batch_size: int = 64,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed `split` with `loaded` and write the index directory `out` (see the module docstring).

    Resumes a killed build of the same plan from its chunk files. Returns the index card.
    """
    out = Path(out).expanduser()
    kind = index_faiss.check_type(index_type)
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be a positive integer, got {chunk_size}")
    with _one_writer(out):
        if out.exists() and not force:
            raise UserError(f"{out} exists; pass --force to replace it")
        items = split_items(split, source)
        model = model_identity(model_reference, loaded.card)
        plan = {"model": model, "gallery": {"source": source, "split": split.name, "count": len(items.ids),
                "ids_sha256": items.identity()["items_sha256"]}, "settings": settings.to_dict(),
                "chunk_size": chunk_size}
        store = ChunkStore.open(work_directory(out), plan, restart=force)
        served = export_parity(export, split, settings) if export is not None else None
        embed_into_chunks(loaded, split, settings, store, batch_size=batch_size, progress=progress, on_chunk=on_chunk)

        labels = store.labels()
        first = store.read(0)[0]
        dim = first.shape[1]
        if served is not None:
            parity = compare_parity(first[: len(served)], served, export)
        elif loaded.keras_model is None:
            parity = {"export": None, "note": "embedded by a SavedModel export itself: what serves is what indexed"}
        else:
            parity = {"export": None, "note": "no SavedModel export named: parity not checked"}
        factory_string, parameters = index_faiss.factory(index_type, len(labels))
        sample = index_faiss.sample_rows(len(labels), index_faiss.training_rows(index_type, len(labels)))
        index = _faiss_from_chunks(store, len(labels), factory_string, dim, sample)
        index_faiss.set_search_parameters(index, parameters)
        recall = approximate_recall(index, store, len(labels)) if kind.approximate and len(labels) > 1 else None
        gallery = dataclasses.replace(items, labels=labels)
        card = index_card(model, settings, gallery, dim, index_type, factory_string, parameters, recall, parity)
        write_index(out, index, gallery.ids, labels, items.class_names or [], card, replace=force)
        store.remove()
        return card


def index_card(model: dict[str, Any], settings: EmbedSettings, gallery: ItemSet, dim: int, index_type: str,
               factory_string: str, parameters: str, recall: float | None, parity: dict[str, Any],
               added: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return protocol_card(
        model=model, image_size=settings.image_size, preprocessing=settings.preprocessing, tta=settings.tta,
        metric="cosine", ks=None, query=None, gallery=gallery, definitions=dict(SEPARATE_DEFINITIONS),
        extra={"index": {"type": index_type, "faiss_factory": factory_string, "search_parameters": parameters,
                         "dim": dim, "count": len(gallery.ids), f"recall_at_{index_faiss.RECALL_K}_vs_exact": recall},
               "settings": settings.to_dict(), "parity": parity, "added": added or []},
    )


def stored_settings(stored: StoredIndex) -> EmbedSettings:
    return EmbedSettings(**stored.card["settings"])


def load_index_model(stored: StoredIndex, reference: str | os.PathLike | None = None) -> LoadedModel:
    """The index's model (or `reference`), refused when its weights are not the ones the index was built with."""
    model = stored.card["model"]
    reference = reference or model["reference"]
    loaded = load_model(reference)
    now = model_identity(reference, loaded.card)["weights_sha256"]
    if now != model["weights_sha256"]:
        raise UserError(f"the model {reference} is not the one {stored.directory} was built with (its weights "
                        "changed): build the index again, or name the original with --model")
    return loaded


def merge_classes(names: list[str], new_names: list[str], new_labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Class names after adding items labelled by `new_names`: same name, same label; new names appended."""
    merged = list(names)
    where = {name: i for i, name in enumerate(merged)}
    mapping = np.empty(len(new_names), np.int64)
    for i, name in enumerate(new_names):
        if name not in where:
            where[name] = len(merged)
            merged.append(name)
        mapping[i] = where[name]
    return merged, mapping[new_labels] if len(new_labels) else new_labels


def add_to_index(directory: str | os.PathLike, loaded: LoadedModel, split: Split, source: str, *,
                 batch_size: int = 64, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: Progress | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> tuple[dict[str, Any], int, int]:
    """Append the images of `split` that the index does not hold yet (by identity).

    Returns (the new card, images added, images already in the index and skipped).
    """
    directory = require_index(directory)  # before a lock file appears beside a path that holds no index
    with _one_writer(directory):
        stored = read_index(directory)
        settings = stored_settings(stored)
        items = split_items(split, source)
        present = set(stored.ids)
        keep = np.array([item not in present for item in items.ids], bool)
        skipped = int((~keep).sum())
        if not keep.any():
            return stored.card, 0, skipped
        new = _subset(split, keep=keep)
        new_ids = [item for item, k in zip(items.ids, keep) if k]
        plan = {"add_to": stored.card["gallery"], "source": source, "split": split.name,
                "ids_sha256": ItemSet(source, split.name, new_ids, np.zeros(len(new_ids), np.int64)).identity()["items_sha256"],
                "settings": settings.to_dict(), "chunk_size": chunk_size}
        store = ChunkStore.open(work_directory(stored.directory, "add-partial"), plan, restart=False)
        embed_into_chunks(loaded, new, settings, store, batch_size=batch_size, progress=progress, on_chunk=on_chunk)
        for chunk in store.embeddings():
            if chunk.shape[1] != stored.index.d:
                raise UserError(f"the model gives {chunk.shape[1]}-d embeddings but the index holds {stored.index.d}-d")
            stored.index.add(np.ascontiguousarray(chunk))
        names, labels = merge_classes(stored.class_names, items.class_names or [], store.labels())
        ids, all_labels = stored.ids + new_ids, np.concatenate([stored.labels, labels])
        gallery = ItemSet(stored.card["gallery"]["source"], stored.card["gallery"]["split"], ids, all_labels)
        info = stored.card["index"]
        added = [*stored.card.get("added", []), {"source": source, "split": split.name, "count": len(new_ids),
                                                 "skipped_already_indexed": skipped}]
        card = index_card(stored.card["model"], settings, gallery, info["dim"], info["type"], info["faiss_factory"],
                          info["search_parameters"], info.get(f"recall_at_{index_faiss.RECALL_K}_vs_exact"),
                          stored.card["parity"], added)
        write_index(stored.directory, stored.index, ids, all_labels, names, card, replace=True)
        store.remove()
        return card, len(new_ids), skipped


def search_index(stored: StoredIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k'], rows [Q, k']) of the nearest stored items, k' = min(k, index size), best first."""
    if k < 1:
        raise UserError(f"--k must be a positive integer, got {k}")
    index_faiss.set_search_parameters(stored.index, stored.card["index"]["search_parameters"])
    return index_faiss.search(stored.index, queries, min(k, len(stored)))



def _one_writer(directory: Path) -> AbstractContextManager[None]:
    """The index's lock (a hidden sibling file, kept): two builds or adds at once would discard one's work."""
    return exclusive_lock(work_directory(directory, "lock"),
                          f"another command is building or adding to the index {directory}: wait for it to finish")
