"""Re-ranking: on constructed cases, query expansion and k-reciprocal re-ranking move a true match that
cosine ranked second up to first."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate import metrics
from finegrain.evaluate.knn import search
from finegrain.evaluate.rerank import k_reciprocal, rerank_vectors


def _at(degrees: float) -> np.ndarray:
    return np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))], np.float32)


def _case():
    """Query at 0 deg; a wrong-class item at 8 deg beats the true match at 20 deg, whose classmates sit at
    22, 24, 26 deg; other wrong-class items far away."""
    query = _at(0)[None]
    angles = [8, 20, 22, 24, 26, 150, 160, 170]
    gallery = np.stack([_at(a) for a in angles])
    labels = np.array([1, 0, 0, 0, 0, 1, 1, 1])
    return query, gallery, labels


def test_query_expansion_moves_the_true_match_up():
    method = "qe"
    query, gallery, labels = _case()
    query_ids = np.array([-1])
    before, _ = metrics.evaluate_separate(query, np.array([0]), gallery, labels, [1], query_ids=query_ids)
    assert before.recall_at_k == {1: 0.0}  # the wrong-class item is first
    q2, g2 = rerank_vectors(query, gallery, query_ids, method, k=5)
    after, found = metrics.evaluate_separate(q2, np.array([0]), g2, labels, [1], query_ids=query_ids)
    assert after.recall_at_k == {1: 1.0} and found.indices[0, 0] == 1  # the true match at 20 deg is first
    assert after.map_at_r > before.map_at_r
    assert np.allclose(np.linalg.norm(q2, axis=1), 1)


def test_database_augmentation_pulls_classes_together():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 8))
    labels = np.repeat(np.arange(4), 5)
    gallery = (centres[labels] + 0.6 * rng.standard_normal((20, 8))).astype(np.float32)
    _, augmented = rerank_vectors(gallery[:1], gallery, np.array([0]), "dba+qe", k=3)

    def within_class(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        same = labels[:, None] == labels[None, :]
        return (x @ x.T)[same & ~np.eye(20, dtype=bool)].mean()

    assert within_class(augmented) > within_class(gallery)
    plain = metrics.evaluate_retrieval(gallery, labels, [1])
    assert metrics.evaluate_retrieval(augmented, labels, [1]).map_at_r >= plain.map_at_r


def test_query_expansion_leaves_out_the_query_itself():
    query, gallery, labels = _case()
    gallery = np.concatenate([gallery, query])  # the query is also a gallery item (row 8)
    q_self, _ = rerank_vectors(query, gallery, np.array([8]), "qe", k=5)
    q_apart, _ = rerank_vectors(query, gallery[:8], np.array([-1]), "qe", k=5)
    np.testing.assert_allclose(q_self, q_apart, atol=1e-6)


def test_none_is_identity_and_bad_options_are_user_errors():
    query, gallery, _ = _case()
    q, g = rerank_vectors(query, gallery, np.array([-1]), "none")
    assert q is query and g is gallery
    with pytest.raises(UserError, match="re-ranking"):
        rerank_vectors(query, gallery, np.array([-1]), "bogus")
    with pytest.raises(UserError, match="rerank-k"):
        rerank_vectors(query, gallery, np.array([-1]), "qe", k=0)


def _hub_case():
    """A query (plane point (0, 0)) whose nearest item w belongs to a tight wrong class B on the other side:
    w's own nearest are its classmates, so w and the query are not k-reciprocal; the true class A sits a
    little farther away, and the query is among each A item's nearest."""
    points = {"w": (-2, 0), "a1": (2.4, 0), "a2": (2.6, 0.4), "a3": (2.6, -0.4),
              "b1": (-2.8, 0), "b2": (-2.6, 0.6), "b3": (-2.6, -0.6), "b4": (-3.2, 0.3)}

    def unit(x, y):  # points of a small patch of the sphere: cosine falls with plane distance
        v = np.array([0.05 * x, 0.05 * y, 1.0], np.float32)
        return v / np.linalg.norm(v)

    gallery = np.stack([unit(*p) for p in points.values()])
    labels = np.array([0 if name.startswith("a") else 1 for name in points])
    return unit(0, 0)[None], gallery, labels, list(points)


@pytest.mark.parametrize("k2", [1, 6])
def test_k_reciprocal_moves_the_true_match_up(k2):
    query, gallery, labels, names = _hub_case()
    knn = search(gallery, len(gallery), queries=query)
    assert names[knn.indices[0, 0]] == "w"  # cosine ranks the wrong-class item first
    before = metrics.separate_metrics(knn, np.array([0]), labels, [1])
    reranked = k_reciprocal(knn, gallery, query, k1=4, k2=k2)
    after = metrics.separate_metrics(reranked, np.array([0]), labels, [1])
    assert before.recall_at_k == {1: 0.0} and after.recall_at_k == {1: 1.0}
    assert [names[i] for i in reranked.indices[0, :3]] == ["a1", "a2", "a3"]  # A's order kept, w after them
    assert after.map_at_r == 1.0 > before.map_at_r
    assert (np.diff(reranked.scores[0]) <= 0).all() and sorted(reranked.indices[0]) == list(range(len(gallery)))


def test_k_reciprocal_query_in_the_gallery_is_the_same_as_apart():
    """A query that is a gallery row (by identity) is encoded as that row, like a separate query added."""
    query, gallery, labels, _ = _hub_case()
    apart = k_reciprocal(search(gallery, 8, queries=query), gallery, query, k1=4)
    with_it = np.concatenate([gallery, query])
    inside = k_reciprocal(search(with_it, 8, queries=query, query_ids=np.array([8])), with_it, query, k1=4)
    same_row = k_reciprocal(search(with_it, 8, query_ids=np.array([8])), with_it, k1=4)  # query = gallery mode
    np.testing.assert_array_equal(inside.indices, apart.indices)
    np.testing.assert_array_equal(same_row.indices, apart.indices)
    np.testing.assert_allclose(inside.scores, apart.scores, atol=1e-6)


def test_k_reciprocal_reranks_only_the_first_depth_and_checks_options():
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((40, 8)).astype(np.float32)
    knn = search(gallery, 20, query_ids=np.arange(5))
    out = k_reciprocal(knn, gallery, depth=10)
    np.testing.assert_array_equal(out.indices[:, 10:], knn.indices[:, 10:])
    np.testing.assert_array_equal(np.sort(out.indices[:, :10], 1), np.sort(knn.indices[:, :10], 1))
    with pytest.raises(UserError, match="k1, k2"):
        k_reciprocal(knn, gallery, k1=0)
    with pytest.raises(UserError, match="metric cosine"):
        k_reciprocal(search(gallery, 5, metric="euclidean"), gallery)
