"""ImageNet-C corruptions (Hendrycks & Dietterich 2019) applied on the fly to uint8 images.

The implementations are tensorflow-datasets' (`tensorflow_datasets/image_classification/corruptions.py`),
loaded as a private copy whose `np.random` is a per-thread `RandomState`: every call is seeded from a
hash of (image bytes, corruption, severity), so a result depends on nothing else, and parallel
tf.data calls cannot disturb each other's random draws (nor NumPy's global generator).

Five are finegrain's own, each for a stated reason:
- `glass_blur`: tfds' pixel-by-pixel Python loop takes seconds per 224 px image; the vectorised
  version here gives the same bytes from the same random draws (tests/data/test_corruptions.py).
- `zoom_blur`: tfds' 11-16 scipy zooms per image hold the GIL and made it the slowest corruption by
  far; the same linear interpolation as two-tap gathers is 10x faster, bytes equal up to float rounding.
- `motion_blur`, `snow`: tfds calls an ImageMagick binary and assumes 224 x 224; ImageMagick's
  motion-blur kernel (one-sided Gaussian along a line) is applied here with OpenCV, at any size.
- `frost`: tfds assumes 224 x 224 and files it downloaded itself; here the frost pictures come from a
  folder the user names (`frost_dir`), scaled up when an image is larger than them.
- `impulse_noise` passes its seed to scikit-image, which would otherwise draw fresh entropy.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import tensorflow as tf

from finegrain.data.preprocessing import eval_image, to_uint8
from finegrain.data.splits import Split
from finegrain.errors import UserError

# Hendrycks' 15 benchmark corruptions in his order (noise, blur, weather, digital), then the 4 extra ones.
STANDARD = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = STANDARD + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

# Python modules each corruption needs beyond NumPy (scikit-image and SciPy through tfds' code).
_NEEDS: dict[str, tuple[str, ...]] = {
    "gaussian_noise": (), "shot_noise": (), "contrast": (), "speckle_noise": (), "fog": (),
    "impulse_noise": ("skimage",), "brightness": ("skimage",), "saturate": ("skimage",),
    "gaussian_blur": ("skimage",), "glass_blur": ("skimage",),
    "defocus_blur": ("cv2",), "motion_blur": ("cv2",), "frost": ("cv2",),
    "zoom_blur": (), "snow": ("cv2", "scipy"),
    "elastic_transform": ("cv2", "scipy", "skimage"), "spatter": ("cv2", "skimage"),
    "pixelate": ("PIL",), "jpeg_compression": ("PIL",),
}
_PIP_NAMES = {"skimage": "scikit-image", "cv2": "opencv-python-headless", "scipy": "scipy", "PIL": "pillow"}
# Hendrycks' frost pictures (frost1.png .. frost6.jpg in his ImageNet-C code); like tfds, only the first 5 are drawn.
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


# --------------------------------------------------------------------------- deterministic randomness


class _NumpyWithThreadRandom(ModuleType):
    """Stands in for `numpy` inside the tfds copy: everything is NumPy's, except `random`, which is the
    RandomState this thread set for the call in progress."""

    def __init__(self) -> None:
        super().__init__("numpy")
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    @property
    def random(self) -> np.random.RandomState:
        return self._local.state

    def use(self, state: np.random.RandomState | None) -> None:
        self._local.state = state


_NUMPY = _NumpyWithThreadRandom()


@functools.cache
def _tfds() -> ModuleType:
    """A private copy of tfds' corruptions module whose `np` is `_NUMPY` (tfds' own module stays as it is)."""
    spec = importlib.util.find_spec("tensorflow_datasets.image_classification.corruptions")
    if spec is None or spec.loader is None:
        raise UserError("tensorflow-datasets has no corruptions module: pip install 'tensorflow-datasets>=4.9,<4.10'")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.np = _NUMPY
    return module


def seed_of(image: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """128-bit seed (4 x uint32) from the image's bytes and shape, the corruption and the severity."""
    h = hashlib.blake2b(f"{corruption}/{severity}/{image.shape}/".encode(), digest_size=16)
    h.update(np.ascontiguousarray(image).data)
    return np.frombuffer(h.digest(), np.uint32)


