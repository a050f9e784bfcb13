"""Classification: softmax over the classes; top-1 selects the best checkpoints."""

from __future__ import annotations

import numpy as np

from finegrain.data import Split
from finegrain.evaluate.classify import classification_metrics, softmax
from finegrain.train.tasks.base import Task


class ClassificationTask(Task):
    name = "classification"
    output = "logits"
    best_metric = "top1"

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray, split: Split) -> dict[str, float]:
        # The same metric code as `finegrain eval`, so ties rank identically.
        report = classification_metrics(softmax(self.logit_scale * outputs), labels, num_confusions=0)
        return {"top1": report.top1, "top5": report.top5}


TASK = ClassificationTask
