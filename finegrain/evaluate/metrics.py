"""Retrieval metrics from one k-NN result: Recall@K, MAP@R and R-precision.

Definitions follow Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020). The query set is
the gallery (`evaluate_retrieval`) or a separate set (`evaluate_separate`: "my phone photos against
my product shots"); a separate query that is also a gallery item (the same image, known by its
identity) is removed from its own results and does not count in its R:
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
- Per class (`per_class=True`): the same figures averaged over the evaluated queries of each class.
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

SEPARATE_DEFINITIONS: dict[str, str] = {
    **DEFINITIONS,
    "query_set": "a separate query set; gallery items labelled -1 are distractors, queries labelled -1 are skipped",
    "self_exclusion": "a query that is also a gallery item (same identity: file path) is removed from its own "
    "results and from its R; exact duplicates under other identities still count",
    "R": "number of gallery items with the query's class, the query's own gallery item excluded",
    "lone_queries": "queries whose class has no gallery item (other than themselves): counted, reported, skipped",
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
    per_class: list[ClassFigures] | None = None  # worst first (MAP@R, then Recall@min K); None = not asked

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        d = asdict(self)
        d["recall_at_k"] = {str(k): v for k, v in self.recall_at_k.items()}
        if self.per_class is not None:
            d["per_class"] = [c.to_dict(class_names) for c in self.per_class]
        return d


@dataclass(frozen=True)
class ClassFigures:
    """Recall@K and MAP@R averaged over the evaluated queries of one class."""

    label: int
    num_queries: int
    recall_at_k: dict[int, float]
    map_at_r: float

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict:
        name = class_names[self.label] if class_names is not None and 0 <= self.label < len(class_names) else None
        return {"label": self.label, "class": name, "num_queries": self.num_queries, "map_at_r": self.map_at_r,
                "recall_at_k": {str(k): v for k, v in self.recall_at_k.items()}}


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


def _per_query(neighbours: np.ndarray, query_labels: np.ndarray, r: np.ndarray, gallery_labels: np.ndarray,
               ks: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(0-based rank of the first hit, R-precision, AP@R) of each query from its neighbour rows."""
    need = neighbours.shape[1]
    # One boolean matrix feeds every metric. Built in row chunks so the int64 label gather stays
    # small at SOP scale.
    match = np.empty((r.size, need), dtype=bool)
    for s in range(0, r.size, _MATCH_ROWS):
        e = s + _MATCH_ROWS
        match[s:e] = gallery_labels[neighbours[s:e]] == query_labels[s:e, None]
    first_hit = np.where(match.any(axis=1), match.argmax(axis=1), need)
    max_r = int(r.max(initial=0))
    rel = match[:, :max_r] & (np.arange(max_r)[None, :] < r[:, None])
    hits = np.cumsum(rel, axis=1, dtype=np.int64)
    precision_at_i = hits / np.arange(1, max_r + 1)
    r_precision = hits[np.arange(r.size), r - 1] / r if r.size else np.zeros(0)
    return first_hit, r_precision, (precision_at_i * rel).sum(axis=1) / np.maximum(r, 1)


def _class_figures(labels: np.ndarray, first_hit: np.ndarray, ap: np.ndarray, ks: list[int]) -> list[ClassFigures]:
    """Per-class means over evaluated queries, worst first (MAP@R, then Recall@min K, then label)."""
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    mean = lambda v: np.bincount(inverse, weights=v, minlength=classes.size) / counts  # noqa: E731
    recall = {k: mean((first_hit < k).astype(np.float64)) for k in ks}
    map_r = mean(ap)
    order = np.lexsort((classes, recall[ks[0]], map_r))
    return [ClassFigures(int(classes[i]), int(counts[i]), {k: float(recall[k][i]) for k in ks}, float(map_r[i]))
            for i in order]