# --------------------------------------------------------------------------- finegrain's own versions


def _glass_blur(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    """tfds' glass_blur, its pixel loop vectorised (same random draws, same bytes).

    The loop visits pixels from the bottom-right, and (a NumPy quirk of its tuple swap) only copies:
    pixel p takes the value its source s(p) has at that moment, which is s(p)'s new value when s(p)
    was visited before p in this pass, else the value from before the pass. Following s until a
    source not visited earlier resolves every pixel at once.
    """
    skimage = _tfds().tfds.core.lazy_imports.skimage
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    img = np.uint8(skimage.filters.gaussian(np.asarray(x) / 255.0, sigma=sigma, channel_axis=-1) * 255)
    height, width = img.shape[:2]
    rows, cols = np.arange(height - delta, delta, -1), np.arange(width - delta, delta, -1)
    ph, pw = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))  # pixels in visiting order
    n = ph.size
    visit = np.full((height, width), n, np.int64)  # visiting step of each pixel; n = never visited
    visit[ph, pw] = np.arange(n)
    for _ in range(iterations if n else 0):
        dx, dy = rs.randint(-delta, delta, size=(n, 2)).T
        sh, sw = ph + dy, pw + dx
        source_step = visit[sh, sw]
        earlier = source_step < np.arange(n)  # the source was already overwritten this pass
        step = np.arange(n)
        while (chase := earlier[step]).any():
            step[chase] = source_step[step[chase]]
        img[ph, pw] = img[sh[step], sw[step]]  # right side is read before any write
    blurred = skimage.filters.gaussian(img / 255.0, sigma=sigma, channel_axis=-1)
    return _tfds().around_and_astype(np.clip(blurred, 0, 1) * 255)


def _zoom_taps(length: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, weight of high) per output sample of tfds' clipped_zoom along one axis of `length`.

    clipped_zoom takes the central ceil(length / factor) samples, resizes them with scipy's order-1
    zoom (output round(crop * factor) samples, sample k at input position k (crop - 1) / (out - 1)),
    and keeps the central `length` of those: each output is a two-tap linear interpolation.
    """
    crop = int(np.ceil(length / float(factor)))
    top = (length - crop) // 2
    out = int(round(crop * factor))
    trim = (out - length) // 2
    position = np.arange(trim, trim + length) * ((crop - 1) / (out - 1)) if out > 1 else np.zeros(length)
    low = np.minimum(np.floor(position).astype(int), crop - 1)
    weight = (position - low).astype(np.float32)
    return top + low, top + np.minimum(low + 1, crop - 1), weight


def _zoom_blur(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    """tfds' zoom_blur with each zoom done as two-tap gathers instead of scipy.ndimage.zoom (which
    holds the GIL and is 10x slower): the same interpolation, the same bytes up to float rounding."""
    factors = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
               np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][severity - 1]
    image = (np.asarray(x) / 255.0).astype(np.float32)
    height, width = image.shape[:2]
    out = np.zeros_like(image)
    for factor in factors:
        low, high, weight = _zoom_taps(height, factor)
        rows = image[low]
        rows += (image[high] - rows) * weight[:, None, None]
        low, high, weight = _zoom_taps(width, factor)
        zoomed = np.take(rows, low, axis=1)
        zoomed += (np.take(rows, high, axis=1) - zoomed) * weight[None, :, None]
        out += zoomed
    blurred = (image + out) / (len(factors) + 1)
    return _tfds().around_and_astype(np.clip(blurred, 0, 1) * 255)


def motion_kernel(radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's `-motion-blur RADIUSxSIGMA+ANGLE` as a 2-D correlation kernel (anchor at the centre).

    Width 2*ceil(radius)+1 taps, weights exp(-i^2 / 2 sigma^2) normalised, tap i at offset
    (round(i cos angle), round(i sin angle)) from the pixel: a blur trailing to one side.
    """
    width = 2 * int(np.ceil(radius)) + 1
    i = np.arange(width)
    weights = np.exp(-(i**2) / (2.0 * sigma**2))
    weights /= weights.sum()
    a = np.deg2rad(angle)
    dx, dy = np.ceil(i * np.cos(a) - 0.5).astype(int), np.ceil(i * np.sin(a) - 0.5).astype(int)
    centre = width - 1
    kernel = np.zeros((2 * centre + 1, 2 * centre + 1), np.float32)
    np.add.at(kernel, (centre + dy, centre + dx), weights.astype(np.float32))
    return kernel


