"""Opt-in re-ranking in embedding space: query expansion (alpha-QE) with database-side augmentation (DBA),
and k-reciprocal re-ranking.

Both replace vectors by a similarity-weighted mean of themselves and their nearest gallery items
(Radenovic et al., "Fine-tuning CNN Image Retrieval with No Human Annotation", 2018), then search
again: items that agree with a query's neighbourhood move up.
- DBA: each gallery vector becomes normalise(g + sum_i w_i g_i) over its k nearest other gallery items.
- alpha-QE: each query becomes normalise(q + sum_i w_i g'_i) over its k nearest (augmented) gallery
  items, the query's own gallery item excluded by identity.
- weights w_i = max(cosine_i, 0) ** alpha.
k-reciprocal re-ranking (`k_reciprocal`) re-orders a search result instead of changing vectors: a
candidate moves up when its neighbourhood and the query's share k-reciprocal neighbours (each is
among the other's k nearest), which demotes "hub" items that are near many queries but whose own
nearest are elsewhere.
Off by default: it changes what Recall@K measures, so a protocol card records it.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from finegrain.errors import UserError
from finegrain.evaluate.knn import KnnResult, prepare_embeddings, prepare_queries, search

METHODS: tuple[str, ...] = ("none", "qe", "dba+qe", "kreciprocal")
RESULT_METHODS = ("kreciprocal",)  # re-order a search result (the others change the vectors searched)
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
    if method == "none" or method in RESULT_METHODS:
        return queries, gallery
    if method == "dba+qe":
        gallery = augment_gallery(gallery, k, alpha)
    return expand_queries(queries, gallery, query_ids, k, alpha), gallery


# ---- k-reciprocal re-ranking ----------------------------------------------------------------------
# Zhong et al., "Re-ranking Person Re-identification with k-reciprocal Encoding" (CVPR 2017), on a
# sparse k-NN graph instead of the paper's dense N x N distance matrix, so it scales with N * k1.
KRECIPROCAL_K1, KRECIPROCAL_K2, KRECIPROCAL_LAMBDA, KRECIPROCAL_DEPTH = 20, 6, 0.3, 100


def _neighbour_graph(rows: np.ndarray, k: int, n: int) -> sparse.csr_matrix:
    """Boolean n x n: each row's first k + 1 entries of `rows` (itself first, then its k nearest)."""
    cols = rows[:, : k + 1]
    return sparse.csr_matrix((np.ones(cols.size, bool), cols.ravel(), np.arange(0, cols.size + 1, k + 1)), (n, n))


def _pair_cosines(x: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65_536) -> np.ndarray:
    return np.concatenate([np.einsum("ij,ij->i", x[a[s : s + chunk]], x[b[s : s + chunk]])
                           for s in range(0, a.size, chunk)] or [np.zeros(0, np.float32)])


def _encoding(x: np.ndarray, k1: int, k2: int) -> sparse.csr_matrix:
    """The k-reciprocal encoding V of every row of `x` (L2-normalised), after local query expansion."""
    n = x.shape[0]
    found = search(x, min(k1, n - 1))
    rows = np.concatenate([np.arange(n)[:, None], found.indices], axis=1)  # itself first, as at distance 0
    k1 = found.k
    near = _neighbour_graph(rows, k1, n)
    reciprocal = near.multiply(near.T).tocsr()  # R(i, k1): j among i's k1 nearest and i among j's
    half = _neighbour_graph(rows, max(1, round(k1 / 2)), n)
    half = half.multiply(half.T).tocsr()  # R(j, k1/2)
    # Expansion: add R(j, k1/2) of each j in R(i, k1) that shares at least 2/3 of it with R(i, k1).
    shared = (reciprocal.astype(np.float32) @ half.T.astype(np.float32)).multiply(reciprocal).tocoo()
    half_sizes = np.asarray(half.sum(axis=1)).ravel()
    keep = shared.data >= (2 / 3) * half_sizes[shared.col]
    qualified = sparse.csr_matrix((np.ones(keep.sum(), np.float32), (shared.row[keep], shared.col[keep])), (n, n))
    expanded = ((reciprocal.astype(np.float32) + qualified @ half.astype(np.float32)) > 0).tocoo()
    # V(i, j) = exp(-||x_i - x_j||^2) over the expanded set, each row summing to 1.
    weights = np.exp(-(2 - 2 * _pair_cosines(x, expanded.row, expanded.col)))
    v = sparse.csr_matrix((weights, (expanded.row, expanded.col)), (n, n))
    v = sparse.diags(1 / np.asarray(v.sum(axis=1)).ravel()) @ v
    if k2 > 1:  # local query expansion: the mean encoding of each row and its k2 - 1 nearest
        v = (_neighbour_graph(rows, min(k2, k1 + 1) - 1, n).astype(np.float32) @ v) / min(k2, k1 + 1)
    return v.tocsr()


