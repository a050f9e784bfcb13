import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate import knn, metrics
from tests.evaluate.reference import exact_tie_data, reference_metrics, reference_separate


def _assert_matches_reference(report, ref, ks):
    assert report.recall_at_k == pytest.approx(ref["recall"], abs=1e-12)
    assert report.map_at_r == pytest.approx(ref["map_at_r"], abs=1e-12)
    assert report.r_precision == pytest.approx(ref["r_precision"], abs=1e-12)
    assert report.num_lone == ref["lone"]
    assert report.num_evaluated == ref["evaluated"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_metrics_equal_brute_force_on_ties_duplicates_distractors(metric):
    x, labels = exact_tie_data()
    ks = [1, 2, 4, 8, 16]
    report = metrics.evaluate_retrieval(x, labels, ks, metric=metric)
    _assert_matches_reference(report, reference_metrics(x, labels, ks, metric), ks)
    assert report.num_distractors == 8
    assert report.num_lone == 2
    assert report.num_queries == len(x) - 8
    assert report.k_searched == metrics.search_depth(labels, ks)


def test_metrics_equal_brute_force_on_clustered_random_embeddings():
    rng = np.random.default_rng(3)
    num_classes, per_class = 30, rng.integers(1, 12, 30)
    labels = np.repeat(np.arange(num_classes), per_class)
    centroids = rng.standard_normal((num_classes, 16))
    x = (centroids[labels] + 0.9 * rng.standard_normal((labels.size, 16))).astype(np.float32)
    labels[rng.choice(labels.size, 10, replace=False)] = -1
    ks = [1, 3, 10]
    report = metrics.evaluate_retrieval(x, labels, ks)
    _assert_matches_reference(report, reference_metrics(x, labels, ks, "cosine"), ks)
    assert 0.0 < report.map_at_r <= report.r_precision <= report.recall_at_k[10] <= 1.0


def test_hand_computed_example():
    # 1-D points on a line, euclidean: item order by distance is obvious.
    x = np.array([[0.0], [1.0], [2.1], [10.0], [11.0], [30.0]], np.float32)
    labels = np.array([0, 1, 0, 1, 0, 2])
    report = metrics.evaluate_retrieval(x, labels, [1, 2], metric="euclidean")
    # Per query: ranked neighbours' relevance, R, then AP@R, R-precision, R@1, R@2.
    # q0: rel=[0,1,...] R=2: P(2)=1/2 -> ap=(1/2)/2=0.25, rp=0.5, r@1=0, r@2=1
    # q1: neighbours 0,2 (d=1,1.1) 3 (9) -> rel=[0,0,1]; R=1: ap=0, rp=0, r@1=0, r@2=0
    # q2: neighbours 1,0,3..: rel=[0,1]; R=2: ap=0.25, rp=0.5, r@1=0, r@2=1
    # q3: neighbours 4,2,1: rel=[0,0,1]; R=1: ap=0, rp=0, r@1=r@2=0
    # q4: neighbours 3,2(v): rel=[0,1]; R=2: ap=0.25, rp=0.5, r@1=0, r@2=1
    # q5: lone
    assert report.num_lone == 1 and report.num_evaluated == 5
    assert report.recall_at_k == {1: 0.0, 2: pytest.approx(3 / 5)}
    assert report.r_precision == pytest.approx(1.5 / 5)
    assert report.map_at_r == pytest.approx(0.75 / 5)


def test_lone_only_gives_nan_and_counts():
    x = np.eye(4, dtype=np.float32)
    report = metrics.evaluate_retrieval(x, np.array([0, 1, 2, -1]), [1])
    assert report.num_lone == 3 and report.num_evaluated == 0 and report.num_distractors == 1
    assert np.isnan(report.map_at_r) and report.recall_at_k == {}


def test_search_depth_covers_largest_class():
    labels = np.array([0] * 20 + [1] * 3 + [-1] * 5)
    assert metrics.search_depth(labels, [1, 2]) == 19
    assert metrics.search_depth(labels, [25]) == 25
    with pytest.raises(UserError, match="larger than the gallery"):
        metrics.search_depth(labels, [40])


def test_too_shallow_knn_is_rejected():
    x, labels = exact_tie_data()
    shallow = knn.search(x, 3)
    with pytest.raises(ValueError, match="metrics need 12"):
        metrics.retrieval_metrics(shallow, labels, [1, 2, 4, 8])


def test_bad_labels_and_ks():
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    with pytest.raises(UserError, match="6 rows but labels have 5"):
        metrics.evaluate_retrieval(x, np.zeros(5, int), [1])
    with pytest.raises(UserError, match="integer"):
        metrics.evaluate_retrieval(x, np.zeros(6), [1])
    with pytest.raises(UserError, match="comma-separated"):
        metrics.parse_ks("1,two")
    assert metrics.parse_ks("8, 1,2,2") == [1, 2, 8]


def test_report_to_dict_carries_definitions():
    x, labels = exact_tie_data()
    d = metrics.evaluate_retrieval(x, labels, "1,2").to_dict()
    assert set(d["recall_at_k"]) == {"1", "2"}
    assert "identity" in d["definitions"]["self_exclusion"]


def test_metrics_ignore_extra_queries_in_the_knn():
    # A search over every row (distractors and lone queries included) gives the same report.
    x, labels = exact_tie_data()
    ks = [1, 4]
    everything = knn.search(x, metrics.search_depth(labels, ks))
    assert metrics.retrieval_metrics(everything, labels, ks) == metrics.evaluate_retrieval(x, labels, ks)


def _separate_case():
    """Queries apart from the gallery: some are gallery images too (same identity), one of them an exact
    duplicate of another gallery item; exact ties everywhere ({+-0.25}^16), distractors, a lone query,
    a query labelled -1, a query whose class the gallery lacks."""
    x, labels = exact_tie_data(n=240)
    gallery, gallery_labels = x[:200], labels[:200].copy()
    gallery_labels[190:200] = -1  # distractors
    in_both = np.array([3, 10, 21, 40, 41, 42])  # 3 and 10 are exact duplicates of each other, same class
    queries = np.concatenate([x[200:], gallery[in_both]])
    query_labels = np.concatenate([labels[200:], gallery_labels[in_both]])
    query_labels[0], query_labels[1] = -1, 5000  # skipped; a class the gallery lacks (lone)
    query_ids = np.concatenate([np.full(40, -1), in_both])
    items = [f"q{i}" for i in range(40)] + [f"g{i}" for i in in_both]
    return queries, query_labels, gallery, gallery_labels, query_ids, items


@pytest.mark.parametrize("per_class", [False, True])
def test_separate_queries_equal_brute_force_with_shared_images_distractors_and_ties(per_class):
    queries, query_labels, gallery, gallery_labels, query_ids, items = _separate_case()
    assert (metrics.identity_rows(items, [f"g{i}" for i in range(200)]) == query_ids).all()
    ks = [1, 2, 4, 8]
    report, knn_result = metrics.evaluate_separate(queries, query_labels, gallery, gallery_labels, ks,
                                                   query_ids=query_ids, per_class=per_class)
    ref = reference_separate(queries, query_labels, gallery, gallery_labels, query_ids, ks, per_class=per_class)
    _assert_matches_reference(report, ref, ks)
    assert report.num_queries == 46 - 9 and report.num_distractors == 10  # 9 queries labelled -1
    assert report.definitions["self_exclusion"].startswith("a query that is also a gallery item")
    own = query_ids >= 0
    assert not (knn_result.indices[own] == query_ids[own, None]).any()  # never its own result
    assert knn_result.indices[40, 0] == 10 and knn_result.indices[41, 0] == 3  # g3 and g10: exact duplicates count
    if per_class:
        got = {c.label: (c.map_at_r, c.recall_at_k) for c in report.per_class}
        assert got.keys() == ref["per_class"].keys()
        for label, (ap, recall) in ref["per_class"].items():
            assert got[label][0] == pytest.approx(ap) and got[label][1] == pytest.approx(recall)
        maps = [c.map_at_r for c in report.per_class]
        assert maps == sorted(maps)  # worst first
        assert report.to_dict()["per_class"][0]["label"] == report.per_class[0].label
    else:
        assert report.per_class is None


def test_separate_queries_outside_the_gallery_may_search_all_of_it():
    rng = np.random.default_rng(0)
    gallery, queries = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    report, result = metrics.evaluate_separate(queries, np.zeros(3, int), gallery, np.zeros(5, int), [5])
    assert result.k == 5 and report.recall_at_k == {5: 1.0} and report.map_at_r == 1.0
    with pytest.raises(UserError, match="K <= 4"):
        metrics.evaluate_separate(queries, np.zeros(3, int), gallery, np.zeros(5, int), [5],
                                  query_ids=np.array([0, -1, -1]))
    with pytest.raises(UserError, match="dimensions"):
        metrics.evaluate_separate(queries[:, :3], np.zeros(3, int), gallery, np.zeros(5, int), [1])
