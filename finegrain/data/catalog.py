"""The catalog of known data sets: everything other packages need to know about one, in one record.

Class ranges are 0-based and half-open: CUB "classes 1-100" of the paper is `(0, 100)`.
Each named split maps to the tensorflow-datasets split expression it reads and, for the zero-shot
retrieval splits, the class range it keeps (labels are shifted so that every split starts at 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from finegrain.errors import UserError

#: The one place the data directory default lives; FINEGRAIN_DATA_DIR moves it.
DATA_DIR_ENV = "FINEGRAIN_DATA_DIR"
DEFAULT_DATA_DIR = "~/finegrain_data"

#: Recall@K list for galleries of a few thousand images (CUB, Cars: the metric-learning papers' list).
DEFAULT_RECALL_KS = (1, 2, 4, 8)

SPLIT_NAMES = ("train", "test", "retrieval_train", "retrieval_test")


def default_data_dir() -> Path:
    """`$FINEGRAIN_DATA_DIR` if set, else `~/finegrain_data`."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data directory to use; UserError when it, or a folder above it, is a file."""
    path = Path(data_dir).expanduser() if data_dir else default_data_dir()
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise UserError(f"data directory {path} cannot be used: {parent} is a file (give a folder with --data-dir "
                            f"or {DATA_DIR_ENV})")
    return path


@dataclass(frozen=True)
class SplitSpec:
    """Where a named split comes from: a tfds split expression, optionally restricted to a class range."""

    source: str  # tfds split expression ("train+validation") or, for folder sets, "train"/"test"/"all"
    classes: tuple[int, int] | None = None  # half-open [start, stop) of original labels; None = all


@dataclass(frozen=True)
class DatasetRecord:
    name: str
    title: str
    num_classes: int
    splits: dict[str, SplitSpec]
    recall_ks: tuple[int, ...] = DEFAULT_RECALL_KS
    classification_preprocessing: str = "imagenet"  # eval preprocessing for classification
    retrieval_preprocessing: str = "reid"
    tfds_name: str | None = None
    label_key: str = "label"
    paper_sizes: dict[str, int] = field(default_factory=dict)  # the paper's image counts per split
    homepage: str = ""
    # Archives a licence keeps from being downloaded: the user puts them into the manual dir (file name ->
    # what it holds); tfds' builder prepares the splits whose archives are there.
    manual_archives: dict[str, str] = field(default_factory=dict)

    def split_spec(self, split: str) -> SplitSpec:
        if split not in SPLIT_NAMES:
            raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLIT_NAMES)}")
        if split not in self.splits:
            have = ", ".join(self.splits)
            raise UserError(f"data set {self.name!r} has no {split!r} split (it has: {have})")
        return self.splits[split]



def _half_ranges(num_classes: int) -> dict[str, SplitSpec]:
    half = (num_classes + 1) // 2
    return {
        "retrieval_train": SplitSpec("all", (0, half)),
        "retrieval_test": SplitSpec("all", (half, num_classes)),
    }


def folder_record(name: str, num_classes: int, *, title: str = "", homepage: str = "") -> DatasetRecord:
    """Record for a folder data set: classification train/test, retrieval = first/second half of the classes."""
    return DatasetRecord(
        name=name,
        title=title or f"image folder {name}",
        num_classes=num_classes,
        splits={"train": SplitSpec("train"), "test": SplitSpec("test"), **_half_ranges(num_classes)},
        homepage=homepage,
    )


SYNTHETIC_NUM_CLASSES = 10

