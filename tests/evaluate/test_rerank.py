"""Re-ranking: on a constructed case, query expansion moves a true match that ranked second to first."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate import metrics
from finegrain.evaluate.rerank import rerank_vectors


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
        rerank_vectors(query, gallery, np.array([-1]), "kreciprocal")
    with pytest.raises(UserError, match="rerank-k"):
        rerank_vectors(query, gallery, np.array([-1]), "qe", k=0)
