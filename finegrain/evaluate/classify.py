"""Classification metrics: top-1/top-5 accuracy, expected calibration error, per-class accuracy,
most-confused class pairs.

- top-k accuracy: share of examples whose true class is among the k highest probabilities
  (ties broken by lower class index, like the retrieval ranking).
- ECE: 15 equal-width bins over the max softmax probability (bin b holds confidences in
  (b/15, (b+1)/15], the first bin also holds 0); ECE = sum_b |accuracy_b - confidence_b| * n_b / N.
- per-class accuracy: correct / examples of that class (recall of the class); NaN for a class with
  no test example.
- confusions: off-diagonal cells of the confusion matrix (true class, predicted class, count),
  largest first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.metrics import confusion_matrix

from finegrain.errors import UserError

ECE_BINS = 15

CLASSIFICATION_DEFINITIONS: dict[str, str] = {
    "top_k": "share of examples whose true class is among the k most probable (ties: lower class index)",
    "ece": f"{ECE_BINS} equal-width bins over the max softmax probability; "
    "sum over bins of |accuracy - mean confidence| * bin share",
    "per_class_accuracy": "correct / examples of the class",
    "confusions": "(true, predicted, count) off-diagonal confusion-matrix cells, largest first",
}


@dataclass(frozen=True)
class Confusion:
    true_class: int
    predicted_class: int
    count: int


@dataclass(frozen=True)
class ClassificationReport:
    top1: float
    top5: float
    ece: float
    per_class_accuracy: list[float]
    confusions: list[Confusion]
    num_examples: int
    num_classes: int
    definitions: dict[str, str] = field(default_factory=lambda: dict(CLASSIFICATION_DEFINITIONS))

    def to_dict(self, class_names: list[str] | None = None) -> dict:
        d = asdict(self)
        d["per_class_accuracy"] = [None if np.isnan(a) else a for a in self.per_class_accuracy]
        if class_names is not None:
            d["class_names"] = list(class_names)
        return d


def aligned_labels(num_logits: int, labels: np.ndarray, num_split_classes: int, label_offset: int,
                   where: str) -> np.ndarray:
    """`labels` of a split with `num_split_classes` classes as indices into a model's `num_logits` logits.

    A model whose card has `label_offset` 1 (the official 1001-way ImageNet heads: index 0 is
    background) scores class c at logit c + 1, as the original did; any other model must have exactly
    the split's classes. UserError when the class counts disagree.
    """
    if num_logits != num_split_classes + label_offset:
        background = f" (index 0 = background, so {num_logits - 1} classes)" if label_offset else ""
        raise UserError(f"the model has {num_logits} logits{background} but {where} has {num_split_classes} "
                        "classes: evaluate a model fine-tuned on this data set")
    return np.asarray(labels, dtype=np.int64) + label_offset


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


def top_k_indices(probabilities: np.ndarray, k: int) -> np.ndarray:
    """[N, k] class indices by probability descending, ties to the lower class index."""
    k = min(k, probabilities.shape[1])
    # Stable sort of the negated values keeps lower indices first among equals.
    return np.argsort(-probabilities, axis=1, kind="stable")[:, :k]


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    bin_of = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(bin_of, minlength=bins)
    gap = np.abs(np.bincount(bin_of, correct, minlength=bins) - np.bincount(bin_of, confidence, minlength=bins))
    return float(gap.sum() / len(labels))  # sum_b |acc_b - conf_b| * n_b / N, with n_b folded in


def classification_metrics(
    probabilities: np.ndarray, labels: np.ndarray, *, num_confusions: int = 10
) -> ClassificationReport:
    """All classification metrics from [N, C] probabilities (rows sum to 1) and [N] integer labels."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != 2 or y.ndim != 1 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise UserError(f"need [N, C] probabilities and [N] labels, got {p.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise UserError(f"labels must be integers in 0..{p.shape[1] - 1}")
    top = top_k_indices(p, 5)
    hit = top == y[:, None]
    num_classes = p.shape[1]
    cm = confusion_matrix(y, top[:, 0], labels=np.arange(num_classes))
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(cm) / support
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:num_confusions]
    confusions = [
        Confusion(int(t), int(q), int(off[t, q])) for t, q in zip(*np.unravel_index(flat, off.shape)) if off[t, q] > 0
    ]
    return ClassificationReport(
        top1=float(hit[:, 0].mean()),
        top5=float(hit.any(axis=1).mean()),
        ece=expected_calibration_error(p, y),
        per_class_accuracy=[float(a) for a in per_class],
        confusions=confusions,
        num_examples=int(y.size),
        num_classes=int(num_classes),
    )
