"""Retrieval metrics from one k-NN result: Recall@K, MAP@R and R-precision.

Definitions follow Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020), with query
set = gallery:
- Recall@K: share of evaluated queries with at least one same-class item among their K nearest
  gallery items (the query itself excluded by identity). This is the metric-learning papers'
  Recall@K (Recall@1 = precision@1), not information-retrieval recall.
- R: the number of *other* gallery items with the query's class.
- R-precision: (same-class items among the R nearest) / R.
- MAP@R: (1/R) * sum over ranks i = 1..R of P(i) * rel(i), where rel(i) = 1 if the i-th nearest is
  same-class and P(i) = same-class items among the i nearest / i.
- Distractors (label -1) are gallery items only: never queries, never relevant.
- Lone queries (no other item of their class) are counted, reported and skipped: they enter no average.
- MAP@R and R-precision need R neighbours per query, so the search depth is
  max(max K, largest class size - 1), capped at gallery size - 1 (`search_depth`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from finegrain.errors import UserError
from finegrain.evaluate.knn import KnnResult, search

DISTRACTOR = -1
_MATCH_ROWS = 8192

DEFINITIONS: dict[str, str] = {
    "query_set": "query set = gallery; distractors (label -1) are gallery-only",
    "self_exclusion": "each query is removed from its own results by identity (its gallery index), "
    "not by dropping rank 1, so exact duplicates of the query still count",
    "ties": "equal scores are ordered by lower gallery index, also at the k boundary",
    "similarity": "cosine: dot product of L2-normalised embeddings; euclidean: negative squared L2 distance",
    "recall_at_k": "share of evaluated queries with at least one same-class item among their K nearest",
    "R": "number of other gallery items with the query's class",
    "r_precision": "same-class items among the R nearest, divided by R; averaged over evaluated queries",
    "map_at_r": "(1/R) * sum_{i=1..R} P(i) * rel(i); P(i) = same-class share of the i nearest; "
    "averaged over evaluated queries",
    "lone_queries": "queries whose class has no other gallery item: counted, reported, skipped",
}


@dataclass(frozen=True)
class RetrievalReport:
    """Values, counts and definitions of one retrieval evaluation."""

    recall_at_k: dict[int, float]
    map_at_r: float
    r_precision: float
    num_gallery: int
    num_queries: int  # gallery items with a class label (not distractors)
    num_evaluated: int  # queries with at least one other item of their class
    num_lone: int
    num_distractors: int
    num_classes: int
    metric: str
    k_searched: int
    definitions: dict[str, str] = field(default_factory=lambda: dict(DEFINITIONS))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recall_at_k"] = {str(k): v for k, v in self.recall_at_k.items()}
        return d


def parse_ks(ks: Sequence[int] | str) -> list[int]:
    """'1,2,4,8' or [1, 2, 4, 8] -> sorted unique positive ints."""
    if isinstance(ks, str):
        try:
            ks = [int(p) for p in ks.replace(" ", "").split(",") if p]
        except ValueError:
            raise UserError(f"--k must be comma-separated positive integers like 1,2,4,8, got {ks!r}") from None
    out = sorted({int(k) for k in ks})
    if not out or out[0] < 1:
        raise UserError(f"K values must be positive integers, got {list(ks)!r}")
    return out


def _class_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(count of each item's class in the gallery, per item; 0 for distractors), distinct classes."""
    real = labels != DISTRACTOR
    classes, inverse, counts = np.unique(labels[real], return_inverse=True, return_counts=True)
    per_item = np.zeros(labels.shape, dtype=np.int64)
    per_item[real] = counts[inverse]
    return per_item, classes


