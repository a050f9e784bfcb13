"""Knowledge-distillation targets: a teacher's logits over a split, computed once, looked up in training.

As the original, the teacher sees every training image once, un-augmented, at its own image size and
eval preprocessing; training then looks the row of each example up by its position in the split
(`Split.shuffled(seed, with_index=True)`), so the targets follow the example through shuffling,
augmentation, mixup and resume.

A targets directory holds
- `logits.npy`  float16 [N, C_teacher], memory-mapped when read (ImageNet: 2.5 GB);
- `labels.npy`  int64 [N], the split's labels as the teacher saw them (checked again in training);
- `targets.json` the teacher (reference, card) and the split's identity (source, split, count, a hash
  of its item list and class names), written last: its presence means the directory is complete.
While computing, `progress.json` records how many rows are final; a killed run continues from there;
`.lock` is held (flock) by the one command computing, so a second one into the same directory stops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from finegrain.data import Split, pipeline
from finegrain.errors import UserError
from finegrain.evaluate.inference import eval_settings, predict_batches
from finegrain.evaluate.protocol import split_items
from finegrain.models import ModelCard
from finegrain.models.refs import LoadedModel
from finegrain.utils.io import atomic_path, atomic_write_json, exclusive_lock

LOGITS_FILE, LABELS_FILE, INFO_FILE, PROGRESS_FILE = "logits.npy", "labels.npy", "targets.json", "progress.json"
PARTIAL_LOGITS = "logits.partial.npy"
LOCK_FILE = ".lock"


def split_identity(split: Split, source: str) -> dict[str, Any]:
    """What a targets file was computed for: source, split, count and a hash of the ordered item list
    (file paths of a folder; data set, split and position for tfds) with the class names."""
    digest = hashlib.sha256()
    for item in split_items(split, source).ids:
        digest.update(os.fsencode(item) + b"\n")
    digest.update("\t".join(split.class_names).encode())
    return {"source": source, "split": split.name, "num_examples": split.num_examples, "items_sha256": digest.hexdigest()}


@dataclass(frozen=True)
class TeacherTargets:
    """A complete targets directory, opened for reading (logits memory-mapped)."""

    directory: Path
    logits: np.ndarray  # float16 [N, C_teacher]
    labels: np.ndarray  # int64 [N]
    info: dict[str, Any]

    @property
    def teacher_card(self) -> ModelCard:
        return ModelCard.from_dict(self.info["teacher_card"], where=f"{self.directory / INFO_FILE}")


def _describe(identity: dict[str, Any]) -> str:
    return f"{identity['source']}/{identity['split']} ({identity['num_examples']:,} images)"


def compute_targets(teacher: LoadedModel, teacher_ref: str, split: Split, source: str, out: str | os.PathLike, *,
                    batch_size: int = 64, image_size: int | None = None, preprocessing: str | None = None,
                    chunk_batches: int = 16, on_rows: Callable[[int], None] | None = None,
                    on_chunk: Callable[[int], None] | None = None) -> tuple[TeacherTargets, bool]:
    """Compute (or finish) the teacher's logits over `split` into `out`; -> (targets, computed now).

    A complete `out` for the same teacher and split is returned as is (nothing computed); one for
    another teacher or split is refused. Rows are committed every `chunk_batches` batches
    (`on_chunk(rows done)` is called after each commit; `on_rows(n)` after each batch).
    """
    out = Path(out).expanduser()
    identity = split_identity(split, source)
    size, pre = eval_settings(teacher.card, split, "logits", image_size, preprocessing)
    wanted = {"teacher": teacher_ref, "teacher_card": teacher.card.to_dict(), "image_size": size,
              "preprocessing": pre, "split": identity}
    if (out / INFO_FILE).is_file():  # complete: read without the lock (targets may sit on a read-only share)
        return _finished(out, wanted), False
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: give a directory")
    with exclusive_lock(out / LOCK_FILE, f"another command is computing targets into {out}: wait for it to "
                                         "finish or choose another --out"):
        if (out / INFO_FILE).is_file():  # completed by another command since the check above
            return _finished(out, wanted), False
        return _compute(teacher, split, out, wanted, size, pre, batch_size, chunk_batches, on_rows, on_chunk), True


def _finished(out: Path, wanted: dict[str, Any]) -> TeacherTargets:
    """The complete targets in `out` if they are this job's; UserError if another teacher's or split's."""
    targets = read_targets(out)
    if not _same_job(targets.info, wanted):
        raise UserError(f"{out} already holds distillation targets of {targets.info['teacher']} on "
                        f"{_describe(targets.info['split'])}: choose another --out")
    return targets


