"""The paper data sets through tensorflow-datasets: fetch (download + prepare) and reading splits.

tensorflow-datasets looks in the manual dir for every file its checksum list names before it
downloads anything, and still verifies the registered size and sha256; `fetch` relies on that for
dead or unreliable sources (cars196, SOP over FTP). TensorFlow is imported inside the functions.
Data sets tfds has no builder for have one in `finegrain.data.builders`, loaded by name the same way.
"""

from __future__ import annotations

import functools
import logging
import sys
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from finegrain.data import probe
from finegrain.data.catalog import DatasetRecord, SplitSpec, get_record, resolve_data_dir
from finegrain.data.tfds_progress import tfds_progress
from finegrain.errors import UserError
from finegrain.utils.io import atomic_path

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)


def _tfds() -> Any:
    """tensorflow_datasets, with finegrain's own builders registered (by importing them)."""
    import tensorflow_datasets as tfds

    from finegrain.data import builders  # noqa: F401  (imported for its registration; it imports tfds)

    return tfds


def builder_cls(record: DatasetRecord) -> Any:
    """The tfds builder class of a catalog data set: one of tfds' own or one of `finegrain.data.builders`."""
    return _tfds().builder_cls(record.tfds_name)


def _builder(record: DatasetRecord, data_dir: Path) -> Any:
    return _tfds().builder(record.tfds_name, data_dir=str(data_dir))


@dataclass(frozen=True)
class ManualFile:
    filename: str  # the name tfds looks for in the manual dir (from the builder's checksum file)
    urls: tuple[str, ...]  # where tfds may download it from (mirrors included)
    size: int
    checksum: str

    @property
    def url(self) -> str:
        return self.urls[0]


def manual_files(record: DatasetRecord) -> list[ManualFile]:
    """The original archives of a tfds data set, one entry per file name (mirrors are folded in)."""
    infos = builder_cls(record).url_infos or {}
    files: dict[str, ManualFile] = {}
    for url, info in infos.items():
        name = archive_name(url, info)
        known = files.get(name)
        urls = (*known.urls, url) if known else (url,)
        files[name] = ManualFile(name, urls, int(info.size), info.checksum)
    return list(files.values())


def archive_name(url: str, info: Any) -> str:
    """The file name tfds looks for in the manual dir: the checksum list's, else the URL's last part."""
    return info.filename or url.rstrip("/").rsplit("/", 1)[-1]


def default_manual_dir(data_dir: Path) -> Path:
    return data_dir / "downloads" / "manual"  # where tfds looks when no manual dir is given


def _already_downloaded(record: DatasetRecord, data_dir: Path, file: ManualFile) -> bool:
    """Whether an earlier run left `file` complete in tfds' download cache (then tfds needs no network for it)."""
    from tensorflow_datasets.core.download import resource as resource_lib

    downloads = data_dir / "downloads"
    for url in file.urls:
        name = resource_lib.get_dl_fname(url, file.checksum)
        for folder in (downloads / record.tfds_name, downloads):  # current layout, then tfds' legacy one
            if resource_lib.is_locally_cached(folder / name):  # the file and its .INFO beside it
                return True
    return False


def _check_hosts(record: DatasetRecord, data_dir: Path, manual: Path) -> None:
    """Fail in seconds, in one line, when an archive tfds would have to download has no reachable host.

    Only files neither in the manual dir nor in tfds' download cache are downloaded, so only their
    hosts (or the proxy the environment names) are probed; a file is reachable if one mirror answers.
    """
    needed = [f for f in manual_files(record)
              if not (manual / f.filename).exists() and not _already_downloaded(record, data_dir, f)]
    if not needed:
        return
    down = probe.unreachable([url for f in needed for url in f.urls])
    stuck = [f for f in needed if all(probe.target_of(url) in down for url in f.urls)]
    if stuck:
        hosts = "; ".join(f"{target}: {reason}" for target, reason in down.items())
        which = "its download host is" if len(down) == 1 else "its download hosts are"
        raise UserError(f"cannot download {record.name}, {which} unreachable ({hosts}). "
                        f"{_manual_advice(record, manual)}")


def _check_manual_archives(record: DatasetRecord, manual: Path) -> None:
    """A data set downloaded by hand (licence): fail in one line when none of its archives is in the
    manual dir; warn which splits will be missing when only some are (tfds prepares the others)."""
    sizes = {f.filename: f.size for f in manual_files(record)}
    missing = [name for name in record.manual_archives if not (manual / name).is_file()]
    listing = "; ".join(f"{name} ({_human_size(sizes[name])}, the {record.manual_archives[name]} split)"
                        if name in sizes else name for name in missing)
    if len(missing) == len(record.manual_archives):
        raise UserError(f"{record.name} cannot be downloaded automatically (its licence asks you to register at "
                        f"{record.homepage}): download {listing} into {manual}, then run "
                        f"`finegrain fetch {record.name} --manual-dir {manual}`")
    if missing:
        log.warning("%s: preparing without %s; to add it later, delete the prepared %s folder and fetch again "
                    "with the archive in %s", record.name, listing, record.tfds_name, manual)