def _overlap(v: sparse.csr_matrix, rows: np.ndarray, candidates: np.ndarray, max_terms: int = 1 << 23) -> np.ndarray:
    """sum_j min(V[rows[i], j], V[candidates[i, c], j]) for every (i, c): over the support of V[rows[i]]."""
    out = np.empty(candidates.shape, np.float32)
    sizes = np.diff(v.indptr)[rows] * candidates.shape[1]
    step = max(1, int(max_terms // max(1, sizes.max(initial=1))))
    for s in range(0, rows.size, step):
        r, cand = rows[s : s + step], candidates[s : s + step]
        starts, counts = v.indptr[r], np.diff(v.indptr)[r]
        terms = counts.repeat(cand.shape[1])  # each pair (query, candidate) sums over the query's support
        pair = np.repeat(np.arange(cand.size), terms)
        query = pair // cand.shape[1]
        at = np.arange(pair.size) - np.repeat(np.cumsum(terms) - terms, terms)
        cols = v.indices[starts[query] + at]
        mine = v.data[starts[query] + at]
        theirs = np.asarray(v[cand.ravel()[pair], cols]).ravel()
        out[s : s + step] = np.bincount(pair, np.minimum(mine, theirs), minlength=cand.size).reshape(cand.shape)
    return out


def k_reciprocal(knn: KnnResult, gallery: np.ndarray, queries: np.ndarray | None = None, *,
                 k1: int = KRECIPROCAL_K1, k2: int = KRECIPROCAL_K2, lambda_: float = KRECIPROCAL_LAMBDA,
                 depth: int = KRECIPROCAL_DEPTH) -> KnnResult:
    """Re-order the first `depth` neighbours of each row of a cosine `knn` result by k-reciprocal encoding.

    Queries and gallery are encoded together (the paper's probe + gallery set): a query that is a
    gallery item by identity is that row, a separate one is added. Each item's encoding V weights its
    k-reciprocal neighbours (expanded by their k1/2-reciprocal ones) by exp(-squared distance), averaged
    over its k2 nearest; the new distance is (1 - lambda) * Jaccard(V_query, V_candidate) + lambda *
    (1 - cosine) / 2. Re-ranked entries score 1 - that distance; entries past `depth` keep their order and
    cosine. `queries`: the separate query vectors (None: the queries are the gallery rows knn.query_ids).
    """
    if knn.metric != "cosine":
        raise UserError("k-reciprocal re-ranking compares L2-normalised embeddings: use it with --metric cosine")
    if min(k1, k2, depth) < 1 or not 0 <= lambda_ <= 1:
        raise UserError(f"k-reciprocal re-ranking needs k1, k2, depth >= 1 and 0 <= lambda <= 1, got k1={k1}, "
                        f"k2={k2}, depth={depth}, lambda={lambda_}")
    g = prepare_embeddings(gallery)
    rows = knn.query_ids.copy()
    x = g
    if queries is not None:
        q = prepare_queries(queries, g.shape[1])
        separate = np.flatnonzero(rows < 0)
        rows[separate] = g.shape[0] + np.arange(separate.size)
        x = np.concatenate([g, q[separate]])
    v = _encoding(x, k1, k2)
    depth = min(depth, knn.k)
    candidates = knn.indices[:, :depth]
    overlap = _overlap(v, rows, candidates)
    jaccard = 1 - overlap / (2 - overlap)  # each row of V sums to 1, so sum max = 2 - sum min
    distance = (1 - lambda_) * jaccard + lambda_ * (1 - knn.scores[:, :depth]) / 2
    order = np.lexsort((candidates, distance), axis=1)
    indices, scores = knn.indices.copy(), knn.scores.copy()
    indices[:, :depth] = np.take_along_axis(candidates, order, 1)
    scores[:, :depth] = 1 - np.take_along_axis(distance, order, 1)
    return KnnResult(indices=indices, scores=scores.astype(np.float32), query_ids=knn.query_ids, metric=knn.metric)
