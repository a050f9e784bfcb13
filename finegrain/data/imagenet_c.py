"""Prepared ImageNet-C: Hendrycks' folder layout, or tensorflow-datasets' `imagenet2012_corrupted` configs.

Folder layout: `ROOT/CORRUPTION/SEVERITY/SYNSET/*.JPEG` (also `ROOT/GROUP/CORRUPTION/...`, as his
noise/blur/weather/digital archives unpack). Labels index the synset in the sorted list of the 1000
ImageNet synsets (the list tfds ships with its imagenet2012 builder), as ImageNet's own labels do.
The images are used as they are (ImageNet-C's are 224 x 224, already resized and cropped). Unreadable
files are skipped and named, as for finegrain's own folders.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from finegrain.data.catalog import resolve_data_dir
from finegrain.data.corruptions import ALL, SEVERITIES, CorruptedSource
from finegrain.data.folder import IMAGE_EXTENSIONS, check_images
from finegrain.data.splits import Split, load_split
from finegrain.errors import UserError

TFDS_CORRUPTED = "imagenet2012_corrupted"
TFDS_PREPARE_HINT = ("prepare them with tensorflow-datasets (it needs ILSVRC2012_img_val.tar and "
                     "ILSVRC2012_img_train.tar in its manual dir, and ImageMagick): "
                     "tfds build imagenet2012_corrupted/CORRUPTION_SEVERITY --data_dir DATA_DIR")


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet synsets (n01440764, ...) in label order (sorted), from tensorflow-datasets."""
    import tensorflow_datasets as tfds

    path = tfds.core.tfds_path("datasets/imagenet2012/labels.txt")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def scan_layout(root: str | os.PathLike) -> dict[str, dict[int, Path]]:
    """corruption -> severity -> folder, for every CORRUPTION/SEVERITY folder under `root` (or one level down)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"--imagenet-c {root} is not a folder: expected ROOT/CORRUPTION/SEVERITY/SYNSET/*.JPEG")
    found: dict[str, dict[int, Path]] = {}
    for parent in (root, *sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ALL)):
        for corruption in ALL:
            folder = parent / corruption
            if folder.is_dir():
                severities = {int(d.name): d for d in folder.iterdir() if d.is_dir() and d.name.isdigit()
                              and int(d.name) in SEVERITIES}
                found.setdefault(corruption, {}).update(severities)
    found = {c: dict(sorted(s.items())) for c, s in found.items() if s}
    if not found:
        raise UserError(f"no ImageNet-C corruption folders in {root}: expected ROOT/CORRUPTION/SEVERITY/SYNSET/*.JPEG "
                        "(e.g. ROOT/gaussian_noise/3/n01440764/ILSVRC2012_val_00000293.JPEG)")
    return found


def _files(folder: Path) -> tuple[list[str], np.ndarray]:
    """Images under folder/SYNSET/ sorted, with the synsets' ImageNet labels."""
    index = {s: i for i, s in enumerate(imagenet_synsets())}
    paths: list[str] = []
    labels: list[int] = []
    for synset in sorted(d.name for d in folder.iterdir() if d.is_dir()):
        if synset not in index:
            raise UserError(f"{folder / synset} is not an ImageNet synset folder (expected names like n01440764)")
        files = sorted(str(p) for p in (folder / synset).iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        paths += files
        labels += [index[synset]] * len(files)
    return paths, np.asarray(labels, np.int64)


def _decoded(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """A prepared image as float32 [size, size, 3]; one of another size is resized (batches need one size)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.cond(tf.reduce_all(tf.shape(image)[:2] == size), lambda: tf.cast(image, tf.float32),
                    lambda: tf.image.resize(tf.cast(image, tf.float32), [size, size]))
    image.set_shape([size, size, 3])
    return image


def _clean_imagenet(data_dir: str | os.PathLike | None) -> Split | None:
    """ImageNet's validation split when it is prepared (for the clean error), else None."""
    try:
        return load_split("imagenet", "test", data_dir=data_dir)
    except UserError:
        return None


def imagenet_c_folder(root: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                      clean: bool = True) -> CorruptedSource:
    """An ImageNet-C folder as a corrupted source; the clean split is ImageNet's if prepared."""
    layout = scan_layout(root)
    data_dir = resolve_data_dir(data_dir)
    skipped: list[tuple[str, str]] = []

    @functools.cache
    def files(corruption: str, severity: int) -> tuple[list[str], np.ndarray]:
        paths, labels = _files(layout[corruption][severity])
        if not paths:
            raise UserError(f"{layout[corruption][severity]} holds no images")
        bad = dict(check_images(paths, data_dir))
        if bad:
            skipped.extend(sorted(bad.items()))
            keep = np.array([p not in bad for p in paths], bool)
            paths, labels = [p for p, k in zip(paths, keep) if k], labels[keep]
        return paths, labels

    first = files(*next((c, next(iter(s))) for c, s in layout.items()))[0][0]
    size = int(tf.io.decode_image(tf.io.read_file(first), channels=3, expand_animations=False).shape[0])

    def make(corruption: str, severity: int, image_size: int, preprocessing: str) -> tf.data.Dataset:
        paths, labels = files(corruption, severity)
        ds = tf.data.Dataset.from_tensor_slices((tf.constant([os.fsencode(p) for p in paths], tf.string),
                                                 tf.constant(labels, tf.int64)))
        return ds.map(lambda p, y: (_decoded(tf.io.read_file(p), size), y), num_parallel_calls=tf.data.AUTOTUNE)

    return CorruptedSource(
        description=f"ImageNet-C folder {Path(root).expanduser()}",
        num_classes=len(imagenet_synsets()),
        imagenet=True,
        available={c: tuple(s) for c, s in layout.items()},
        make_images=make,
        count=lambda corruption, severity: len(files(corruption, severity)[0]),
        clean=_clean_imagenet(data_dir) if clean else None,
        prepared_size=size,
        skipped=skipped,
    )


def tfds_corrupted(*, data_dir: str | os.PathLike | None = None, clean: bool = True) -> CorruptedSource:
    """tensorflow-datasets' `imagenet2012_corrupted/CORRUPTION_SEVERITY` configs prepared under the data dir."""
    import tensorflow_datasets as tfds

    data_dir = resolve_data_dir(data_dir)

    @functools.cache
    def builder(corruption: str, severity: int) -> object:
        return tfds.builder(f"{TFDS_CORRUPTED}/{corruption}_{severity}", data_dir=str(data_dir))

    available = {c: tuple(s for s in SEVERITIES if builder(c, s).is_prepared()) for c in ALL}
    available = {c: s for c, s in available.items() if s}
    if not available:
        raise UserError(f"no {TFDS_CORRUPTED} config is prepared under {data_dir}: {TFDS_PREPARE_HINT}")

    def make(corruption: str, severity: int, image_size: int, preprocessing: str) -> tf.data.Dataset:
        ds = builder(corruption, severity).as_dataset(split="validation", as_supervised=True, shuffle_files=False,
                                                      decoders={"image": tfds.decode.SkipDecoding()})
        return ds.map(lambda image, label: (_decoded(image, 224), tf.cast(label, tf.int64)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    return CorruptedSource(
        description=f"{TFDS_CORRUPTED} under {data_dir}",
        num_classes=len(imagenet_synsets()),
        imagenet=True,
        available=available,
        make_images=make,
        count=lambda corruption, severity: int(builder(corruption, severity).info.splits["validation"].num_examples),
        clean=_clean_imagenet(data_dir) if clean else None,
        prepared_size=224,
    )