def fetch_tfds(
    name: str, *, data_dir: str | Path | None = None, manual_dir: str | Path | None = None, progress: bool = True
) -> bool:
    """Download and prepare a tfds data set. Returns False if it was already prepared (nothing done).

    Archives missing from the manual dir are downloaded by tensorflow-datasets after a short probe of
    their hosts (a few seconds offline, instead of minutes of retries). tfds' own messages go to stderr.
    """
    import tensorflow_datasets as tfds

    record = get_record(name)
    data_dir = resolve_data_dir(data_dir)
    builder = _builder(record, data_dir)
    if builder.is_prepared():
        return False
    manual = Path(manual_dir).expanduser() if manual_dir else default_manual_dir(data_dir)
    if manual_dir and not manual.is_dir():
        raise UserError(f"--manual-dir {manual} is not a folder")
    if record.manual_archives:
        _check_manual_archives(record, manual)
    else:
        _check_hosts(record, data_dir, manual)
    config = tfds.download.DownloadConfig(manual_dir=str(manual))
    try:
        with redirect_stdout(sys.stderr), tfds_progress() if progress else _no_progress():
            builder.download_and_prepare(download_config=config)
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as e:  # any download, checksum or archive problem: tell the user which files to provide
        raise UserError(_failure_message(record, manual, e)) from e
    return True


@contextmanager
def _no_progress() -> Iterator[None]:
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    try:
        yield
    finally:
        tfds.enable_progress_bar()


def _human_size(size: float) -> str:
    if size < 1024:
        return f"{size:,.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:,.1f} {unit}"


def _manual_advice(record: DatasetRecord, manual: Path) -> str:
    """Which files to put (or replace) in the manual dir, and the command to run then; one line."""
    files = manual_files(record)
    missing = [f for f in files if not (manual / f.filename).exists()]
    wrong = [f for f in files if (manual / f.filename).exists() and (manual / f.filename).stat().st_size != f.size]
    parts = []
    if missing:
        listing = "; ".join(f"{f.filename} ({_human_size(f.size)}, from {f.url})" for f in missing)
        parts.append(f"Put these files into {manual}: {listing}.")
    if wrong:
        parts.append(f"Replace these files in {manual}, they are not the originals (wrong size): {', '.join(f.filename for f in wrong)}.")
    if not parts:  # all there with the right sizes: the content differs
        parts.append(f"The files in {manual} do not match the registered checksums: {', '.join(f.filename for f in files)}.")
    return f"{' '.join(parts)} Then run `finegrain fetch {record.name} --manual-dir {manual}`"


def _failure_message(record: DatasetRecord, manual: Path, error: Exception) -> str:
    reason = probe.describe(error)
    quoted = f"{type(error).__name__}: {reason}" if reason != type(error).__name__ else reason
    return f"could not prepare {record.name} ({quoted}). {_manual_advice(record, manual)}"


# ---------------------------------------------------------------------------------------------- reading


def split_sizes(name: str, data_dir: str | Path | None = None) -> dict[str, int]:
    """Image counts of our named splits (train, test, retrieval_*) of a prepared data set; {} if not prepared.

    Class-range splits count labels once (one pass over the records, cached under the data dir)."""
    record = get_record(name)
    data_dir = resolve_data_dir(data_dir)
    builder = _builder(record, data_dir)
    if not builder.is_prepared():
        return {}
    return {split: load_tfds_split(record, spec, data_dir)[2] for split, spec in record.splits.items()
            if _has_tfds_splits(builder, spec)}


def _has_tfds_splits(builder: Any, spec: SplitSpec) -> bool:
    """Whether every tfds split `spec` reads was prepared (a hand-downloaded archive may have been left out)."""
    return all(s in builder.info.splits for s in spec.source.split("+"))


def _label_index(builder: Any, record: DatasetRecord, tfds_split: str, data_dir: Path) -> np.ndarray:
    """Labels of a tfds split in file order, cached beside the data set (one pass over the records)."""
    import tensorflow_datasets as tfds

    cache = data_dir / "finegrain_labels" / record.tfds_name / str(builder.info.version) / f"{tfds_split}.npy"
    if cache.exists():
        return np.load(cache)
    decoders = tfds.decode.PartialDecoding({record.label_key: True})  # skip images entirely
    ds = builder.as_dataset(split=tfds_split, decoders=decoders, shuffle_files=False)
    ds = ds.map(lambda x: x[record.label_key]).batch(4096)
    labels = np.concatenate([np.zeros(0, np.int64), *ds.as_numpy_iterator()]).astype(np.int64)
    with atomic_path(cache) as tmp:
        np.save(tmp, labels)
    return labels


