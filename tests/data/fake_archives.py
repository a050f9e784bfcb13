"""Tiny stand-ins for the tfds data sets' original archives, in the layouts the tfds builders read.

Each `make_*` writes the files (named as the builder's checksum list names them) into `manual`
and returns the expected {tfds split: [original 1-based class id of each example]}.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def jpeg(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def png(size: tuple[int, int] = (24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size[1], size[0]), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def make_food101(manual: Path) -> dict[str, list[int]]:
    classes = ["apple_pie", "baby_back_ribs"]  # the builder only accepts real Food-101 class names
    train = {c: [f"{c}/{i}" for i in range(3)] for c in classes}
    test = {c: [f"{c}/{i}" for i in range(3, 4)] for c in classes}
    files = {f"food-101/images/{n}.jpg": jpeg(k) for k, n in enumerate(sum([*train.values(), *test.values()], []))}
    files["food-101/meta/train.json"] = json.dumps(train).encode()
    files["food-101/meta/test.json"] = json.dumps(test).encode()
    _tar(manual / "food-101.tar.gz", files)
    return {"train": [1, 1, 1, 2, 2, 2], "validation": [1, 2]}


def make_flowers102(manual: Path) -> dict[str, list[int]]:
    labels = [1, 2, 3, 1, 2, 3]  # image i (1-based) has class labels[i-1]
    _tar(manual / "102flowers.tgz", {f"jpg/image_{i:05d}.jpg": jpeg(i) for i in range(1, 7)}, "w")
    scipy.io.savemat(manual / "imagelabels.mat", {"labels": np.array([labels])})
    scipy.io.savemat(manual / "setid.mat", {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]), "tstid": np.array([[4, 5, 6]])})
    return {"train": [1, 2], "validation": [3], "test": [1, 2, 3]}


def make_cub200(manual: Path) -> dict[str, list[int]]:
    # classes 1, 2 (zero-shot train half) and 101, 102 (test half); 2 images each, first is official train
    folders = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 101: "101.White_Pelican", 102: "102.Western_Wood_Pewee"}
    images, split, boxes, files, segs = [], [], [], {}, {}
    expected: dict[str, list[int]] = {"train": [], "test": []}
    for cid, folder in folders.items():
        for j in range(2):
            idx = len(images) + 1
            stem = f"{folder.split('.')[1]}_{idx:04d}_{100 + idx}"
            images.append(f"{idx} {folder}/{stem}.jpg")
            split.append(f"{idx} {1 if j == 0 else 0}")
            boxes.append(f"{idx} 2.0 3.0 10.0 8.0")
            files[f"CUB_200_2011/images/{folder}/{stem}.jpg"] = jpeg(idx)
            segs[f"segmentations/{folder}/{stem}.png"] = png()
            expected["train" if j == 0 else "test"].append(cid)
    files["CUB_200_2011/images.txt"] = "\n".join(images).encode() + b"\n"
    files["CUB_200_2011/train_test_split.txt"] = "\n".join(split).encode() + b"\n"
    files["CUB_200_2011/bounding_boxes.txt"] = "\n".join(boxes).encode() + b"\n"
    _tar(manual / "CUB_200_2011.tgz", files)
    _tar(manual / "segmentations.tgz", segs)
    return expected


def _cars_annotations(path: Path, rows: list[tuple[int, str]]) -> None:
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    ann = np.zeros((1, len(rows)), dtype=dtype)
    for k, (cls, fname) in enumerate(rows):
        ann[0, k] = (np.array([[1]]), np.array([[1]]), np.array([[10]]), np.array([[8]]), np.array([[cls]]), np.array([fname]))
    scipy.io.savemat(path, {"annotations": ann})


def make_cars196(manual: Path) -> dict[str, list[int]]:
    train = [(1, "00001.jpg"), (2, "00002.jpg"), (99, "00003.jpg"), (100, "00004.jpg")]
    test = [(1, "00001.jpg"), (99, "00002.jpg"), (100, "00003.jpg")]
    _tar(manual / "cars_train.tgz", {f"cars_train/{f}": jpeg(k) for k, (_, f) in enumerate(train)})
    _tar(manual / "cars_test.tgz", {f"cars_test/{f}": jpeg(10 + k) for k, (_, f) in enumerate(test)})
    devkit = manual / "devkit_tmp"
    devkit.mkdir()
    _cars_annotations(devkit / "cars_train_annos.mat", train)
    _tar(manual / "car_devkit.tgz", {"devkit/cars_train_annos.mat": (devkit / "cars_train_annos.mat").read_bytes()})
    _cars_annotations(manual / "cars_test_annos_withlabels.mat", test)
    return {"train": [c for c, _ in train], "test": [c for c, _ in test]}


def make_sop(manual: Path) -> dict[str, list[int]]:
    # train class ids 1, 2; test ids continue after the real train's last id (11318) as in the original
    train = [(1, 1, "bicycle_final/a_0.JPG"), (1, 1, "bicycle_final/a_1.JPG"), (2, 2, "cabinet_final/b_0.JPG")]
    test = [(11319, 3, "chair_final/c_0.JPG"), (11320, 3, "chair_final/d_0.JPG")]
    with zipfile.ZipFile(manual / "Stanford_Online_Products.zip", "w") as z:
        for name, rows in (("Ebay_train", train), ("Ebay_test", test)):
            lines = ["image_id class_id super_class_id path"] + [f"{i + 1} {c} {s} {p}" for i, (c, s, p) in enumerate(rows)]
            z.writestr(f"Stanford_Online_Products/{name}.txt", "\n".join(lines) + "\n")
            for k, (_, _, p) in enumerate(rows):
                z.writestr(f"Stanford_Online_Products/{p}", jpeg(k + len(name)))
    return {"train": [c for c, _, _ in train], "test": [c for c, _, _ in test]}


def make_pets(manual: Path) -> dict[str, list[int]]:
    # (image name, 1-based breed id, species 1 = cat / 2 = dog); both archives are plain tars named .tar.gz
    trainval = [("Abyssinian_1", 1, 1), ("american_bulldog_1", 2, 2), ("yorkshire_terrier_1", 37, 2)]
    test = [("Abyssinian_2", 1, 1), ("yorkshire_terrier_2", 37, 2)]
    images = {f"images/{n}.jpg": jpeg(k) for k, (n, _, _) in enumerate(trainval + test)}
    _tar(manual / "images.tar.gz", images, "w")
    annotations = {f"annotations/trimaps/{n}.png": png() for n, _, _ in trainval + test}
    for name, rows in (("trainval", trainval), ("test", test)):
        annotations[f"annotations/{name}.txt"] = "".join(f"{n} {c} {s} 1\n" for n, c, s in rows).encode()
    for n, _, _ in trainval:  # head boxes exist for trainval images only, as in the original
        annotations[f"annotations/xmls/{n}.xml"] = (
            "<annotation><size><width>24</width><height>20</height></size><object><bndbox>"
            "<xmin>2</xmin><ymin>3</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object></annotation>").encode()
    _tar(manual / "annotations.tar.gz", annotations, "w")
    return {"train": [c for _, c, _ in trainval], "test": [c for _, c, _ in test]}


#: FGVC-Aircraft class lists: names with spaces and slashes as in the original; 100 variants as the catalog says.
AIRCRAFT_VARIANTS = ["707-320", "Cessna 172", "F/A-18", *(f"variant {k}" for k in range(4, 101))]
AIRCRAFT_FAMILIES = ["Boeing 707", "Cessna 172", "F/A-18"]
AIRCRAFT_MANUFACTURERS = ["Boeing", "Cessna", "McDonnell Douglas"]
# image id -> (archive split, variant, family, manufacturer); the variant fixes the other two
AIRCRAFT_IMAGES = {
    "0034309": ("train", "707-320", "Boeing 707", "Boeing"),
    "0034958": ("train", "F/A-18", "F/A-18", "McDonnell Douglas"),
    "0037511": ("val", "Cessna 172", "Cessna 172", "Cessna"),
    "1056692": ("test", "707-320", "Boeing 707", "Boeing"),
    "2224385": ("test", "Cessna 172", "Cessna 172", "Cessna"),
}
AIRCRAFT_BANNER = (255, 0, 255)  # the 20 bottom rows of every fake image: the copyright banner, in magenta
AIRCRAFT_MARK = (0, 200, 0)  # the 8 rows just above the banner: the image's last rows, which must stay


def aircraft_photo(k: int) -> tuple[int, np.ndarray]:
    """Fake image `k` (40 x 48 + 20 px) and its gray level: gray rows, a green mark, a magenta banner."""
    level = 40 + 30 * k
    pixels = np.full((68, 40, 3), level, np.uint8)
    pixels[40:48] = AIRCRAFT_MARK
    pixels[48:] = AIRCRAFT_BANNER
    return level, pixels


def make_aircraft(manual: Path) -> dict[str, list[int]]:
    root = "fgvc-aircraft-2013b/data"
    files = {}
    for k, image_id in enumerate(AIRCRAFT_IMAGES):
        buf = io.BytesIO()
        Image.fromarray(aircraft_photo(k)[1]).save(buf, "JPEG", quality=100)
        files[f"{root}/images/{image_id}.jpg"] = buf.getvalue()
    for level, names in (("variants", AIRCRAFT_VARIANTS), ("families", AIRCRAFT_FAMILIES),
                         ("manufacturers", AIRCRAFT_MANUFACTURERS)):
        files[f"{root}/{level}.txt"] = "".join(f"{n}\n" for n in names).encode()
    expected: dict[str, list[int]] = {}
    for split, tfds_split in (("train", "train"), ("val", "validation"), ("trainval", None), ("test", "test")):
        rows = [(i, labels) for i, (s, *labels) in AIRCRAFT_IMAGES.items() if s == split or (split == "trainval" and s != "test")]
        for column, level in enumerate(("variant", "family", "manufacturer")):
            files[f"{root}/images_{level}_{split}.txt"] = "".join(f"{i} {labels[column]}\n" for i, labels in rows).encode()
        if tfds_split:
            expected[tfds_split] = [AIRCRAFT_VARIANTS.index(labels[0]) + 1 for _, labels in rows]
    _tar(manual / "fgvc-aircraft-2013b.tar.gz", files)
    return expected


def make_imagenet(manual: Path) -> dict[str, list[int]]:
    """ILSVRC2012_img_train.tar (one inner tar per synset) and ILSVRC2012_img_val.tar (flat, named by index)."""
    from importlib import resources

    folder = resources.files("tensorflow_datasets") / "datasets" / "imagenet2012"
    synsets = (folder / "labels.txt").read_text().split()  # label order of the builder
    val_synsets = (folder / "validation_labels.txt").read_text().split()  # of val images 1, 2, ... in order
    train_synsets = [synsets[0], synsets[999]]
    inner = {}
    for k, synset in enumerate(train_synsets):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for i in range(2):
                data = jpeg(100 + 10 * k + i)
                info = tarfile.TarInfo(f"{synset}_{i}.JPEG")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        inner[f"{synset}.tar"] = buf.getvalue()
    _tar(manual / "ILSVRC2012_img_train.tar", inner, "w")
    _tar(manual / "ILSVRC2012_img_val.tar", {f"ILSVRC2012_val_{i:08d}.JPEG": jpeg(200 + i) for i in range(1, 4)}, "w")
    return {"train": [synsets.index(s) + 1 for s in train_synsets for _ in range(2)],
            "validation": [synsets.index(s) + 1 for s in val_synsets[:3]]}


MAKERS = {"food101": make_food101, "flowers102": make_flowers102, "cub200": make_cub200, "cars196": make_cars196,
          "aircraft": make_aircraft, "pets": make_pets, "sop": make_sop, "imagenet": make_imagenet}