def _compute(teacher: LoadedModel, split: Split, out: Path, wanted: dict[str, Any], size: int, pre: str,
             batch_size: int, chunk_batches: int, on_rows: Callable[[int], None] | None,
             on_chunk: Callable[[int], None] | None) -> TeacherTargets:
    """Compute the rows not yet final in `out` (the caller holds its lock) and complete the directory."""
    done = _resume_point(out, wanted)
    n = split.num_examples
    labels_file = out / "labels.partial.npy"
    if done == 0:  # a fresh start: write what is known before the first row
        atomic_write_json(out / PROGRESS_FILE, {**wanted, "done": 0, "num_logits": None})
    first = True
    rest = dataclasses.replace(split, dataset=split.dataset.skip(done), num_examples=n - done)
    batches = iter(pipeline.eval_batches(rest, image_size=size, preprocessing=pre, batch_size=batch_size)) \
        if done < n else iter(())
    logits = labels = None
    while done < n:
        outputs, chunk_labels = predict_batches(teacher.forward, itertools.islice(batches, chunk_batches),
                                                keys=("logits",), on_batch=on_rows)
        rows = outputs["logits"]
        if first:
            logits, labels = _open_partial(out, labels_file, n, rows.shape[1], done == 0)
            first = False
        logits[done:done + len(rows)] = rows.astype(np.float16)
        labels[done:done + len(rows)] = chunk_labels
        logits.flush()
        labels.flush()
        done += len(rows)
        atomic_write_json(out / PROGRESS_FILE, {**wanted, "done": done, "num_logits": int(rows.shape[1])})
        if on_chunk is not None:
            on_chunk(done)
    del logits, labels  # close the memory maps before the renames
    os.replace(labels_file, out / LABELS_FILE)
    os.replace(out / PARTIAL_LOGITS, out / LOGITS_FILE)
    atomic_write_json(out / INFO_FILE, {**wanted, "format": 1})
    (out / PROGRESS_FILE).unlink()
    (out / LOCK_FILE).unlink()  # complete: whoever opens it later finds targets.json and writes nothing
    return read_targets(out)


def _same_job(info: dict[str, Any], wanted: dict[str, Any]) -> bool:
    keys = ("teacher", "image_size", "preprocessing", "split")
    return all(info.get(k) == wanted[k] for k in keys)


