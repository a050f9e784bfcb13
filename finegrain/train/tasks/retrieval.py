"""Retrieval: a classifier (usually cosine / ArcFace) trains the embedding; evaluation is zero-shot
Recall@K and MAP@R on classes never trained on; Recall@1 selects the best checkpoints."""

from __future__ import annotations

import numpy as np

from finegrain.data import Split
from finegrain.evaluate.metrics import evaluate_retrieval
from finegrain.train.tasks.base import Task


class RetrievalTask(Task):
    name = "retrieval"
    output = "embedding"
    best_metric = "recall@1"

    def recall_ks(self, split: Split) -> list[int]:
        """The recipe's K list, else the data set's customary one (its catalog record)."""
        return list(self.recipe.eval.recall_ks or split.info.recall_ks)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray, split: Split) -> dict[str, float]:
        report = evaluate_retrieval(outputs, labels, self.recall_ks(split))
        return {**{f"recall@{k}": v for k, v in report.recall_at_k.items()}, "map@r": report.map_at_r}


TASK = RetrievalTask
