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
    import matplotlib  # here, not at the top: matplotlib.use must run before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = min(top, knn.k)

    def name(label: int) -> str:
        return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)

    fig, axes = plt.subplots(len(rows), top + 1, figsize=(1.6 * (top + 1), 1.7 * len(rows)), squeeze=False)
    for line, row in zip(axes, rows):
        query = int(knn.query_ids[row])
        cells = [(query, "black", f"query: {name(labels[query])}")]
        for rank, neighbour in enumerate(knn.indices[row, :top], start=1):
            right = labels[neighbour] == labels[query]
            cells.append((int(neighbour), "green" if right else "red", f"#{rank} {name(labels[neighbour])}"))
        for ax, (index, colour, text) in zip(line, cells):
            if index in images:
                ax.imshow(images[index])
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