def _motion_blurred(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    cv2 = _tfds().tfds.core.lazy_imports.cv2
    return cv2.filter2D(image.astype(np.float32), -1, motion_kernel(radius, sigma, angle),
                        borderType=cv2.BORDER_REPLICATE)


def _motion_blur(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    return _tfds().around_and_astype(np.clip(_motion_blurred(x, radius, sigma, -45.0), 0, 255))


def _snow(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    """Hendrycks' snow: a zoomed, thresholded noise layer, motion-blurred, added with its 180-degree turn."""
    module = _tfds()
    cv2 = module.tfds.core.lazy_imports.cv2
    c = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ][severity - 1]
    image = np.asarray(x, dtype=np.float32) / 255.0
    layer = rs.normal(size=image.shape[:2], loc=c[0], scale=c[1])
    layer = module.clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)  # the 8-bit picture ImageMagick blurred
    layer = np.around(_motion_blurred(layer, c[4], c[5], rs.uniform(-135, -45))).clip(0, 255)[..., np.newaxis] / 255.0
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., np.newaxis]
    image = c[6] * image + (1 - c[6]) * np.maximum(image, grey * 1.5 + 0.5)
    return module.around_and_astype(np.clip(image + layer + np.rot90(layer, k=2), 0, 1) * 255)


@functools.cache
def _frost_pictures(frost_dir: str) -> tuple[np.ndarray, ...]:
    cv2 = _tfds().tfds.core.lazy_imports.cv2
    pictures = []
    for name in FROST_FILES:
        picture = cv2.imread(str(Path(frost_dir) / name))
        if picture is None:
            raise UserError(f"cannot read frost picture {Path(frost_dir) / name}")
        pictures.append(picture[..., ::-1])  # BGR -> RGB
    return tuple(pictures)


