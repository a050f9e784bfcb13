"""Robustness arithmetic against hand-computed figures, and the evaluation loop on a source whose errors
are known by construction (labels shifted for a model with a background logit)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from finegrain.data.corruptions import SEVERITIES, CorruptedSource
from finegrain.errors import UserError
from finegrain.evaluate.robustness import (
    ALEXNET_ERRORS,
    CorruptionScore,
    RobustnessResult,
    evaluate_robustness,
    plot_robustness,
    total_images,
)
from finegrain.models import ModelCard
from finegrain.models.refs import LoadedModel


def _result(normalized: bool) -> RobustnessResult:
    errors = {
        "contrast": dict.fromkeys(SEVERITIES, 0.4266),  # half AlexNet's 0.8532
        "brightness": {1: 0.1, 2: 0.2, 3: 0.3, 4: 0.4, 5: 0.5},
        "saturate": dict.fromkeys(SEVERITIES, 0.6583),  # AlexNet's own error (an extra corruption)
    }
    result = RobustnessResult("m", "src", 0.1, normalized)
    result.scores = {c: CorruptionScore(c, e, 0.1, normalized) for c, e in errors.items()}
    return result


def test_ce_mce_and_relative_mce_by_hand():
    r = _result(normalized=True)
    ce_brightness = 0.3 / 0.5646
    assert r.scores["contrast"].ce == pytest.approx(0.5)
    assert r.scores["brightness"].ce == pytest.approx(ce_brightness)
    assert r.scores["saturate"].ce == pytest.approx(1.0)
    # relative: (mean error - clean) / (AlexNet mean error - AlexNet clean 0.4348)
    rel_contrast = (0.4266 - 0.1) / (0.8532 - 0.4348)
    rel_brightness = (0.3 - 0.1) / (0.5646 - 0.4348)
    rel_saturate = (0.6583 - 0.1) / (0.6583 - 0.4348)
    assert r.scores["brightness"].relative_ce == pytest.approx(rel_brightness)
    assert r.mce() == pytest.approx((0.5 + ce_brightness) / 2)  # standard corruptions only
    assert r.mce("extra") == pytest.approx(1.0)
    assert r.mce("all") == pytest.approx((0.5 + ce_brightness + 1.0) / 3)
    assert r.relative_mce() == pytest.approx((rel_contrast + rel_brightness) / 2)
    assert r.relative_mce("all") == pytest.approx((rel_contrast + rel_brightness + rel_saturate) / 3)
    assert r.unnormalized_mce() == pytest.approx((0.4266 + 0.3) / 2)
    assert not r.complete
    d = r.to_dict()
    assert d["mce"]["standard"] == pytest.approx(r.mce()) and d["corruptions"]["brightness"]["errors"]["3"] == 0.3


def test_a_set_other_than_imagenet_gets_only_unnormalised_figures():
    r = _result(normalized=False)
    assert r.mce() is None and r.relative_mce() is None and r.scores["contrast"].ce is None
    assert r.unnormalized_mce() == pytest.approx((0.4266 + 0.3) / 2)
    assert r.unnormalized_mce("extra") == pytest.approx(0.6583)
    assert r.unnormalized_mce("all") == pytest.approx((0.4266 + 0.3 + 0.6583) / 3)
    assert r.to_dict()["mce"] == {"standard": None, "extra": None, "all": None}


def test_complete_needs_all_19_at_every_severity():
    r = RobustnessResult("m", "src", None, True)
    r.scores = {c: CorruptionScore(c, dict.fromkeys(SEVERITIES, v), None, True) for c, v in ALEXNET_ERRORS.items()}
    assert r.complete and r.mce() == pytest.approx(1.0) and r.mce("all") == pytest.approx(1.0)
    del r.scores["fog"].errors[5]
    assert not r.complete


NUM_CLASSES, PER_PASS = 4, 20


def _source() -> CorruptedSource:
    """Images whose pixel value is a class; under corruption c at severity s, the first
    s * (1 + position of c) images show a wrong class: error = s * (1 + k) / PER_PASS."""
    labels = np.arange(PER_PASS) % NUM_CLASSES

    def make(corruption: str, severity: int, image_size: int, preprocessing: str) -> tf.data.Dataset:
        wrong = severity * (1 + ["fog", "contrast"].index(corruption))
        shown = np.where(np.arange(PER_PASS) < wrong, (labels + 1) % NUM_CLASSES, labels)
        images = np.broadcast_to(shown[:, None, None, None], (PER_PASS, 2, 2, 3)).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))

    return CorruptedSource("toy", NUM_CLASSES, True, {"fog": SEVERITIES, "contrast": (1, 2)}, make,
                           lambda c, s: PER_PASS, prepared_size=2)


def _model(offset: int, name: str) -> LoadedModel:
    """Predicts the class its images show; a background logit first when offset is 1."""
    def forward(images):
        shown = np.asarray(images)[:, 0, 0, 0].astype(int) + offset
        return {"logits": np.eye(NUM_CLASSES + offset, dtype=np.float32)[shown], "embedding": None}

    return LoadedModel(ModelCard(arch="toy", num_classes=NUM_CLASSES + offset, label_offset=offset), forward, {}, name)


def test_evaluation_loop_measures_known_errors_for_1000_and_1001_way_style_heads():
    models = [_model(0, "plain"), _model(1, "with background")]
    seen = []
    results = evaluate_robustness(models, _source(), corruptions=["contrast", "fog"], severities=[1, 2],
                                  batch_size=8, on_batch=lambda what, n: seen.append((what, n)))
    assert sum(n for _, n in seen) == total_images(models, _source(), ["contrast", "fog"], [1, 2]) == 4 * PER_PASS
    for r in results:
        assert list(r.scores) == ["contrast", "fog"]
        assert r.scores["fog"].errors == {1: 1 / PER_PASS, 2: 2 / PER_PASS}
        assert r.scores["contrast"].errors == {1: 2 / PER_PASS, 2: 4 / PER_PASS}
        assert r.clean_error is None and r.relative_mce() is None
        assert r.mce() == pytest.approx((3 / PER_PASS / 0.8532 + 1.5 / PER_PASS / 0.8193) / 2)


def test_missing_severities_and_class_mismatches_are_refused_before_any_work():
    with pytest.raises(UserError, match=r"toy lacks contrast 3 \(it has: fog 1,2,3,4,5; contrast 1,2\)"):
        evaluate_robustness([_model(0, "m")], _source(), corruptions=["contrast"], severities=[3])
    wrong = LoadedModel(ModelCard(arch="toy", num_classes=10), lambda images: None, {}, "ten")
    with pytest.raises(UserError, match="10 logits"):
        evaluate_robustness([wrong], _source(), corruptions=["fog"], severities=[1])


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "r.png"
    path.parent.mkdir()
    other = _result(True)
    other.model = "other"
    plot_robustness(path, [_result(True), other])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
