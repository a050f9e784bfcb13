"""The FAISS side of an index: which index types exist, how each is made and searched, and how far an
approximate one is from exact search.

Every index scores by inner product on L2-normalised embeddings (cosine similarity). The type is
kept in the index card as a FAISS factory string plus search parameters, so any FAISS tool can read
`index.faiss` and search it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import faiss
import numpy as np

from finegrain.errors import UserError
from finegrain.evaluate.knn import drop_self, sort_rows


@dataclass(frozen=True)
class IndexType:
    name: str
    description: str
    approximate: bool
    bytes_per_dim: float  # memory of one stored vector per dimension (graph links not counted)


INDEX_TYPES: dict[str, IndexType] = {t.name: t for t in (
    IndexType("flat", "exact search over float32 vectors (the default)", False, 4),
    IndexType("fp16", "exact search over float16 vectors: half the memory, scores rounded to ~1e-3", False, 2),
    IndexType("ivf", "approximate: inverted file (about 2 sqrt(N) cells, 1/16 of them searched) over 8-bit "
              "codes: a quarter of the memory", True, 1),
    IndexType("hnsw", "approximate: HNSW graph (32 links) over float32 vectors: fastest queries, more memory", True, 4),
)}
RECALL_K = 10  # the approximate index's recall is measured at this depth, at build time
IVF_POINTS_PER_CELL = 39  # FAISS's k-means wants at least this many training points per cell


def check_type(name: str) -> IndexType:
    if name not in INDEX_TYPES:
        raise UserError(f"unknown index type {name!r}: choose one of {', '.join(INDEX_TYPES)}")
    return INDEX_TYPES[name]


def factory(name: str, num_vectors: int) -> tuple[str, str]:
    """(FAISS factory string, search parameters) of index type `name` for about `num_vectors` vectors."""
    check_type(name)
    if name == "flat":
        return "Flat", ""
    if name == "fp16":
        return "SQfp16", ""
    if name == "hnsw":
        return "HNSW32", "efSearch=128"
    cells = ivf_cells(num_vectors)
    return f"IVF{cells},SQ8", f"nprobe={max(1, cells // 16)}"


def ivf_cells(num_vectors: int) -> int:
    """Cells of an IVF index: about 2 sqrt(N), with FAISS's minimum of training points per cell."""
    return max(1, min(int(2 * math.sqrt(num_vectors)), num_vectors // IVF_POINTS_PER_CELL))


def training_rows(name: str, num_vectors: int) -> int:
    """How many stored vectors train an index of type `name` (0: it needs no training)."""
    return min(num_vectors, 2 * IVF_POINTS_PER_CELL * ivf_cells(num_vectors)) if name == "ivf" else 0


def new_index(factory_string: str, dim: int, training: Callable[[], np.ndarray] | None = None) -> faiss.Index:
    """An empty index of `factory_string`; trained on `training()` (float32 rows) when the type needs it."""
    index = faiss.index_factory(dim, factory_string, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        if training is None:
            raise ValueError(f"a {factory_string} index needs training vectors")
        index.train(np.ascontiguousarray(training(), dtype=np.float32))
    return index


def set_search_parameters(index: faiss.Index, parameters: str) -> None:
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index, parameters)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 [Q, k], rows int64 [Q, k]) best first, equal scores by lower row; rows of -1 (and
    score -inf) where the index holds fewer than k items or an approximate search found fewer."""
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    scores[rows < 0] = -np.inf
    return sort_rows(scores, rows)


def exact_neighbours(chunks: Iterable[np.ndarray], queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k most similar vectors over every chunk (in order: rows count on), exact search;
    memory is one chunk at a time."""
    heap = faiss.ResultHeap(queries.shape[0], k, keep_max=True)
    offset = 0
    for chunk in chunks:
        scores, rows = faiss.knn(queries, np.ascontiguousarray(chunk, dtype=np.float32), min(k, len(chunk)),
                                 metric=faiss.METRIC_INNER_PRODUCT)
        heap.add_result(scores, np.where(rows >= 0, rows + offset, -1))
        offset += len(chunk)
    heap.finalize()
    return sort_rows(heap.D, heap.I)[1]


def recall_against_exact(index: faiss.Index, queries: np.ndarray, query_rows: np.ndarray, exact: np.ndarray,
                         k: int = RECALL_K) -> float:
    """Share of the exact k nearest (the query's own row excluded) that the index's k nearest hold.

    `queries` are stored vectors (rows `query_rows`); `exact`: their exact k + 1 nearest rows.
    """
    found = search(index, queries, k + 1)[1]
    zeros = np.zeros(found.shape, np.float32)
    truth = drop_self(zeros, exact, query_rows)[1]
    mine = drop_self(zeros, found, query_rows)[1]
    hits = (mine[:, :, None] == truth[:, None, :]).any(axis=1) & (truth >= 0)
    return float(hits.sum() / max(1, int((truth >= 0).sum())))


def sample_rows(count: int, size: int) -> np.ndarray:
    """`size` evenly spaced rows of 0..count-1 (deterministic)."""
    return np.unique(np.linspace(0, count - 1, min(size, count)).round().astype(np.int64))
