"""Opt-in re-ranking in embedding space: query expansion (alpha-QE) with database-side augmentation (DBA).

Both replace vectors by a similarity-weighted mean of themselves and their nearest gallery items
(Radenovic et al., "Fine-tuning CNN Image Retrieval with No Human Annotation", 2018), then search
again: items that agree with a query's neighbourhood move up.
- DBA: each gallery vector becomes normalise(g + sum_i w_i g_i) over its k nearest other gallery items.
- alpha-QE: each query becomes normalise(q + sum_i w_i g'_i) over its k nearest (augmented) gallery
  items, the query's own gallery item excluded by identity.
- weights w_i = max(cosine_i, 0) ** alpha.
Off by default: it changes what Recall@K measures, so a protocol card records it.
"""

from __future__ import annotations

import numpy as np

from finegrain.errors import UserError
from finegrain.evaluate.knn import prepare_embeddings, prepare_queries, search

METHODS: tuple[str, ...] = ("none", "qe", "dba+qe")
DEFAULT_K = 5
DEFAULT_ALPHA = 3.0


def check_method(method: str | None) -> str:
    method = method or "none"
    if method not in METHODS:
        raise UserError(f"unknown re-ranking {method!r}: use one of {', '.join(METHODS)}")
    return method


def _expand(vectors: np.ndarray, gallery: np.ndarray, rows: np.ndarray, scores: np.ndarray, alpha: float) -> np.ndarray:
    weights = np.maximum(scores, 0.0) ** alpha
    expanded = vectors + np.einsum("qk,qkd->qd", weights, gallery[rows])
    return prepare_embeddings(expanded, min_rows=1)


def augment_gallery(gallery: np.ndarray, k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """DBA: each gallery vector averaged with its k nearest other gallery items (L2-normalised)."""
    g = prepare_embeddings(gallery)
    k = min(k, g.shape[0] - 1)
    found = search(g, k)
    return _expand(g, g, found.indices, found.scores, alpha)


def expand_queries(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, k: int = DEFAULT_K,
                   alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """alpha-QE: each query averaged with its k nearest gallery items (its own gallery row excluded)."""
    g = prepare_embeddings(gallery)
    q = prepare_queries(queries, g.shape[1])
    k = min(k, g.shape[0] - int((np.asarray(query_ids) >= 0).any()))
    found = search(g, k, queries=q, query_ids=query_ids)
    return _expand(q, g, found.indices, found.scores, alpha)


def rerank_vectors(queries: np.ndarray, gallery: np.ndarray, query_ids: np.ndarray, method: str, *,
                   k: int = DEFAULT_K, alpha: float = DEFAULT_ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(queries, gallery) to search instead of the originals for re-ranking `method`."""
    method = check_method(method)
    if k < 1:
        raise UserError(f"--rerank-k must be a positive integer, got {k}")
    if method == "none":
        return queries, gallery
    if method == "dba+qe":
        gallery = augment_gallery(gallery, k, alpha)
    return expand_queries(queries, gallery, query_ids, k, alpha), gallery