def load_tfds_split(
    record: DatasetRecord, spec: SplitSpec, data_dir: Path
) -> tuple[Any, Any, int, list[str]]:
    """Return (ordered dataset, shuffled(seed) -> dataset, num_examples, class names) for a tfds split.

    Datasets yield `(encoded image bytes, int64 label)` with labels shifted to start at 0.
    """
    import tensorflow as tf
    import tensorflow_datasets as tfds

    builder = _builder(record, data_dir)
    if not builder.is_prepared():
        raise UserError(
            f"data set {record.name} is not prepared under {data_dir}: run `finegrain fetch {record.name}`"
            + (f" --data-dir {data_dir}" if data_dir != resolve_data_dir(None) else "")
        )
    if not _has_tfds_splits(builder, spec):
        archives = ", ".join(record.manual_archives) or "its archives"
        raise UserError(f"{record.name} was prepared without the tfds split {spec.source!r}: delete "
                        f"{Path(builder.data_dir).parent} and run `finegrain fetch {record.name}` again with "
                        f"{archives} in the manual dir")
    names = list(builder.info.features[record.label_key].names)
    start, stop = spec.classes or (0, len(names))
    if spec.classes is None:
        num_examples = sum(int(builder.info.splits[s].num_examples) for s in spec.source.split("+"))
    else:
        labels = np.concatenate([_label_index(builder, record, s, data_dir) for s in spec.source.split("+")])
        num_examples = int(np.count_nonzero((labels >= start) & (labels < stop)))

    @functools.cache  # tfds_id -> position: built on first use, kept for later epochs
    def index_of() -> Any:
        return _example_index(builder, record, spec, data_dir)

    def make(shuffle_seed: int | None, with_index: bool = False) -> tf.data.Dataset:
        read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, add_tfds_id=with_index)
        ds = builder.as_dataset(
            split=spec.source,
            decoders={"image": tfds.decode.SkipDecoding()},
            shuffle_files=shuffle_seed is not None,
            read_config=read_config,
        )
        position = index_of() if with_index else None
        ds = ds.map(lambda x: (x["image"], tf.cast(x[record.label_key], tf.int64),
                               *((position(x["tfds_id"]),) if with_index else ())))
        if spec.classes is not None:
            ds = ds.filter(lambda image, label, *index: (label >= start) & (label < stop))
            if start:
                ds = ds.map(lambda image, label, *index: (image, label - start, *index))
        if shuffle_seed is not None:
            ds = ds.shuffle(min(num_examples, 8192), seed=shuffle_seed, reshuffle_each_iteration=False)
        return ds

    return make(None), make, num_examples, names[start:stop]


def _example_index(builder: Any, record: DatasetRecord, spec: SplitSpec, data_dir: Path) -> Any:
    """tfds_id -> the example's position in the split's fixed order (tfds splits in `spec.source` order,
    shards in order, records in order; class-range splits count kept examples only), in-graph.

    A tfds_id reads `NAME-SPLIT.FORMAT-SHARD-of-N__RECORD`; shard offsets come from the split info.
    """
    import tensorflow as tf

    keys, offsets, total = [], [], 0
    for tfds_split in spec.source.split("+"):
        for shard, length in enumerate(builder.info.splits[tfds_split].shard_lengths):
            keys.append(f"{tfds_split}/{shard:05d}")
            offsets.append(total)
            total += int(length)
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(keys), tf.constant(offsets, tf.int64)), default_value=-1)
    rank = None
    if spec.classes is not None:  # position among the kept examples
        labels = np.concatenate([_label_index(builder, record, s, data_dir) for s in spec.source.split("+")])
        kept = (labels >= spec.classes[0]) & (labels < spec.classes[1])
        rank = tf.constant(np.cumsum(kept) - 1, tf.int64)

    def index_of(tfds_id: tf.Tensor) -> tf.Tensor:
        shard = tf.strings.regex_replace(tfds_id, r"^.*-([^-.]+)\.[^-]+-(\d+)-of-\d+__\d+$", r"\1/\2")
        record_number = tf.strings.to_number(tf.strings.regex_replace(tfds_id, r"^.*__(\d+)$", r"\1"), tf.int64)
        raw = table.lookup(shard) + record_number
        return raw if rank is None else tf.gather(rank, raw)

    return index_of
