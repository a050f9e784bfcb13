import faiss
import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate import knn
from tests.evaluate.reference import exact_tie_data, ranked_neighbours


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_search_equals_brute_force_with_ties_and_duplicates(metric):
    x, _ = exact_tie_data()
    k = 25
    result = knn.search(x, k, metric=metric)
    expected = np.stack([order[:k] for order in ranked_neighbours(x, metric)])
    np.testing.assert_array_equal(result.indices, expected)
    assert (result.indices != np.arange(len(x))[:, None]).all()  # never itself
    # Row 3 has exact duplicates at 10..15: they rank first, in index order, and are kept.
    np.testing.assert_array_equal(result.indices[3, :6], [10, 11, 12, 13, 14, 15])
    assert np.all(np.diff(result.scores, axis=1) <= 0)


def test_self_absent_drops_last_column():
    # Query 5 has 4 exact duplicates with lower index; with k=2 its own index is not among the
    # k+1 = 3 returned, so the last column is dropped, not the first.
    x = np.zeros((8, 4), np.float32)
    x[:, 0] = 1.0
    x[6:, 1] = 5.0
    result = knn.search(x, 2, metric="cosine", query_ids=np.array([5, 0]))
    np.testing.assert_array_equal(result.indices, [[0, 1], [1, 2]])


def test_chunked_and_unchunked_are_identical(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((700, 32)).astype(np.float32)
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_query_bs", 64)
    whole = knn.search(x, 30, chunk_size=10_000)
    chunked = knn.search(x, 30, chunk_size=128)
    assert knn.chunk_rows(30, 100) == 64 and knn.chunk_rows(30, 200) == 192
    np.testing.assert_array_equal(whole.indices, chunked.indices)
    np.testing.assert_array_equal(whole.scores, chunked.scores)


def test_cosine_and_euclidean_agree_on_normalised_vectors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((400, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cos = knn.search(x, 20, metric="cosine")
    euc = knn.search(x, 20, metric="euclidean")
    np.testing.assert_array_equal(cos.indices, euc.indices)
    np.testing.assert_allclose(2 * cos.scores - 2, euc.scores, atol=1e-5)


def test_bad_inputs_are_user_errors():
    x = np.ones((5, 3), np.float32)
    with pytest.raises(UserError, match="k=5 is out of range"):
        knn.search(x, 5)
    with pytest.raises(UserError, match="2-D"):
        knn.search(np.ones(5), 1)
    with pytest.raises(UserError, match="unknown metric"):
        knn.search(x, 1, metric="manhattan")
    with pytest.raises(UserError, match="NaN"):
        knn.search(np.full((3, 2), np.nan), 1)
    with pytest.raises(UserError, match="faiss sees no GPU"):
        knn.search(x, 1, use_gpu=True)