def _frost(x: np.ndarray, severity: int, rs: np.random.RandomState, frost_dir: str) -> np.ndarray:
    """tfds' frost at any size: a random window of one of the first 5 frost pictures, blended in.

    For 224 x 224 images and pictures larger than that, the same draws and bytes as tfds'.
    """
    cv2 = _tfds().tfds.core.lazy_imports.cv2
    c = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    picture = _frost_pictures(frost_dir)[rs.randint(5)]
    height, width = x.shape[:2]
    scale = max((height + 1) / picture.shape[0], (width + 1) / picture.shape[1])
    if scale > 1:  # an image at least as large as the picture: enlarge the picture to cover it
        size = (int(np.ceil(picture.shape[1] * scale)), int(np.ceil(picture.shape[0] * scale)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_LINEAR)
    top, left = rs.randint(0, picture.shape[0] - height), rs.randint(0, picture.shape[1] - width)
    window = picture[top : top + height, left : left + width]
    return _tfds().around_and_astype(np.clip(c[0] * np.asarray(x) + c[1] * window, 0, 255))


def _impulse_noise(x: np.ndarray, severity: int, rs: np.random.RandomState) -> np.ndarray:
    amount = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    skimage = _tfds().tfds.core.lazy_imports.skimage
    noisy = skimage.util.random_noise(np.asarray(x) / 255.0, mode="s&p", amount=amount,
                                      rng=np.random.default_rng(rs.randint(2**31)))
    return _tfds().around_and_astype(np.clip(noisy, 0, 1) * 255)


_OWN: dict[str, Callable[..., np.ndarray]] = {
    "glass_blur": _glass_blur, "motion_blur": _motion_blur, "snow": _snow, "impulse_noise": _impulse_noise,
    "zoom_blur": _zoom_blur,
}


# --------------------------------------------------------------------------- the public surface


def parse_corruptions(text: str | None) -> list[str]:
    """'a,b' -> the named corruptions in the order given (None or 'all': all 19); UserError on an unknown name."""
    if text is None or text.strip() in ("", "all"):
        return list(ALL)
    if text.strip() == "standard":
        return list(STANDARD)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if unknown := [n for n in names if n not in ALL]:
        raise UserError(f"unknown corruption(s) {', '.join(unknown)}: choose from {', '.join(ALL)} (or all, standard)")
    return list(dict.fromkeys(names))


def parse_severities(text: str | None) -> list[int]:
    """'1,2' -> [1, 2] (None: 1-5); UserError unless every value is an integer 1..5."""
    if text is None or not text.strip():
        return list(SEVERITIES)
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = [0]
    if not values or any(v not in SEVERITIES for v in values):
        raise UserError(f"--severities must be integers from 1 to 5 separated by commas, got {text!r}")
    return sorted(set(values))


def check_available(corruptions: Iterable[str], *, frost_dir: str | Path | None = None,
                    severities: Sequence[int] = SEVERITIES, image_size: int | None = None) -> None:
    """Refuse, in one line, corruptions that cannot run here (missing module, no frost pictures).

    With `image_size`, also applies each requested corruption and severity once to a random image of
    that size, so that nothing can fail after the long run has started.
    """
    corruptions = list(corruptions)
    missing = sorted({m for c in corruptions for m in _NEEDS[c] if importlib.util.find_spec(m) is None})
    if missing:
        needy = [c for c in corruptions if set(_NEEDS[c]) & set(missing)]
        packages = " ".join(_PIP_NAMES[m] for m in missing)
        raise UserError(f"{', '.join(needy)} need(s) {packages}: pip install {packages} (or leave them out with --corruptions)")
    if "frost" in corruptions:
        if frost_dir is None:
            raise UserError("frost needs Hendrycks' frost pictures (frost1.png .. frost5.jpg from his ImageNet-C "
                            "code): pass --frost-dir FOLDER, or leave frost out with --corruptions")
        absent = [n for n in FROST_FILES if not (Path(frost_dir).expanduser() / n).is_file()]
        if absent:
            raise UserError(f"--frost-dir {frost_dir} lacks {', '.join(absent)} (Hendrycks' frost pictures)")
        _frost_pictures(str(Path(frost_dir).expanduser()))
    if image_size is not None:
        probe = np.random.default_rng(0).integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        for c in corruptions:
            for s in severities:
                corrupt(probe, c, s, frost_dir=frost_dir)


def corrupt(image: np.ndarray, corruption: str, severity: int, *, frost_dir: str | Path | None = None) -> np.ndarray:
    """`image` (uint8 [H, W, 3]) under `corruption` at `severity` 1..5 -> uint8 [H, W, 3].

    A pure function of its arguments: the random draws are seeded from (image, corruption, severity).
    """
    if corruption not in ALL:
        raise UserError(f"unknown corruption {corruption!r}: choose from {', '.join(ALL)}")
    if severity not in SEVERITIES:
        raise UserError(f"severity must be 1..5, got {severity}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt() takes uint8 [H, W, 3] images, got {image.dtype} {list(image.shape)}")
    module = _tfds()
    state = np.random.RandomState(seed_of(image, corruption, severity))
    if corruption == "frost":
        if frost_dir is None:
            raise UserError("frost needs --frost-dir (Hendrycks' frost pictures)")
        out = _frost(image, severity, state, str(Path(frost_dir).expanduser()))
    elif corruption in _OWN:
        out = _OWN[corruption](image, severity, state)
    else:
        _NUMPY.use(state)
        try:
            out = getattr(module, corruption)(image.copy(), severity)
        finally:
            _NUMPY.use(None)
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.shape != image.shape:  # a corruption that assumed another size: never pass on a wrong shape
        raise RuntimeError(f"{corruption} turned a {list(image.shape)} image into {list(out.shape)}")
    return out


def corrupted_images(dataset: tf.data.Dataset, corruption: str, severity: int, *, image_size: int,
                     preprocessing: str, frost_dir: str | Path | None = None) -> tf.data.Dataset:
    """(encoded, label) -> (corrupted float32 eval image, label): the eval geometry, rounded to uint8 as
    a saved picture would be, then the corruption (in parallel, through tf.numpy_function)."""
    frost = None if frost_dir is None else str(Path(frost_dir).expanduser())

    def geometry(encoded: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return to_uint8(eval_image(encoded, image_size=image_size, preprocessing=preprocessing)), label

    ds = dataset.map(geometry, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors(log_warning=True)
    return ds.map(lambda image, label: (corrupt_tensor(image, corruption, severity, frost), label),
                  num_parallel_calls=tf.data.AUTOTUNE)


def corrupt_tensor(image: tf.Tensor, corruption: str, severity: int, frost_dir: str | None = None) -> tf.Tensor:
    """`corrupt` inside a tf.data map: uint8 [H, W, 3] tensor -> float32 [H, W, 3] on 0..255."""
    out = tf.numpy_function(lambda a: corrupt(a, corruption, severity, frost_dir=frost_dir), [image], tf.uint8,
                            stateful=False)
    out.set_shape(image.shape)
    return tf.cast(out, tf.float32)


@dataclass
class CorruptedSource:
    """Where corrupted images come from: a split corrupted on the fly, or corrupted copies prepared earlier."""

    description: str
    num_classes: int
    imagenet: bool  # ImageNet classes: AlexNet's errors normalise the corruption errors
    available: dict[str, tuple[int, ...]]  # corruption -> severities there
    # (corruption, severity, image_size, preprocessing) -> (float32 [s, s, 3] on 0..255, int64 label)
    make_images: Callable[[str, int, int, str], tf.data.Dataset]
    count: Callable[[str, int], int]  # images of one corruption and severity
    clean: Split | None = None  # the uncorrupted split, for the clean error
    prepared_size: int | None = None  # side of prepared images (used as they are); None: corrupted on the fly
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unreadable images

    def images(self, corruption: str, severity: int, *, image_size: int, preprocessing: str) -> tf.data.Dataset:
        return self.make_images(corruption, severity, image_size, preprocessing)

    def limited(self, limit: int | None) -> CorruptedSource:
        """The same source cut to its first `limit` images per pass (and clean split): quick checks only."""
        if limit is None:
            return self
        clean = self.clean
        if clean is not None:
            clean = dataclasses.replace(clean, dataset=clean.dataset.take(limit),
                                        num_examples=min(clean.num_examples, limit), _shuffled=None)
        return dataclasses.replace(
            self, description=f"{self.description} (first {limit} images)", clean=clean,
            make_images=lambda *args: self.make_images(*args).take(limit),
            count=lambda corruption, severity: min(self.count(corruption, severity), limit))

    def require(self, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        """UserError, in one line, naming what is there when a requested corruption or severity is not."""
        lacking = [f"{c} {s}" for c in corruptions for s in severities if s not in self.available.get(c, ())]
        if lacking:
            there = "; ".join(f"{c} {','.join(map(str, s))}" for c, s in self.available.items()) or "nothing"
            raise UserError(f"{self.description} lacks {', '.join(lacking[:6])}{' ...' if len(lacking) > 6 else ''}"
                            f" (it has: {there}): choose with --corruptions / --severities")


def on_the_fly(split: Split, *, frost_dir: str | Path | None = None) -> CorruptedSource:
    """`split` corrupted on the fly under each model's eval geometry; ImageNet is normalised by AlexNet's errors."""
    def make(corruption: str, severity: int, image_size: int, preprocessing: str) -> tf.data.Dataset:
        return corrupted_images(split.dataset, corruption, severity, image_size=image_size,
                                preprocessing=preprocessing, frost_dir=frost_dir)

    return CorruptedSource(
        description=f"{split.info.name}/{split.name} corrupted on the fly",
        num_classes=split.num_classes,
        imagenet=split.info.name == "imagenet",
        available={c: SEVERITIES for c in ALL},
        make_images=make,
        count=lambda corruption, severity: split.num_examples,
        clean=split,
        skipped=list(split.skipped),
    )