def _report(query_labels: np.ndarray, r: np.ndarray, neighbours: np.ndarray, gallery_labels: np.ndarray,
            ks: list[int], knn: KnnResult, *, num_queries: int, num_lone: int, definitions: dict[str, str],
            per_class: bool) -> RetrievalReport:
    """Every figure from the evaluated queries' labels, R values and neighbour rows."""
    need = max(max(ks), int(r.max(initial=0)))
    if knn.k < need:
        raise ValueError(f"the k-NN result has k={knn.k} but these metrics need {need} (max K and max R)")
    recall: dict[int, float] = {}
    map_at_r = r_precision = float("nan")
    classes_figures = [] if per_class else None
    if r.size:
        first_hit, rp, ap = _per_query(neighbours[:, :need], query_labels, r, gallery_labels, ks)
        recall = {k: float(np.mean(first_hit < k)) for k in ks}
        map_at_r, r_precision = float(np.mean(ap)), float(np.mean(rp))
        if per_class:
            classes_figures = _class_figures(query_labels, first_hit, ap, ks)
    real = gallery_labels != DISTRACTOR
    return RetrievalReport(
        recall_at_k=recall,
        map_at_r=map_at_r,
        r_precision=r_precision,
        num_gallery=int(gallery_labels.shape[0]),
        num_queries=num_queries,
        num_evaluated=int(r.size),
        num_lone=num_lone,
        num_distractors=int((~real).sum()),
        num_classes=int(np.unique(gallery_labels[real]).size),
        metric=knn.metric,
        k_searched=knn.k,
        definitions=dict(definitions),
        per_class=classes_figures,
    )


def retrieval_metrics(knn: KnnResult, labels: np.ndarray, ks: Sequence[int], *,
                      per_class: bool = False) -> RetrievalReport:
    """Recall@K for each K, MAP@R and R-precision from one search, query set = gallery (see the
    module docstring); `per_class` adds the figures of each class, worst first.

    `knn` must hold the evaluated queries (lone queries and distractors may be absent; absent ones are
    still counted) with at least `search_depth(labels, ks)` neighbours.
    """
    labels = _check_labels(labels)
    ks = parse_ks(ks)
    per_item, _ = _class_counts(labels)
    others = per_item - 1  # R for every labelled item
    is_query = labels != DISTRACTOR
    evaluated = is_query & (others > 0)
    rows = np.flatnonzero(evaluated[knn.query_ids])
    qids = knn.query_ids[rows]
    if qids.size != int(evaluated.sum()):
        raise ValueError("the k-NN result is missing queries that have same-class items; search them all")
    return _report(labels[qids], others[qids], knn.indices[rows], labels, ks, knn, num_queries=int(is_query.sum()),
                   num_lone=int((is_query & (others == 0)).sum()), definitions=DEFINITIONS, per_class=per_class)


