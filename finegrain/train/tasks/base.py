"""The Task interface: everything the training loop needs to know about a kind of run.

A task owns the model card of the run (architecture, head, the output evaluation reads, the logit
scale), the training batches and their targets, the loss, how a trained model is evaluated and
which metric picks the best checkpoints. The loop (finegrain.train.loop) only calls these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from finegrain.data import Split, pipeline
from finegrain.evaluate.inference import split_outputs
from finegrain.models import ModelCard
from finegrain.models.refs import Forward
from finegrain.train.distill import teacher_lookup
from finegrain.train.losses import distillation_loss, per_example_loss
from finegrain.train.recipe import Recipe


class Task:
    name: ClassVar[str]
    output: ClassVar[str] = "logits"  # the model output that evaluation reads
    best_metric: ClassVar[str]  # key of `evaluate`'s result that selects the best checkpoints

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._teacher: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None
        self._prepared = False

    @property
    def logit_scale(self) -> float:
        """softmax(scale * logits) are the class probabilities: a cosine head's logits are cosines."""
        return self.recipe.train.loss_scale if self.recipe.model.head == "cosine" else 1.0

    def card(self, class_names: Sequence[str]) -> ModelCard:
        m, d = self.recipe.model, self.recipe.data
        return ModelCard(arch=m.arch, num_classes=len(class_names), embedding_size=m.embedding_size,
                         pooling=m.pooling, head=m.head, image_size=d.image_size, preprocessing=d.preprocessing,
                         class_names=tuple(class_names), logit_scale=self.logit_scale, output=self.output,
                         source=f"finegrain tune --recipe {self.recipe.name}", dataset=d.source,
                         eval_split=d.eval_split)

    # -- training ---------------------------------------------------------------------------------

    def prepare(self, split: Split) -> None:
        """Check and open what training on `split` needs beyond the images (distillation targets), before
        the run directory is written: a stale or foreign targets file is refused in one line."""
        d, t = self.recipe.data, self.recipe.train
        self._teacher = (teacher_lookup(t.kd_targets, split, d.source, split.num_classes, 0, t.kd_temperature)
                         if t.kd_targets else None)
        self._prepared = True

    def train_batches(self, split: Split, epoch: int) -> tf.data.Dataset:
        """One epoch of (uint8 images, targets, mixing) that the training step finishes (flip, float,
        mixup) on the accelerator; a pure function of (seed, epoch) so a resumed run can skip.

        With `train.kd_targets` the targets are [labels | teacher distribution] (see `per_example_loss`).
        """
        d, t = self.recipe.data, self.recipe.train
        if not self._prepared:
            self.prepare(split)
        teacher = self._teacher
        return pipeline.train_batches(split, image_size=d.image_size, preprocessing=d.preprocessing,
                                      batch_size=t.batch_size, autoaugment=d.autoaugment, mixup_type=d.mixup_type,
                                      mixup_alpha=d.mixup_alpha, seed=t.seed, epoch=epoch, example_targets=teacher,
                                      finish=False)

    def per_example_loss(self, outputs: dict[str, tf.Tensor], targets: tf.Tensor) -> tf.Tensor:
        """Loss per example [B] (the step averages it over the global batch and adds weight decay).

        With distillation: the label loss plus T^2 * CE(teacher / T, student / T) on the logits the label
        loss sees (a cosine head's scaled cosines), as the original added them.
        """
        t = self.recipe.train
        logits = outputs["logits"]
        labels, teacher = self._split_targets(logits, targets)
        loss = per_example_loss(logits, labels, loss=t.loss, label_smoothing=t.label_smoothing,
                                scale=t.loss_scale, margin=t.loss_margin)
        if teacher is not None:
            student = logits if t.loss == "softmax" else t.loss_scale * tf.cast(logits, tf.float32)
            loss += distillation_loss(student, teacher, t.kd_temperature)
        return loss

    def _split_targets(self, logits: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor | None]:
        """(soft labels, teacher distribution or None): distillation appends the teacher to the labels."""
        if not self.recipe.train.kd_targets:
            return targets, None
        num_classes = tf.shape(logits)[-1]
        return targets[:, :num_classes], targets[:, num_classes:]

    def correct(self, outputs: dict[str, tf.Tensor], targets: tf.Tensor) -> tf.Tensor:
        """1.0 where the training prediction is right (the argmax of soft labels), else 0.0 [B]."""
        labels, _ = self._split_targets(outputs["logits"], targets)
        return tf.cast(tf.equal(tf.argmax(outputs["logits"], -1), tf.argmax(labels, -1)), tf.float32)

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate_model(self, forward: Forward, card: ModelCard, split: Split) -> dict[str, float]:
        batch_size = min(max(self.recipe.train.batch_size, 64), 256)
        outputs, labels = split_outputs(forward, card, split, batch_size=batch_size)
        return self.evaluate(outputs[self.output], labels, split)

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray, split: Split) -> dict[str, Any]:
        raise NotImplementedError
