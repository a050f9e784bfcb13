"""Exact k-nearest-neighbour search for retrieval evaluation: queries are rows of the gallery, or a
separate query set whose members may also be in the gallery (then known by their gallery row).

One search produces one `KnnResult` (gallery indices and scores, best first) that every metric
reads; search, storage and metrics stay separate (the TF Similarity layout).

Definitions this module guarantees:
- Scores: cosine similarity on L2-normalised vectors (`metric="cosine"`), or the negative squared
  Euclidean distance on the vectors as given (`metric="euclidean"`). Higher is always closer.
- Self-exclusion by identity: each query asks for k+1 neighbours and the column holding the
  query's own gallery index is removed; if the query is not among them (more than k exact
  duplicates rank ahead of it), the last column is dropped instead. Exact duplicates of the query
  are other gallery items and still count as neighbours. Never "drop rank 1".
- Ties are broken by lower gallery index, also across the k boundary: FAISS keeps an arbitrary
  subset of items tied at the k-th score, so rows with a tie at the boundary are searched deeper
  until the tie is fully inside the result, then re-sorted by (score desc, index asc).

FAISS does the exact search (`faiss.knn` on CPU: no copy of the gallery; `faiss.knn_gpu` when
faiss sees a GPU and k <= 2048, its limit). Queries go in chunks that are multiples of FAISS's
internal query block, which keeps memory bounded and makes chunked and unchunked runs give
bit-identical scores (BLAS rounding depends on how many rows share a block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from finegrain.errors import UserError

Metric = Literal["cosine", "euclidean"]
METRICS: tuple[str, ...] = ("cosine", "euclidean")
GPU_MAX_K = 2048  # faiss GPU k-selection limit
_CHUNK_RESULT_BYTES = 128 * 2**20  # per-chunk budget for FAISS results + sort temporaries


@dataclass(frozen=True)
class KnnResult:
    """Neighbours of each query, best first, the query itself removed.

    indices: int64 [Q, k] gallery indices; scores: float32 [Q, k] (higher = closer);
    query_ids: int64 [Q] gallery index of each query (-1: a separate query not in the gallery);
    metric: "cosine" or "euclidean".
    """

    indices: np.ndarray
    scores: np.ndarray
    query_ids: np.ndarray
    metric: str

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def prepare_embeddings(embeddings: np.ndarray, metric: str = "cosine", *, min_rows: int = 2,
                       what: str = "embeddings") -> np.ndarray:
    """Validate and return C-contiguous float32 vectors; L2-normalised for cosine."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise UserError(f"{what} must be a 2-D array [N >= {min_rows}, D >= 1], got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.number):
        raise UserError(f"embeddings must be numeric, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise UserError("embeddings contain NaN or infinite values: check the model output")
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.maximum(norms, np.float32(1e-12))  # zero vectors stay zero
    return x


def _faiss_search(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, gpu: object | None):
    """Raw FAISS exact search -> (scores float32 [q, k], ids int64 [q, k]), higher score = closer."""
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if gpu is not None and k <= GPU_MAX_K:
        dist, ids = faiss.knn_gpu(gpu, xq, xb, k, metric=faiss_metric)
    else:
        dist, ids = faiss.knn(xq, xb, k, metric=faiss_metric)
    if metric == "euclidean":
        np.negative(dist, out=dist)  # squared L2 distance -> score
    return dist, ids


def sort_rows(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, then gallery index ascending (in place, vectorised).

    FAISS already returns rows by score, so only rows holding equal (or out-of-order) neighbours
    are re-sorted: a full lexsort of every row costs more than the search at SOP scale.
    """
    rows = np.flatnonzero((scores[:, 1:] >= scores[:, :-1]).any(axis=1))
    if rows.size:
        order = np.lexsort((ids[rows], -scores[rows]), axis=1)
        scores[rows] = np.take_along_axis(scores[rows], order, 1)
        ids[rows] = np.take_along_axis(ids[rows], order, 1)
    return scores, ids


def _search_ordered(xq: np.ndarray, xb: np.ndarray, keep: int, metric: str, gpu: object | None):
    """Top-`keep` per row with exact lower-index tie-breaking across the boundary.

    Searches `keep + 1`; a row whose last kept score equals the extra one may have tied items
    FAISS left out, so it is searched again with twice the depth until the tie ends inside the
    result (or the whole gallery is returned). Ties are rare on real embeddings.
    """
    n = xb.shape[0]
    depth = min(keep + 1, n)
    scores, ids = sort_rows(*_faiss_search(xq, xb, depth, metric, gpu))
    if depth == n:
        return scores[:, :keep], ids[:, :keep]
    scores, ids = scores[:, : keep + 1], ids[:, : keep + 1]
    tied = np.flatnonzero(scores[:, keep - 1] == scores[:, keep])
    while tied.size:
        depth = min(2 * depth, n)
        s, i = sort_rows(*_faiss_search(xq[tied], xb, depth, metric, gpu))
        scores[tied], ids[tied] = s[:, : keep + 1], i[:, : keep + 1]
        still = (depth < n) & (s[:, keep - 1] == s[:, -1])
        tied = tied[still]
    return scores[:, :keep], ids[:, :keep]


def drop_self(scores: np.ndarray, ids: np.ndarray, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own gallery index (by identity); rows without it lose their last column."""
    is_self = ids == query_ids[:, None]
    position = np.where(is_self.any(axis=1), is_self.argmax(axis=1), ids.shape[1] - 1)
    after_self = np.arange(ids.shape[1] - 1)[None, :] >= position[:, None]  # shift left past self
    return np.where(after_self, scores[:, 1:], scores[:, :-1]), np.where(after_self, ids[:, 1:], ids[:, :-1])


def _gpu_resources(use_gpu: bool | None) -> object | None:
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu is False or num_gpus == 0:
        if use_gpu:
            raise UserError("--gpu asked for, but faiss sees no GPU: install faiss-gpu or drop the option")
        return None
    return faiss.StandardGpuResources()


def chunk_rows(k: int, chunk_size: int | None = None) -> int:
    """Queries per FAISS call: a multiple of FAISS's query block, bounded by a memory budget."""
    block = max(1, int(faiss.cvar.distance_compute_blas_query_bs))
    if chunk_size is None:
        chunk_size = _CHUNK_RESULT_BYTES // (12 * (k + 2) * 3)  # ids + scores, ~3 live copies
    return max(block, (int(chunk_size) // block) * block)


def search(
    embeddings: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    query_ids: np.ndarray | None = None,
    queries: np.ndarray | None = None,
    chunk_size: int | None = None,
    use_gpu: bool | None = None,
    progress: object | None = None,
) -> KnnResult:
    """k nearest gallery items of each query, the query itself excluded by identity.

    embeddings: [N, D] gallery; k: neighbours per query; queries: a separate [Q, D] query set (default:
    the gallery rows `query_ids` are the queries); query_ids: without `queries`, the gallery rows used as
    queries (default: all); with `queries`, the gallery row of each query that is also a gallery item
    (the same image) and -1 for the others. k is 1..N-1 when any query is in the gallery, else 1..N.
    chunk_size: queries per FAISS call (rounded to FAISS's query block; default from a 128 MB budget);
    use_gpu: None = when faiss sees one; progress: optional callable(done, total) after each chunk.
    """
    x = prepare_embeddings(embeddings, metric)
    n = x.shape[0]
    if queries is None:
        xq = x
        qids = np.arange(n, dtype=np.int64) if query_ids is None else np.asarray(query_ids, dtype=np.int64)
        rows_of = qids
        if qids.ndim != 1 or (qids.size and (qids.min() < 0 or qids.max() >= n)):
            raise UserError(f"query ids must be gallery rows in 0..{n - 1}")
    else:
        xq = prepare_queries(queries, x.shape[1], metric)
        qids = np.full(xq.shape[0], -1, np.int64) if query_ids is None else np.asarray(query_ids, dtype=np.int64)
        rows_of = np.arange(xq.shape[0], dtype=np.int64)
        if qids.shape != (xq.shape[0],) or (qids.size and (qids.min() < -1 or qids.max() >= n)):
            raise UserError(f"query ids must be one per query, each a gallery row in 0..{n - 1} or -1")
    any_self = bool((qids >= 0).any())
    most = n - 1 if any_self else n
    if not 1 <= k <= most:
        raise UserError(f"k={k} is out of range: the gallery has {n} items, so k must be 1..{most}")
    gpu = _gpu_resources(use_gpu)
    out_ids = np.empty((qids.size, k), dtype=np.int64)
    out_scores = np.empty((qids.size, k), dtype=np.float32)
    step = chunk_rows(k, chunk_size)
    for start in range(0, qids.size, step):
        rows, ids_here = rows_of[start : start + step], qids[start : start + step]
        end = start + rows.size
        if k < n:  # one extra neighbour for the query's own row, dropped by identity (else the last)
            scores, ids = _search_ordered(xq[rows], x, k + 1, metric, gpu)
            out_scores[start:end], out_ids[start:end] = drop_self(scores, ids, ids_here)
        else:  # k == n: no query is in the gallery, so nothing to drop
            out_scores[start:end], out_ids[start:end] = _search_ordered(xq[rows], x, k, metric, gpu)
        if progress is not None:
            progress(min(start + step, qids.size), qids.size)
    return KnnResult(indices=out_ids, scores=out_scores, query_ids=qids, metric=metric)


def prepare_queries(queries: np.ndarray, dim: int, metric: str = "cosine") -> np.ndarray:
    """`prepare_embeddings` for a query set (one row allowed) that must match the gallery's width."""
    q = prepare_embeddings(queries, metric, min_rows=0, what="queries")
    if q.shape[1] != dim:
        raise UserError(f"queries have {q.shape[1]} dimensions but the gallery has {dim}: embed both with one model")
    return q