def _resume_point(out: Path, wanted: dict[str, Any]) -> int:
    """Rows already final in a partial `out` (0 for a new one); UserError if it was another job's."""
    progress_file = out / PROGRESS_FILE
    if not progress_file.is_file():
        if any(p.name != LOCK_FILE for p in out.iterdir()):
            raise UserError(f"--out {out} is a non-empty directory that holds no distillation targets: "
                            "give a new or empty directory")
        return 0
    try:
        progress = json.loads(progress_file.read_text())
        done = int(progress["done"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{progress_file} is damaged: delete {out} and start again") from None
    if not _same_job(progress, wanted):
        raise UserError(f"{out} holds unfinished targets of {progress.get('teacher')} on "
                        f"{_describe(progress['split'])}: finish that with the same command or choose another --out")
    if done and not (out / PARTIAL_LOGITS).is_file():
        raise UserError(f"{out} lost its {PARTIAL_LOGITS}: delete {out} and start again")
    return done


def _open_partial(out: Path, labels_file: Path, n: int, width: int, new: bool) -> tuple[np.ndarray, np.ndarray]:
    mode = "w+" if new else "r+"
    logits = np.lib.format.open_memmap(out / PARTIAL_LOGITS, mode=mode, dtype=np.float16, shape=(n, width))
    labels = np.lib.format.open_memmap(labels_file, mode=mode, dtype=np.int64, shape=(n,))
    if logits.shape != (n, width):
        raise UserError(f"{out / PARTIAL_LOGITS} has shape {logits.shape}, expected {(n, width)}: delete {out}")
    return logits, labels


def read_targets(directory: str | os.PathLike) -> TeacherTargets:
    """Open a complete targets directory (logits memory-mapped); UserError if incomplete or damaged."""
    directory = Path(directory).expanduser()
    if not (directory / INFO_FILE).is_file():
        unfinished = " (unfinished: run `finegrain distill-targets` again to complete it)" \
            if (directory / PROGRESS_FILE).is_file() else ""
        raise UserError(f"{directory} holds no distillation targets{unfinished}")
    try:
        info = json.loads((directory / INFO_FILE).read_text())
        logits = np.load(directory / LOGITS_FILE, mmap_mode="r")
        labels = np.load(directory / LABELS_FILE)
    except (OSError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"distillation targets in {directory} are damaged ({type(e).__name__}): compute them again") from None
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) != info["split"]["num_examples"]:
        raise UserError(f"distillation targets in {directory} are damaged (shapes disagree): compute them again")
    return TeacherTargets(directory, logits, labels, info)


def teacher_lookup(directory: str | os.PathLike, split: Split, source: str, num_classes: int, label_offset: int,
                   temperature: float) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """For training: (example positions [B], labels [B]) -> softmax(teacher logits / T) [B, num_classes].

    Refuses, in one line, targets computed for another split (count, item list, classes) or for other
    classes. Teacher logits are mapped onto the student's logits: a 1001-way (background) teacher for
    a 1000-way student loses column 0; a 1000-way teacher for a 1001-way student gets a background
    column of the row's minimum, as the original shifted EfficientNet's logits. In-graph, a label that
    differs from the one the teacher saw stops the run (the data changed under the same file names).
    """
    targets = read_targets(directory)
    have, now = targets.info["split"], split_identity(split, source)
    if have != now:
        raise UserError(f"distillation targets in {targets.directory} were computed for {_describe(have)}, not "
                        f"for this {_describe(now)}" + (" (same count, other images or classes)"
                                                        if have["num_examples"] == now["num_examples"] else "")
                        + ": compute them again with `finegrain distill-targets`")
    card = targets.teacher_card
    teacher_classes = targets.logits.shape[1] - card.label_offset
    if teacher_classes != num_classes - label_offset:
        raise UserError(f"the teacher in {targets.directory} scores {teacher_classes} classes, the student "
                        f"{num_classes - label_offset}: distil from a teacher of the same classes")
    logits, labels = targets.logits, targets.labels
    drop, pad = max(card.label_offset - label_offset, 0), max(label_offset - card.label_offset, 0)

    def rows(index: np.ndarray, batch_labels: np.ndarray) -> np.ndarray:
        order = np.argsort(index)  # memory-mapped reads in file order
        picked = np.empty((len(index), logits.shape[1]), np.float32)
        picked[order] = logits[index[order]]
        if not np.array_equal(labels[index], batch_labels):
            raise ValueError(f"the labels of the training split differ from those the teacher saw in "
                             f"{targets.directory}: compute the targets again")
        picked = picked[:, drop:]
        if pad:
            picked = np.concatenate([np.repeat(picked.min(axis=1, keepdims=True), pad, axis=1), picked], axis=1)
        return picked

    def lookup(index: tf.Tensor, batch_labels: tf.Tensor) -> tf.Tensor:
        teacher = tf.numpy_function(rows, [index, batch_labels], tf.float32, stateful=False)
        teacher.set_shape([None, num_classes])
        return tf.nn.softmax(teacher / temperature, axis=-1)

    return lookup
