"""`load_split`: one entry point for catalog data sets (tfds or synthetic) and own folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finegrain.data.catalog import CATALOG, DatasetRecord, SplitSpec, folder_record, get_record, resolve_data_dir
from finegrain.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass
class Split:
    """One split of a data set: encoded images with int64 labels, plus what is known about it."""

    name: str  # "train", "test", "retrieval_train" or "retrieval_test"
    dataset: Any  # tf.data.Dataset of (encoded image tf.string, label tf.int64), in a fixed order
    num_examples: int
    class_names: list[str]
    info: DatasetRecord
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable images
    paths: list[str] | None = None  # the image files of a folder split, in `dataset` order (None for tfds)
    # (seed, with_index) -> the examples shuffled, each with its int64 position in `dataset` if with_index
    _shuffled: Callable[[int, bool], Any] | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def shuffled(self, seed: int, *, with_index: bool = False) -> tf.data.Dataset:
        """The same examples in an order that is a pure function of `seed` (files shuffled before reading).

        `with_index`: (encoded, label, index) with the example's position in `dataset` order, so that
        per-example data computed once (a teacher's logits) can travel with it through shuffling.
        """
        if self._shuffled is not None:
            return self._shuffled(seed, with_index)
        ds = self.dataset.enumerate().map(lambda i, x: (*x, i)) if with_index else self.dataset
        return ds.shuffle(min(self.num_examples, 8192), seed=seed, reshuffle_each_iteration=False)


def _is_folder(source: str | os.PathLike) -> bool:
    s = str(source)
    return s not in CATALOG and (os.sep in s or s.startswith(".") or Path(s).expanduser().is_dir())


def load_split(source: str | os.PathLike, split: str, *, data_dir: str | os.PathLike | None = None,
               seed: int = 0) -> Split:
    """Load `split` of a catalog data set (by name) or of an image folder (by path).

    `seed` only chooses the stratified train/test split of a folder that has no test/ sub-folder.
    A folder also has the split "all": every image, train/ and test/ together (an index's gallery).
    """
    data_dir = resolve_data_dir(data_dir)
    if _is_folder(source):
        from finegrain.data.folder import folder_class_names

        root = Path(source).expanduser()
        record = folder_record(root.name, len(folder_class_names(root)), homepage=str(root))
        return _folder_split(root, split, record, seed, data_dir)
    record = get_record(str(source))
    if record.name == "synthetic":
        from finegrain.data.synthetic import ensure_synthetic

        root, _ = ensure_synthetic(data_dir)
        return _folder_split(root, split, record, seed, data_dir)
    from finegrain.data.tfds_source import load_tfds_split

    spec = record.split_spec(split)
    ordered, make, n, names = load_tfds_split(record, spec, data_dir)
    return Split(split, ordered, n, names, record, _shuffled=make)


def _folder_split(root: Path, split: str, record: DatasetRecord, seed: int, data_dir: Path) -> Split:
    import tensorflow as tf

    from finegrain.data.folder import folder_files

    spec = SplitSpec("all") if split == "all" else record.split_spec(split)
    files = folder_files(root, spec.source, seed=seed, classes=spec.classes, check_cache_dir=data_dir)
    if not files.paths:
        raise UserError(f"split {split!r} of {root} holds no readable images")

    def make(order: np.ndarray, with_index: bool = False) -> tf.data.Dataset:
        # Bytes, not str: a file name that is not valid UTF-8 cannot become a string tensor from str.
        paths = tf.constant([os.fsencode(files.paths[i]) for i in order], tf.string)
        labels = tf.constant(files.labels[order], tf.int64)
        if with_index:
            ds = tf.data.Dataset.from_tensor_slices((paths, labels, tf.constant(order, tf.int64)))
            return ds.map(lambda p, y, i: (tf.io.read_file(p), y, i), num_parallel_calls=tf.data.AUTOTUNE)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        return ds.map(lambda p, y: (tf.io.read_file(p), y), num_parallel_calls=tf.data.AUTOTUNE)

    n = len(files.paths)
    return Split(
        name=split,
        dataset=make(np.arange(n)),
        num_examples=n,
        class_names=files.class_names,
        info=record,
        skipped=files.skipped,
        paths=list(files.paths),
        _shuffled=lambda s, with_index: make(np.random.default_rng(s).permutation(n), with_index),
    )
