"""FGVC-Aircraft 2013b (Maji et al. 2013) as a tensorflow-datasets builder: 100 variants, the official split.

The one archive, `fgvc-aircraft-2013b.tar.gz`, holds `fgvc-aircraft-2013b/data/`:
`images/<id>.jpg`; `images_<level>_<split>.txt` with lines `<id> <name>` (names hold spaces) for each
level (variant, family, manufacturer) and split (train, val, trainval, test); and the class lists
`variants.txt`, `families.txt`, `manufacturers.txt`, one name a line. Class names (and so label ids,
in list order) are read from those lists when the data set is prepared, and kept with it by tfds.

tfds splits: train 3,334, validation 3,333, test 3,333 (train + validation is the paper's trainval).
The label is `variant`; `family` and `manufacturer` are kept as extra labels.

Every image carries a 20-pixel copyright banner along its bottom, which the data set's authors ask
users to remove. The builder stores each image without those rows, re-encoded as a JPEG with the
original's own quantisation tables and chroma subsampling (so about the original's quality and size).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from PIL import Image, JpegImagePlugin
from tensorflow_datasets.core.download.checksums import UrlInfo

ARCHIVE = "fgvc-aircraft-2013b.tar.gz"
URL = f"https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/{ARCHIVE}"
# Not checked against a download here (no network where this was written): the size and sha256 that
# several independent public download scripts pin for the archive the URL serves.
ARCHIVE_SIZE = 2_753_340_328
ARCHIVE_SHA256 = "e4e323d410e29f0370c81eabdcbb0e2b813acea1de22891b70b58ff41bfc9834"

BANNER_ROWS = 20  # the copyright banner at the bottom of every image
ROOT = "fgvc-aircraft-2013b/data"
CLASS_LISTS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
SPLITS = {"train": "train", "validation": "val", "test": "test"}  # tfds split -> the archive's file suffix


def crop_banner(encoded: bytes, rows: int = BANNER_ROWS) -> bytes:
    """The JPEG `encoded` without its bottom `rows` rows, re-encoded with the original's quantisation
    tables and chroma subsampling where it has them (else at quality 95)."""
    with Image.open(io.BytesIO(encoded)) as image:
        width, height = image.size
        if height <= rows:
            raise ValueError(f"image of {width}x{height} pixels is no taller than the {rows}-row banner")
        options: dict[str, Any] = {"quality": 95}
        if image.format == "JPEG" and image.quantization:
            options = {"qtables": image.quantization}
            sampling = JpegImagePlugin.get_sampling(image)
            if sampling != -1:  # -1: not a layout PIL can name; its default then
                options["subsampling"] = sampling
        cropped = image.crop((0, 0, width, height - rows))
        if cropped.mode not in ("RGB", "L"):
            cropped = cropped.convert("RGB")
        out = io.BytesIO()
        cropped.save(out, "JPEG", **options)
    return out.getvalue()


def _lines(path: Any) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _labels(path: Any) -> dict[str, str]:
    """`<id> <name with spaces>` lines -> {id: name}."""
    return dict(line.split(" ", 1) for line in _lines(path))


class FgvcAircraft2013b(tfds.core.GeneratorBasedBuilder):
    """FGVC-Aircraft 2013b, variant labels, without the copyright banner."""

    name = "fgvc_aircraft_2013b"  # not tfds' style name `fgvc_aircraft`: a future tfds builder may take that one
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version: the 2013b archive, banner cropped, variant/family/manufacturer labels."}
    # The archive's registered size and checksum (tfds' own builders keep theirs in a checksums.tsv).
    url_infos = {URL: UrlInfo(size=ARCHIVE_SIZE, checksum=ARCHIVE_SHA256, filename=ARCHIVE)}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="FGVC-Aircraft 2013b: 10,000 aircraft photos, 100 variants (70 families, 30 manufacturers); "
                        "the 20-pixel copyright banner at the bottom of every photo is cropped off.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"),
                # names: the archive's class lists, set in _split_generators
                **{level: tfds.features.ClassLabel() for level in CLASS_LISTS},
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "variant"),
            homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/",
            citation="@techreport{maji13fine-grained, title={Fine-Grained Visual Classification of Aircraft}, "
                     "author={S. Maji and J. Kannala and E. Rahtu and M. Blaschko and A. Vedaldi}, "
                     "year={2013}, eprint={1306.5151}, archivePrefix={arXiv}}",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Iterator]:
        data = dl_manager.download_and_extract(URL) / ROOT
        for level, filename in CLASS_LISTS.items():
            self.info.features[level].names = _lines(data / filename)
        return {split: self._generate_examples(data, suffix) for split, suffix in SPLITS.items()}

    def _generate_examples(self, data: Any, suffix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        levels = {level: _labels(data / f"images_{level}_{suffix}.txt") for level in CLASS_LISTS}
        for image_id, variant in levels["variant"].items():
            file_name = f"{image_id}.jpg"
            yield image_id, {
                "image": crop_banner((data / "images" / file_name).read_bytes()),
                "variant": variant,
                "family": levels["family"][image_id],
                "manufacturer": levels["manufacturer"][image_id],
                "file_name": file_name,
            }
