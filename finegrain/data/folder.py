"""Own image folders: one sub-folder per class, or `train/` and `test/` folders of that shape.

Every image is checked once with TensorFlow's own decoder (the one the pipeline uses), in parallel;
results are cached per file (size + mtime) under the data dir, so later runs only re-check changed
files. Unreadable images are skipped, counted and named, and never stop a run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from finegrain.errors import UserError
from finegrain.utils.io import atomic_write_json

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
TEST_FRACTION = 0.2  # share of each class held out when a folder has no test/ sub-folder


@dataclass
class FolderFiles:
    """Image files of one split of a folder data set, with labels into `class_names`."""

    paths: list[str]
    labels: np.ndarray  # int64
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _class_dirs(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def folder_class_names(root: str | Path) -> list[str]:
    """Class names of a folder data set: the sub-folders of train/ if there is one, else of root."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist: pass a folder with one sub-folder per class")
    return _class_dirs(root / "train" if (root / "train").is_dir() else root)


def _scan(root: Path, class_names: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """Images under root/<class>/..., sorted; labels index the sorted class folder names."""
    found = _class_dirs(root)
    if class_names is None:
        class_names = found
    elif extra := sorted(set(found) - set(class_names)):
        raise UserError(f"{root} has class folders that train/ lacks: {', '.join(extra[:5])}; make the two match")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(
            str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        )
        paths += files
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int64), class_names


def stratified_split(labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION) -> np.ndarray:
    """Boolean mask of test examples: round(test_fraction * n) of each class (>= 1 when n >= 2), by seed."""
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_test = int(round(test_fraction * len(members)))
        n_test = min(max(n_test, 1 if len(members) >= 2 else 0), len(members) - 1) if len(members) > 1 else 0
        is_test[rng.permutation(members)[:n_test]] = True
    return is_test


def folder_files(root: str | Path, split: str, *, seed: int = 0, classes: tuple[int, int] | None = None,
                 check_cache_dir: Path | None = None) -> FolderFiles:
    """The files of `split` ("train", "test" or "all") of the folder data set at `root`.

    `classes` keeps only labels in [start, stop) and shifts them to start at 0 (zero-shot retrieval).
    """
    root = Path(root).expanduser()
    folder_class_names(root)  # checks the folder exists
    if (root / "train").is_dir():
        train_paths, train_labels, names = _scan(root / "train")
        if (root / "test").is_dir():
            test_paths, test_labels, _ = _scan(root / "test", names)
        else:
            mask = stratified_split(train_labels, seed)
            test_paths, test_labels = [p for p, m in zip(train_paths, mask) if m], train_labels[mask]
            train_paths, train_labels = [p for p, m in zip(train_paths, mask) if not m], train_labels[~mask]
    else:
        all_paths, all_labels, names = _scan(root)
        mask = stratified_split(all_labels, seed)
        test_paths, test_labels = [p for p, m in zip(all_paths, mask) if m], all_labels[mask]
        train_paths, train_labels = [p for p, m in zip(all_paths, mask) if not m], all_labels[~mask]
    if not names or not train_paths:
        raise UserError(f"no images found in {root}: expected {root}/<class name>/<image>.jpg (or train/ and test/)")
    # Check the whole folder at once (cached), so train and test runs share one pass.
    bad = dict(check_images(train_paths + test_paths, check_cache_dir))
    chosen = {
        "train": (train_paths, train_labels),
        "test": (test_paths, test_labels),
        "all": (train_paths + test_paths, np.concatenate([train_labels, test_labels])),
    }[split]
    paths, labels = chosen
    if classes is not None:
        start, stop = classes
        keep = (labels >= start) & (labels < stop)
        paths, labels, names = [p for p, k in zip(paths, keep) if k], labels[keep] - start, names[start:stop]
    wanted = set(paths)
    skipped = sorted((p, why) for p, why in bad.items() if p in wanted)
    if skipped:
        log.warning("skipping %d unreadable image(s) in %s", len(skipped), root)
        keep = np.array([p not in bad for p in paths], bool)
        paths, labels = [p for p, k in zip(paths, keep) if k], labels[keep]
    return FolderFiles(paths, labels.astype(np.int64), list(names), skipped)


