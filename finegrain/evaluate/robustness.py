"""Robustness to common corruptions: corruption errors, mCE and relative mCE, and the loop that measures them.

Definitions (Hendrycks & Dietterich 2019; the paper's own evaluation script for the "all 19" figures):
- E(c, s): top-1 error under corruption c at severity s; E_clean: top-1 error on the clean split.
- corruption error, un-normalised: mean over severities of E(c, s).
- CE(c) = sum_s E(c, s) / sum_s E_AlexNet(c, s) (ImageNet only: AlexNet's errors are ImageNet's).
- relative CE(c) = sum_s (E(c, s) - E_clean) / sum_s (E_AlexNet(c, s) - E_AlexNet_clean).
- mCE, relative mCE: mean of CE / relative CE over the 15 standard corruptions; the 4 extra ones are
  averaged apart, and the mean over all 19 is given too (the figure the paper's authors' script printed).
- un-normalised mCE: mean over corruptions of the un-normalised corruption error (the kind of figure
  the paper gives for Food-101, which has no AlexNet reference); same three groups.
Each mean is over the corruptions and severities that were evaluated; `complete` says whether that is
all of them (otherwise the figures are not comparable with published ones).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from finegrain.data import pipeline
from finegrain.data.corruptions import ALL, EXTRA, SEVERITIES, STANDARD, CorruptedSource
from finegrain.evaluate.classify import aligned_labels
from finegrain.evaluate.inference import DEFAULT_IMAGE_SIZE, eval_settings, predict_batches
from finegrain.models.refs import LoadedModel
from finegrain.utils.io import atomic_path

# AlexNet's top-1 error on ImageNet-C per corruption, averaged over severities 1-5 (the table the
# paper's authors normalised by; Hendrycks & Dietterich's AlexNet), and its clean ImageNet error.
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.8864, "shot_noise": 0.8945, "impulse_noise": 0.9226,
    "defocus_blur": 0.8199, "glass_blur": 0.8263, "motion_blur": 0.7860, "zoom_blur": 0.7984,
    "snow": 0.8668, "frost": 0.8266, "fog": 0.8193, "brightness": 0.5646,
    "contrast": 0.8532, "elastic_transform": 0.6461, "pixelate": 0.7178, "jpeg_compression": 0.6065,
    "speckle_noise": 0.8454, "gaussian_blur": 0.7871, "spatter": 0.7175, "saturate": 0.6583,
}
ALEXNET_CLEAN_ERROR = 0.4348  # torchvision's AlexNet: 56.52 % top-1 on the ImageNet validation set
GROUPS = {"standard": STANDARD, "extra": EXTRA, "all": ALL}


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


@dataclass
class CorruptionScore:
    """One model's errors under one corruption, by severity."""

    corruption: str
    errors: dict[int, float]  # severity -> top-1 error
    clean_error: float | None
    normalized: bool  # AlexNet's table applies (an ImageNet source)

    @property
    def mean_error(self) -> float:
        """The un-normalised corruption error: mean over the evaluated severities."""
        return float(np.mean(list(self.errors.values())))

    @property
    def ce(self) -> float | None:
        """sum_s E / sum_s E_AlexNet; AlexNet's per-severity errors average to ALEXNET_ERRORS."""
        return self.mean_error / ALEXNET_ERRORS[self.corruption] if self.normalized else None

    @property
    def relative_ce(self) -> float | None:
        if not self.normalized or self.clean_error is None:
            return None
        return (self.mean_error - self.clean_error) / (ALEXNET_ERRORS[self.corruption] - ALEXNET_CLEAN_ERROR)

    def to_dict(self) -> dict[str, Any]:
        return {"errors": {str(s): e for s, e in sorted(self.errors.items())}, "mean_error": self.mean_error,
                "ce": self.ce, "relative_ce": self.relative_ce}


