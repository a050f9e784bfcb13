"""Straightforward NumPy brute-force reference for the retrieval tests (slow, obviously correct)."""

from __future__ import annotations

import numpy as np


def similarity_matrix(x: np.ndarray, metric: str) -> np.ndarray:
    x = x.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return x @ x.T
    return -((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)


def ranked_neighbours(x: np.ndarray, metric: str) -> list[np.ndarray]:
    """For each row: every other gallery index, by score descending then index ascending."""
    s = similarity_matrix(x, metric)
    n = len(x)
    out = []
    for q in range(n):
        order = np.lexsort((np.arange(n), -s[q]))  # stable: lower index first on ties
        out.append(order[order != q])  # self removed by identity, duplicates kept
    return out


def reference_metrics(x: np.ndarray, labels: np.ndarray, ks: list[int], metric: str) -> dict:
    ranked = ranked_neighbours(x, metric)
    recall = {k: [] for k in ks}
    rp, mapr, lone = [], [], 0
    for q, order in enumerate(ranked):
        if labels[q] == -1:
            continue
        rel = labels[order] == labels[q]
        r = int(rel.sum())
        if r == 0:
            lone += 1
            continue
        for k in ks:
            recall[k].append(bool(rel[:k].any()))
        rp.append(rel[:r].sum() / r)
        precisions = [rel[: i + 1].sum() / (i + 1) for i in range(r)]
        mapr.append(sum(p for p, hit in zip(precisions, rel[:r]) if hit) / r)
    return {
        "recall": {k: float(np.mean(v)) for k, v in recall.items()},
        "r_precision": float(np.mean(rp)),
        "map_at_r": float(np.mean(mapr)),
        "lone": lone,
        "evaluated": len(rp),
    }


def exact_tie_data(n: int = 300, dim: int = 16, num_classes: int = 40, seed: int = 0):
    """Vectors in {+-0.25}^16 (unit norm, every dot product exact in float32): many ties,
    exact duplicates of some rows, a few -1 distractors and a few lone classes."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 2, (n, dim)) * 2 - 1).astype(np.float32) * 0.25
    labels = rng.integers(0, num_classes, n)
    x[10:16] = x[3]  # exact duplicates of row 3: one same-class, others not
    labels[10] = labels[3]
    x[20] = x[21]
    labels[-8:] = -1  # distractors
    labels[30] = 1000  # lone queries
    labels[31] = 1001
    return x, labels.astype(np.int64)
