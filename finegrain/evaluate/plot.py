"""A picture of retrieval: sample queries (left column) and their nearest results, green when the
result has the query's class, red when not."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image

from finegrain.evaluate.knn import KnnResult
from finegrain.utils.io import atomic_path


def sample_queries(knn: KnnResult, labels: np.ndarray, count: int) -> np.ndarray:
    """Rows of `knn` to show: evenly spaced over the queries that have same-class items (deterministic)."""
    per_class = np.bincount(labels[labels >= 0])
    usable = np.flatnonzero((labels[knn.query_ids] >= 0) & (per_class[np.maximum(labels[knn.query_ids], 0)] > 1))
    if usable.size == 0:
        return usable
    return usable[np.unique(np.linspace(0, usable.size - 1, min(count, usable.size)).round().astype(int))]


def read_images(dataset: Any, wanted: set[int], thumb: int = 96) -> dict[int, np.ndarray]:
    """Decode the encoded images at positions `wanted` of a (encoded, label) tf.data set into thumbnails."""
    found: dict[int, np.ndarray] = {}
    for position, (encoded, _) in enumerate(dataset.as_numpy_iterator()):
        if position in wanted:
            image = Image.open(io.BytesIO(encoded)).convert("RGB")
            image.thumbnail((thumb, thumb))
            found[position] = np.asarray(image)
            if len(found) == len(wanted):
                break
    return found


def plot_retrieval(
    path: str | os.PathLike,
    knn: KnnResult,
    labels: np.ndarray,
    images: dict[int, np.ndarray],
    rows: np.ndarray,
    *,
    top: int,
    title: str = "",
    class_names: list[str] | None = None,
) -> None:
    """Write a PNG grid: one query per line, then its `top` nearest results framed green/red."""
    top = min(top, knn.k)

    def name(label: int) -> str:
        return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)

    grid = []
    for row in rows:
        query = int(knn.query_ids[row])
        cells = [(images.get(query), "black", f"query: {name(labels[query])}")]
        for rank, neighbour in enumerate(knn.indices[row, :top], start=1):
            right = labels[neighbour] == labels[query]
            cells.append((images.get(int(neighbour)), "green" if right else "red", f"#{rank} {name(labels[neighbour])}"))
        grid.append(cells)
    plot_grid(path, grid, title=title)


def plot_search(path: str | os.PathLike, results: list[dict], *, title: str = "", top: int = 8) -> None:
    """Write a PNG grid of `finegrain search` results: each query photo, then its nearest gallery items
    with class and score (items that are not readable files are left blank)."""
    grid = []
    for result in results:
        cells = [(thumbnail(result["query"]), "black", "query")]
        for r in result["results"][:top]:
            cells.append((thumbnail(r["item"]), "black", f"#{r['rank']} {r['class']} {r['score']:.3f}"))
        grid.append(cells)
    plot_grid(path, grid, title=title)


def thumbnail(path: str, size: int = 96) -> np.ndarray | None:
    """A small RGB copy of an image file, or None when it is not a readable image file."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            return np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def plot_grid(path: str | os.PathLike, grid: list[list[tuple[np.ndarray | None, str, str]]], *, title: str = "") -> None:
    """Write a PNG of rows of (image or None, frame colour, caption) cells, atomically."""
    import matplotlib  # here, not at the top: matplotlib.use must run before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in grid)
    fig, axes = plt.subplots(len(grid), columns, figsize=(1.6 * columns, 1.7 * len(grid)), squeeze=False)
    for line, cells in zip(axes, grid):
        for ax in line[len(cells):]:
            ax.axis("off")
        for ax, (image, colour, text) in zip(line, cells):
            if image is not None:
                ax.imshow(image)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(4)
            ax.set_title(text, fontsize=7, color=colour)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