@dataclass
class RobustnessResult:
    """One model's robustness: per corruption scores and the means over the groups of corruptions."""

    model: str
    source: str
    clean_error: float | None
    normalized: bool
    scores: dict[str, CorruptionScore] = field(default_factory=dict)  # in evaluation order

    @property
    def complete(self) -> bool:
        """Every one of the 19 corruptions at every severity: comparable with published figures."""
        return set(self.scores) == set(ALL) and all(set(s.errors) == set(SEVERITIES) for s in self.scores.values())

    def _group_mean(self, group: str, value: Callable[[CorruptionScore], float | None]) -> float | None:
        return _mean([value(self.scores[c]) for c in GROUPS[group] if c in self.scores])

    def mce(self, group: str = "standard") -> float | None:
        return self._group_mean(group, lambda s: s.ce)

    def relative_mce(self, group: str = "standard") -> float | None:
        return self._group_mean(group, lambda s: s.relative_ce)

    def unnormalized_mce(self, group: str = "standard") -> float | None:
        return self._group_mean(group, lambda s: s.mean_error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "normalized": self.normalized,
            "complete": self.complete,
            "clean_error": self.clean_error,
            "corruptions": {c: s.to_dict() for c, s in self.scores.items()},
            "mce": {g: self.mce(g) for g in GROUPS},
            "relative_mce": {g: self.relative_mce(g) for g in GROUPS},
            "unnormalized_mce": {g: self.unnormalized_mce(g) for g in GROUPS},
        }