def _separate_r(query_labels: np.ndarray, gallery_labels: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """R of each separate query: gallery items of its class, its own gallery item (same identity) excluded."""
    classes, counts = np.unique(gallery_labels[gallery_labels != DISTRACTOR], return_counts=True)
    if classes.size == 0:
        return np.zeros(query_labels.shape, np.int64)
    at = np.minimum(np.searchsorted(classes, query_labels), classes.size - 1)
    r = np.where((classes[at] == query_labels) & (query_labels != DISTRACTOR), counts[at], 0)
    own = query_ids >= 0
    r[own] -= gallery_labels[query_ids[own]] == query_labels[own]
    return r.astype(np.int64)


def separate_metrics(knn: KnnResult, query_labels: np.ndarray, gallery_labels: np.ndarray, ks: Sequence[int], *,
                     per_class: bool = False) -> RetrievalReport:
    """`retrieval_metrics` for a separate query set: `knn` holds one row per query (`search` with
    `queries`), its `query_ids` the gallery row of each query that is also a gallery item, else -1."""
    query_labels, gallery_labels = _check_labels(query_labels), _check_labels(gallery_labels)
    if query_labels.shape[0] != knn.query_ids.shape[0]:
        raise ValueError("the k-NN result must hold one row per query")
    ks = parse_ks(ks)
    r = _separate_r(query_labels, gallery_labels, knn.query_ids)
    is_query = query_labels != DISTRACTOR
    rows = np.flatnonzero(is_query & (r > 0))
    return _report(query_labels[rows], r[rows], knn.indices[rows], gallery_labels, ks, knn,
                   num_queries=int(is_query.sum()), num_lone=int((is_query & (r == 0)).sum()),
                   definitions=SEPARATE_DEFINITIONS, per_class=per_class)


def separate_search_depth(query_labels: np.ndarray, gallery_labels: np.ndarray, query_ids: np.ndarray,
                          ks: Sequence[int]) -> int:
    """`search_depth` for a separate query set: max(max K, largest R), capped by the gallery size."""
    query_labels, gallery_labels = _check_labels(query_labels), _check_labels(gallery_labels)
    n = gallery_labels.shape[0]
    most = n - 1 if (np.asarray(query_ids) >= 0).any() else n
    if max(ks) > most:
        raise UserError(f"K={max(ks)} is larger than the gallery allows: {n} items, so K <= {most}")
    r = _separate_r(query_labels, gallery_labels, np.asarray(query_ids, np.int64))
    return int(min(max(max(ks), int(r.max(initial=0))), most))


def evaluate_separate(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] | str = (1, 2, 4, 8),
    *,
    query_ids: np.ndarray | None = None,
    metric: str = "cosine",
    per_class: bool = False,
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    rerank: Callable[[KnnResult], KnnResult] | None = None,
) -> tuple[RetrievalReport, KnnResult]:
    """Search a separate query set against the gallery as deep as the metrics need, then score it.

    query_ids: the gallery row of each query that is the same image as a gallery item, else -1
    (default: none are); see `identity_rows`. rerank: re-orders the search result before scoring.
    """
    ks = parse_ks(ks)
    query_labels = _check_labels(query_labels, np.asarray(queries).shape[0] if np.ndim(queries) == 2 else None)
    gallery_labels = _check_labels(gallery_labels, np.asarray(gallery).shape[0] if np.ndim(gallery) == 2 else None)
    qids = np.full(query_labels.shape, -1, np.int64) if query_ids is None else np.asarray(query_ids, np.int64)
    depth = separate_search_depth(query_labels, gallery_labels, qids, ks)
    knn = search(gallery, depth, metric=metric, queries=queries, query_ids=qids, chunk_size=chunk_size,
                 use_gpu=use_gpu, progress=progress)
    if rerank is not None:
        knn = rerank(knn)
    return separate_metrics(knn, query_labels, gallery_labels, ks, per_class=per_class), knn


def identity_rows(query_items: Sequence[str], gallery_items: Sequence[str]) -> np.ndarray:
    """The gallery row of each query whose identity (e.g. file path) is a gallery item's, else -1."""
    where = {item: row for row, item in enumerate(gallery_items)}
    return np.fromiter((where.get(item, -1) for item in query_items), np.int64, len(query_items))


def retrieval_search(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] | str = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    queries: np.ndarray | None = None,
) -> KnnResult:
    """Validate, then search exactly as deep as the metrics need (`search_depth`).

    Only queries that can score (labelled, with another item of their class) are searched.
    `queries`: other vectors to search with, one per gallery row (re-ranked ones), default the gallery's.
    """
    n = np.asarray(embeddings).shape[0] if np.ndim(embeddings) == 2 else None
    labels = _check_labels(labels, n)
    depth = search_depth(labels, parse_ks(ks))
    per_item, _ = _class_counts(labels)
    query_ids = np.flatnonzero((labels != DISTRACTOR) & (per_item > 1))
    return search(embeddings, depth, metric=metric, query_ids=query_ids, chunk_size=chunk_size, use_gpu=use_gpu,
                  progress=progress, queries=None if queries is None else np.asarray(queries)[query_ids])


def evaluate_retrieval(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] | str = (1, 2, 4, 8),
    *,
    metric: str = "cosine",
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
    per_class: bool = False,
) -> RetrievalReport:
    """The whole evaluation: one search (`retrieval_search`), then every metric from it."""
    knn = retrieval_search(embeddings, labels, ks, metric=metric, chunk_size=chunk_size, use_gpu=use_gpu,
                           progress=progress)
    return retrieval_metrics(knn, labels, ks, per_class=per_class)
