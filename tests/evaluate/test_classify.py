import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate.classify import classification_metrics, expected_calibration_error, softmax, top_k_indices


def test_topk_accuracy_and_confusions_by_hand():
    p = np.array(
        [
            [0.7, 0.2, 0.1, 0.0, 0.0, 0.0],  # true 0: top1 hit
            [0.6, 0.3, 0.1, 0.0, 0.0, 0.0],  # true 1: predicted 0, in top 5
            [0.6, 0.3, 0.1, 0.0, 0.0, 0.0],  # true 1: predicted 0 again
            [0.5, 0.1, 0.1, 0.1, 0.1, 0.1],  # true 5: tie at rank 2..6, lower index wins -> 5 not in top 5
        ]
    )
    y = np.array([0, 1, 1, 5])
    r = classification_metrics(p, y)
    assert r.top1 == 0.25 and r.top5 == 0.75
    assert r.per_class_accuracy[0] == 1.0 and r.per_class_accuracy[1] == 0.0
    assert np.isnan(r.per_class_accuracy[2])  # no test example of class 2
    assert r.confusions[0].true_class == 1 and r.confusions[0].predicted_class == 0 and r.confusions[0].count == 2
    assert [(c.true_class, c.predicted_class, c.count) for c in r.confusions] == [(1, 0, 2), (5, 0, 1)]
    d = r.to_dict(class_names=list("abcdef"))
    assert d["per_class_accuracy"][2] is None and d["class_names"][5] == "f"


def test_ece_matches_loop_reference():
    rng = np.random.default_rng(0)
    p = softmax(rng.normal(0, 2, (500, 7)))
    y = rng.integers(0, 7, 500)
    conf, pred = p.max(1), p.argmax(1)
    edges = np.linspace(0, 1, 16)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            expected += abs((pred[inside] == y[inside]).mean() - conf[inside].mean()) * inside.mean()
    assert expected_calibration_error(p, y) == pytest.approx(expected, abs=1e-12)


def test_perfectly_calibrated_confident_model_has_zero_ece():
    p = np.eye(4)[[0, 1, 2, 3, 0]]
    assert expected_calibration_error(p, np.array([0, 1, 2, 3, 0])) == 0.0
    assert expected_calibration_error(p, np.array([1, 1, 2, 3, 0])) == pytest.approx(0.2)


def test_top_k_ties_lower_index_and_bad_input():
    np.testing.assert_array_equal(top_k_indices(np.array([[0.2, 0.4, 0.4, 0.0]]), 3), [[1, 2, 0]])
    with pytest.raises(UserError, match="labels must be integers"):
        classification_metrics(np.full((2, 3), 1 / 3), np.array([0, 3]))
    with pytest.raises(UserError, match="probabilities"):
        classification_metrics(np.full((2, 3), 1 / 3), np.array([0]))