CATALOG: dict[str, DatasetRecord] = {
    r.name: r
    for r in (
        DatasetRecord(
            name="food101",
            title="Food-101",
            tfds_name="food101",
            num_classes=101,
            splits={"train": SplitSpec("train"), "test": SplitSpec("validation")},
            paper_sizes={"train": 75_750, "test": 25_250},
            homepage="https://data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/",
        ),
        DatasetRecord(
            name="flowers102",
            title="Oxford Flowers-102",
            tfds_name="oxford_flowers102",
            num_classes=102,
            splits={"train": SplitSpec("train+validation"), "test": SplitSpec("test")},
            paper_sizes={"train": 2_040, "test": 6_149},
            homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        ),
        DatasetRecord(
            name="cub200",
            title="Caltech-UCSD Birds-200-2011",
            tfds_name="caltech_birds2011",
            num_classes=200,
            splits={
                "train": SplitSpec("train"),
                "test": SplitSpec("test"),
                "retrieval_train": SplitSpec("train+test", (0, 100)),
                "retrieval_test": SplitSpec("train+test", (100, 200)),
            },
            paper_sizes={"train": 5_994, "test": 5_794, "retrieval_train": 5_864, "retrieval_test": 5_924},
            homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        ),
        DatasetRecord(
            name="cars196",
            title="Stanford Cars",
            tfds_name="cars196",
            num_classes=196,
            splits={
                "train": SplitSpec("train"),
                "test": SplitSpec("test"),
                "retrieval_train": SplitSpec("train+test", (0, 98)),
                "retrieval_test": SplitSpec("train+test", (98, 196)),
            },
            paper_sizes={"train": 8_144, "test": 8_041, "retrieval_train": 8_054, "retrieval_test": 8_131},
            homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        ),
        DatasetRecord(
            name="aircraft",
            title="FGVC-Aircraft 2013b (variants)",
            tfds_name="fgvc_aircraft_2013b",  # finegrain.data.builders.aircraft (tfds has no builder)
            label_key="variant",
            num_classes=100,
            splits={"train": SplitSpec("train+validation"), "test": SplitSpec("test")},
            paper_sizes={"train": 6_667, "test": 3_333},
            homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
        ),
        DatasetRecord(
            name="pets",
            title="Oxford-IIIT Pets",
            tfds_name="oxford_iiit_pet",
            num_classes=37,
            splits={"train": SplitSpec("train"), "test": SplitSpec("test")},  # trainval.txt / test.txt
            paper_sizes={"train": 3_680, "test": 3_669},
            homepage="https://www.robots.ox.ac.uk/~vgg/data/pets/",
        ),
        DatasetRecord(
            name="sop",
            title="Stanford Online Products",
            tfds_name="stanford_online_products",
            label_key="class_id",
            num_classes=22_634,
            # Ebay_train / Ebay_test are already class-disjoint; test class ids continue after train's.
            splits={
                "retrieval_train": SplitSpec("train", (0, 11_318)),
                "retrieval_test": SplitSpec("test", (11_318, 22_634)),
            },
            recall_ks=(1, 10, 100, 1000),
            paper_sizes={"retrieval_train": 59_551, "retrieval_test": 60_502},
            homepage="https://cvgl.stanford.edu/projects/lifted_struct/",
        ),
        DatasetRecord(
            name="imagenet",
            title="ImageNet ILSVRC-2012 (1000 classes; validation set as test)",
            tfds_name="imagenet2012",
            num_classes=1000,
            splits={"train": SplitSpec("train"), "test": SplitSpec("validation")},
            recall_ks=(1, 10, 100, 1000),
            paper_sizes={"train": 1_281_167, "test": 50_000},
            homepage="https://image-net.org/download-images",
            manual_archives={"ILSVRC2012_img_train.tar": "train", "ILSVRC2012_img_val.tar": "test (validation)"},
        ),
        DatasetRecord(
            name="synthetic",
            title="finegrain synthetic (generated locally, deterministic)",
            num_classes=SYNTHETIC_NUM_CLASSES,
            splits={"train": SplitSpec("train"), "test": SplitSpec("test"), **_half_ranges(SYNTHETIC_NUM_CLASSES)},
        ),
    )
}

TFDS_NAMES = tuple(name for name, r in CATALOG.items() if r.tfds_name)
#: The data sets `finegrain fetch` can download by itself (the others need archives put in by hand).
DOWNLOADABLE_NAMES = tuple(name for name in TFDS_NAMES if not CATALOG[name].manual_archives)


def get_record(name: str) -> DatasetRecord:
    try:
        return CATALOG[name]
    except KeyError:
        raise UserError(
            f"unknown data set {name!r}: choose one of {', '.join(CATALOG)} or pass a folder path"
        ) from None