def _failure_reason(path: str) -> str:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 2, 0))
            tail = f.read(2)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if size == 0:
        return "empty file"
    if head[:2] == b"\xff\xd8" and tail != b"\xff\xd9":
        return "truncated JPEG (no end-of-image marker)"
    return "corrupt or unsupported image (TensorFlow cannot decode it)"


def check_images(paths: list[str], cache_dir: Path | None = None) -> list[tuple[str, str]]:
    """(path, reason) for every image TensorFlow cannot decode; decodes in parallel, caches per file."""
    cache: dict[str, list] = {}
    cache_file = None
    if cache_dir is not None and paths:
        key = hashlib.sha1(os.path.dirname(os.path.commonpath(paths)).encode()).hexdigest()[:16]
        cache_file = cache_dir / "finegrain_checks" / f"{key}.json"
        if cache_file.exists():
            try:
                cache = json.loads(cache_file.read_text())
            except ValueError:
                cache = {}

    def stamp(p: str) -> list:
        st = os.stat(p)
        return [st.st_size, st.st_mtime_ns]

    stamps = {p: stamp(p) for p in paths}
    todo = [p for p in paths if cache.get(p, [None, None])[:2] != stamps[p]]
    if todo:
        cut_short = _cut_short_jpegs(todo)
        rest = [p for p in todo if p not in cut_short]
        readable = dict(zip(rest, _decodable(rest))) if rest else {}
        for p in todo:
            cache[p] = stamps[p] + ["" if readable.get(p) else _failure_reason(p)]
        if cache_file is not None:
            atomic_write_json(cache_file, cache)
    return [(p, cache[p][2]) for p in paths if cache[p][2]]


def _ends_early(path: str) -> bool:
    """A JPEG (by its start marker) whose last two bytes are not the end-of-image marker."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return False
            f.seek(-2, os.SEEK_END)
            return f.read(2) != b"\xff\xd9"
    except OSError:
        return False  # unreadable or shorter than 4 bytes: TensorFlow's check reports it, silently


def _pillow_decodes(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Image.DecompressionBombError:
        return True  # too large for Pillow's guard, not broken: leave the verdict to TensorFlow
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... for broken files
        return False


def _cut_short_jpegs(paths: list[str]) -> set[str]:
    """JPEGs that stop before their end (partial downloads): decided here, without TensorFlow.

    TensorFlow's JPEG decoder reports such a file from native code straight to the terminal
    ("E0000 ... jpeg_mem.cc ... Premature end of JPEG data", or libjpeg's "Improper call to JPEG
    library"), whatever the Python log level, before the scan can skip it. A JPEG whose last bytes
    are not the end-of-image marker is decoded with Pillow instead, which fails quietly; one that
    Pillow decodes (a complete image with trailing bytes) still goes through TensorFlow's check.
    """
    with ThreadPoolExecutor(max_workers=8) as pool:
        suspects = [p for p, early in zip(paths, pool.map(_ends_early, paths)) if early]
        decodes = list(pool.map(_pillow_decodes, suspects))
    return {p for p, ok in zip(suspects, decodes) if not ok}


def _decodable(paths: list[str]) -> list[bool]:
    """Decode every file with tf.io.decode_image; errors drop the element, so missing indices are bad."""
    import tensorflow as tf

    def decode(i: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return i, tf.shape(image)  # returning the shape keeps the decode from being pruned

    # Bytes, not str: a file name that is not valid UTF-8 cannot become a string tensor from str.
    encoded = tf.constant([os.fsencode(p) for p in paths], tf.string)
    ds = tf.data.Dataset.from_tensor_slices((tf.range(len(paths), dtype=tf.int64), encoded))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(1024)
    ok = np.zeros(len(paths), bool)
    for idx, _ in ds.as_numpy_iterator():
        ok[idx] = True
    return ok.tolist()


def skipped_report(skipped: list[tuple[str, str]]) -> str:
    """A human-readable report of skipped files (empty string if none)."""
    if not skipped:
        return ""
    lines = [f"skipped {len(skipped)} unreadable image(s):"] + [f"  {p}: {why}" for p, why in skipped]
    return "\n".join(lines)