def _check_labels(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be a 1-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    if n is not None and labels.shape[0] != n:
        raise UserError(f"embeddings have {n} rows but labels have {labels.shape[0]}: they must match one to one")
    if (labels < DISTRACTOR).any():
        raise UserError("labels must be >= 0, or -1 for gallery-only distractors")
    return labels.astype(np.int64, copy=False)


def search_depth(labels: np.ndarray, ks: Sequence[int]) -> int:
    """Neighbours needed for Recall@max(K) and MAP@R: max(max K, largest class - 1), capped at N - 1."""
    labels = _check_labels(labels)
    n = labels.shape[0]
    if max(ks) > n - 1:
        raise UserError(f"K={max(ks)} is larger than the gallery allows: {n} items, so K <= {n - 1}")
    per_item, _ = _class_counts(labels)
    return int(min(max(max(ks), int(per_item.max(initial=0)) - 1), n - 1))


def retrieval_metrics(knn: KnnResult, labels: np.ndarray, ks: Sequence[int]) -> RetrievalReport:
    """Recall@K for each K, MAP@R and R-precision from one search (see the module docstring).

    `knn` must hold the evaluated queries (lone queries and distractors may be absent; absent ones are
    still counted) with at least `search_depth(labels, ks)` neighbours.
    """
    labels = _check_labels(labels)
    ks = parse_ks(ks)
    per_item, classes = _class_counts(labels)
    others = per_item - 1  # R for every labelled item
    is_query = labels != DISTRACTOR
    evaluated = is_query & (others > 0)

    qids = knn.query_ids[evaluated[knn.query_ids]]
    rows = np.flatnonzero(evaluated[knn.query_ids])
    if qids.size != int(evaluated.sum()):
        raise ValueError("the k-NN result is missing queries that have same-class items; search them all")
    r = others[qids]
    need = max(max(ks), int(r.max(initial=0)))
    if knn.k < need:
        raise ValueError(f"the k-NN result has k={knn.k} but these metrics need {need} (max K and max R)")

    recall: dict[int, float] = {}
    map_at_r = r_precision = float("nan")
    if qids.size:
        # One boolean matrix feeds every metric; only the first `need` columns matter. Built in row
        # chunks so the int64 label gather stays small at SOP scale.
        match = np.empty((qids.size, need), dtype=bool)
        for s in range(0, qids.size, _MATCH_ROWS):
            e = s + _MATCH_ROWS
            match[s:e] = labels[knn.indices[rows[s:e], :need]] == labels[qids[s:e], None]
        first_hit = np.where(match.any(axis=1), match.argmax(axis=1), need)  # 0-based rank of first hit
        recall = {k: float(np.mean(first_hit < k)) for k in ks}
        max_r = int(r.max())
        within_r = np.arange(max_r)[None, :] < r[:, None]
        rel = match[:, :max_r] & within_r
        hits = np.cumsum(rel, axis=1, dtype=np.int64)
        precision_at_i = hits / np.arange(1, max_r + 1)
        r_precision = float(np.mean(hits[np.arange(r.size), r - 1] / r))
        map_at_r = float(np.mean((precision_at_i * rel).sum(axis=1) / r))

    return RetrievalReport(
        recall_at_k=recall,
        map_at_r=map_at_r,
        r_precision=r_precision,
        num_gallery=int(labels.shape[0]),
        num_queries=int(is_query.sum()),
        num_evaluated=int(evaluated.sum()),
        num_lone=int((is_query & (others == 0)).sum()),
        num_distractors=int((~is_query).sum()),
        num_classes=int(classes.size),
        metric=knn.metric,
        k_searched=knn.k,
    )


def retrieval_search(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] | str = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> KnnResult:
    """Validate, then search exactly as deep as the metrics need (`search_depth`).

    Only queries that can score (labelled, with another item of their class) are searched.
    """
    n = np.asarray(embeddings).shape[0] if np.ndim(embeddings) == 2 else None
    labels = _check_labels(labels, n)
    depth = search_depth(labels, parse_ks(ks))
    per_item, _ = _class_counts(labels)
    query_ids = np.flatnonzero((labels != DISTRACTOR) & (per_item > 1))
    return search(embeddings, depth, metric=metric, query_ids=query_ids, chunk_size=chunk_size, use_gpu=use_gpu,
                  progress=progress)


def evaluate_retrieval(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] | str = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RetrievalReport:
    """The whole evaluation: one search (`retrieval_search`), then every metric from it."""
    knn = retrieval_search(embeddings, labels, ks, metric=metric, chunk_size=chunk_size, use_gpu=use_gpu,
                           progress=progress)
    return retrieval_metrics(knn, labels, ks)
