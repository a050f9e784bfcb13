"""The `synthetic` data set: a small fine-grained problem generated locally and deterministically.

Ten classes = 5 shapes x 2 colours of one small object, drawn at a random position, size and
rotation on a cluttered, desaturated background. Classes differ only in that object, yet the object
is salient enough (saturated colour, ~40% of the image side) for a CNN trained from scratch on about a
thousand images to beat chance within minutes on a CPU. Written once as JPEGs under the data dir
(`train/` and `test/` class folders) and read back as an ordinary folder data set.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from finegrain.data.catalog import SYNTHETIC_NUM_CLASSES, resolve_data_dir

VERSION = 1
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {"red": (220, 40, 30), "blue": (30, 70, 225)}
CLASS_NAMES = [f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES]
assert len(CLASS_NAMES) == SYNTHETIC_NUM_CLASSES

# 120 training images per class: at the demo's budget (13,000-17,000 images, from scratch) 60 per class were
# memorised (training accuracy 0.69, test top-1 0.37-0.40 on one CPU); results vary by CPU and seed.
DEFAULTS = {"image_size": 64, "train_per_class": 120, "test_per_class": 20, "seed": 0}


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape == "triangle":
        corners = [(0, -1.2), (1.1, 0.9), (-1.1, 0.9)]
    elif shape == "diamond":
        corners = [(0, -1.3), (0.8, 0), (0, 1.3), (-0.8, 0)]
    else:  # cross
        a, b = 0.35, 1.1
        corners = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in corners]


def render(label: int, rng: np.random.Generator, image_size: int = 64) -> Image.Image:
    """One image of class `label` (index into CLASS_NAMES)."""
    colour_name, shape = CLASS_NAMES[label].split("_")
    # Supersample 2x for clean edges, then downscale.
    size = image_size * 2
    base = rng.integers(60, 200, size=3)
    background = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(6, 14))):  # clutter: desaturated boxes, blobs and lines
        grey = int(rng.integers(20, 235))
        tint = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.integers(-25, 26, 3))
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tint)
        elif kind == 1:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tint)
        else:
            draw.line([x0, y0, x0 + w, y0 + h], fill=tint, width=int(rng.integers(2, 6)))
    r = size * rng.uniform(0.15, 0.22)
    cx, cy = rng.uniform(r * 1.4, size - r * 1.4, 2)
    colour = tuple(int(np.clip(v + d, 0, 255)) for v, d in zip(COLOURS[colour_name], rng.integers(-20, 21, 3)))
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(shape, cx, cy, r, rng.uniform(-0.4, 0.4)), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    return image.resize((image_size, image_size), Image.BILINEAR)


def synthetic_dir(data_dir: str | Path | None = None, **params: int) -> Path:
    p = {**DEFAULTS, **params}
    tag = f"v{VERSION}-s{p['image_size']}-n{p['train_per_class']}x{p['test_per_class']}-seed{p['seed']}"
    return resolve_data_dir(data_dir) / "synthetic" / tag


def ensure_synthetic(data_dir: str | Path | None = None, **params: int) -> tuple[Path, bool]:
    """Generate the data set if it is not there yet. Returns (folder, whether it was generated now)."""
    p = {**DEFAULTS, **params}
    target = synthetic_dir(data_dir, **p)
    if (target / "DONE").exists():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        for split, per_class, salt in (("train", p["train_per_class"], 0), ("test", p["test_per_class"], 1)):
            for label, name in enumerate(CLASS_NAMES):
                folder = tmp / split / name
                folder.mkdir(parents=True)
                for i in range(per_class):
                    rng = np.random.default_rng([p["seed"], salt, label, i])
                    render(label, rng, p["image_size"]).save(folder / f"{i:04d}.jpg", quality=92)
        (tmp / "DONE").write_text("complete\n")
        try:
            tmp.rename(target)  # atomic: a concurrent or interrupted run never leaves a half set behind
        except OSError:
            if not (target / "DONE").exists():
                raise
            return target, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, True
