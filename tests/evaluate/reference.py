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


def _figures(rel_rows: list[np.ndarray], ks: list[int]) -> tuple[dict, list]:
    """Averages over queries given each query's relevance along its ranking; lone (no relevant) skipped.
    Also returns (AP@R, {k: hit}) per evaluated query, in order."""
    recall = {k: [] for k in ks}
    rp, mapr, lone, each = [], [], 0, []
    for rel in rel_rows:
        r = int(rel.sum())
        if r == 0:
            lone += 1
            continue
        for k in ks:
            recall[k].append(bool(rel[:k].any()))
        rp.append(rel[:r].sum() / r)
        precisions = [rel[: i + 1].sum() / (i + 1) for i in range(r)]
        mapr.append(sum(p for p, hit in zip(precisions, rel[:r]) if hit) / r)
        each.append((mapr[-1], {k: bool(rel[:k].any()) for k in ks}))
    return {
        "recall": {k: float(np.mean(v)) for k, v in recall.items()},
        "r_precision": float(np.mean(rp)),
        "map_at_r": float(np.mean(mapr)),
        "lone": lone,
        "evaluated": len(rp),
    }, each


def reference_metrics(x: np.ndarray, labels: np.ndarray, ks: list[int], metric: str) -> dict:
    ranked = ranked_neighbours(x, metric)
    return _figures([labels[order] == labels[q] for q, order in enumerate(ranked) if labels[q] != -1], ks)[0]


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


def reference_separate(queries: np.ndarray, query_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                       query_ids: np.ndarray, ks: list[int], per_class: bool = False) -> dict:
    """Query != gallery: rank the whole gallery for each query (cosine, ties by lower index), drop the
    query's own gallery row (identity), score with the same definitions as `reference_metrics`."""
    q = queries.astype(np.float64) / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery.astype(np.float64) / np.linalg.norm(gallery, axis=1, keepdims=True)
    s = q @ g.T
    asked = [i for i in range(len(q)) if query_labels[i] != -1]
    rel_rows = []
    for i in asked:
        order = np.lexsort((np.arange(len(g)), -s[i]))
        order = order[order != query_ids[i]]
        rel_rows.append(gallery_labels[order] == query_labels[i])
    out, each = _figures(rel_rows, ks)
    if per_class:
        evaluated = [i for i, rel in zip(asked, rel_rows) if rel.any()]
        classes: dict[int, list] = {}
        for i, figures in zip(evaluated, each):
            classes.setdefault(int(query_labels[i]), []).append(figures)
        out["per_class"] = {c: (float(np.mean([a for a, _ in v])), {k: float(np.mean([h[k] for _, h in v])) for k in ks})
                            for c, v in classes.items()}
    return out