def top1_error(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose highest logit (the lowest index among ties) is not the label."""
    return float(np.mean(np.argmax(logits, axis=1) != labels))


def evaluate_robustness(
    models: Sequence[LoadedModel],
    source: CorruptedSource,
    *,
    corruptions: Sequence[str],
    severities: Sequence[int],
    batch_size: int = 64,
    image_size: int | None = None,
    preprocessing: str | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> list[RobustnessResult]:
    """Top-1 errors of every model on the clean split and on each corruption x severity of `source`.

    Models that share an eval geometry see the same corrupted images (each image is corrupted once).
    `on_batch(what, n)` is told of every batch of n images. The requested corruptions and
    severities must be there (`source.require`); their dependencies are checked by the caller.
    """
    source.require(corruptions, severities)
    where = source.description
    for loaded in models:  # a class-count mismatch is found before any work
        aligned_labels(loaded.card.num_classes, np.zeros(0, np.int64), source.num_classes, loaded.card.label_offset,
                       where)
    clean = [_clean_error(m, source, *own_geometry(m, source, image_size, preprocessing), batch_size, on_batch)
             for m in models]
    results = [RobustnessResult(m.description, where, e, source.imagenet) for m, e in zip(models, clean)]
    for (size, pre), members in geometry_groups(models, source, image_size, preprocessing).items():
        forward = _joint_forward([models[i] for i in members])
        keys = [f"logits{j}" for j in range(len(members))]
        for corruption in corruptions:
            for severity in severities:
                images = source.images(corruption, severity, image_size=size, preprocessing=pre)
                batches = images.batch(batch_size).prefetch(2)
                what = f"{corruption} {severity}"
                outputs, labels = predict_batches(forward, batches, keys=keys,
                                                  on_batch=None if on_batch is None else lambda n, w=what: on_batch(w, n))
                for j, i in enumerate(members):
                    y = aligned_labels(outputs[keys[j]].shape[1], labels, source.num_classes,
                                       models[i].card.label_offset, where)
                    score = results[i].scores.setdefault(
                        corruption, CorruptionScore(corruption, {}, clean[i], source.imagenet))
                    score.errors[severity] = top1_error(outputs[keys[j]], y)
    order = {c: k for k, c in enumerate(corruptions)}
    for r in results:
        r.scores = dict(sorted(r.scores.items(), key=lambda kv: order[kv[0]]))
    return results


def geometry_groups(models: Sequence[LoadedModel], source: CorruptedSource, image_size: int | None = None,
                    preprocessing: str | None = None) -> dict[tuple[int, str], list[int]]:
    """(eval image size, preprocessing) -> indices of the models evaluated under it.

    Each model's own settings (`inference.eval_settings`); prepared corrupted images come at their own
    size, so there every model is in the first model's group and reads the same images.
    """
    groups: dict[tuple[int, str], list[int]] = {}
    for i, model in enumerate(models):
        geometry = own_geometry(model, source, image_size, preprocessing)
        groups.setdefault(next(iter(groups)) if groups and source.prepared_size else geometry, []).append(i)
    return groups


def own_geometry(model: LoadedModel, source: CorruptedSource, image_size: int | None = None,
                 preprocessing: str | None = None) -> tuple[int, str]:
    """The model's (eval image size, preprocessing) on `source` (`inference.eval_settings`)."""
    if source.clean is None:
        return (image_size or model.card.image_size or DEFAULT_IMAGE_SIZE,
                preprocessing or model.card.preprocessing or "imagenet")
    return eval_settings(model.card, source.clean, "logits", image_size, preprocessing)


def total_images(models: Sequence[LoadedModel], source: CorruptedSource, corruptions: Sequence[str],
                 severities: Sequence[int], image_size: int | None = None, preprocessing: str | None = None) -> int:
    """Images `evaluate_robustness` will read: the clean split once per model, each pass once per geometry."""
    passes = sum(source.count(c, s) for c in corruptions for s in severities)
    clean = source.clean.num_examples * len(models) if source.clean is not None else 0
    return clean + passes * len(geometry_groups(models, source, image_size, preprocessing))


def _joint_forward(models: Sequence[LoadedModel]) -> Callable[[Any], Mapping[str, Any]]:
    def forward(images: Any) -> dict[str, Any]:
        return {f"logits{j}": m.forward(images)["logits"] for j, m in enumerate(models)}

    return forward


def _clean_error(model: LoadedModel, source: CorruptedSource, image_size: int, preprocessing: str, batch_size: int,
                 on_batch: Callable[[str, int], None] | None) -> float | None:
    """Top-1 error on the clean split under the model's usual eval preprocessing (None: no clean split)."""
    if source.clean is None:
        return None
    batches = pipeline.eval_batches(source.clean, image_size=image_size, preprocessing=preprocessing,
                                    batch_size=batch_size)
    outputs, labels = predict_batches(model.forward, batches, keys=("logits",),
                                      on_batch=None if on_batch is None else lambda n: on_batch("clean", n))
    y = aligned_labels(outputs["logits"].shape[1], labels, source.num_classes, model.card.label_offset,
                       source.description)
    return top1_error(outputs["logits"], y)


def plot_robustness(path: str | os.PathLike, results: Sequence[RobustnessResult], *, title: str = "") -> None:
    """PNG small multiples: top-1 error (%) against severity, one panel per corruption, one line per model
    (its clean error dotted in the same colour)."""
    import matplotlib  # here, not at the top: matplotlib.use must run before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = list(dict.fromkeys(c for r in results for c in r.scores))
    columns = min(5, len(corruptions))
    rows = -(-len(corruptions) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.3 * rows + 0.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, corruption in zip(axes.flat, corruptions):
        for k, r in enumerate(results):
            colour = colours[k % len(colours)]
            if corruption in r.scores:
                errors = sorted(r.scores[corruption].errors.items())
                ax.plot([s for s, _ in errors], [100 * e for _, e in errors], "o-", color=colour, label=r.model)
            if r.clean_error is not None:
                ax.axhline(100 * r.clean_error, color=colour, linestyle=":", linewidth=1)
        ax.set_title(corruption, fontsize=9)
        ax.set_xticks(list(SEVERITIES))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(corruptions):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("top-1 error %")
    for ax in axes[-1, :]:
        ax.set_xlabel("severity")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(results), 3), fontsize=8, frameon=False)
    fig.suptitle(title or "top-1 error by corruption and severity (dotted: clean)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
