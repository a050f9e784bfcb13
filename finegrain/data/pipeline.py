"""tf.data input pipelines for training and evaluation.

Determinism: the order of an epoch and every random choice (crop, flip, AutoAugment, mixup) are
stateless functions of (seed, epoch, position in the epoch), so the same arguments always give the
same batches, even with a parallel map; a resumed run can `skip(step)` into an epoch.
Label smoothing belongs in the loss (finegrain.train.losses), not here.

Where the work runs: the host decodes, crops, resizes and augments each image and batches them as
uint8; the mirror flip, the cast to float and mixup are per-batch arithmetic that `finish_batch` does
in one XLA pass. `train_batches(..., finish=False)` leaves that pass to the training step, so that on
an accelerator the host sends a quarter of the bytes and does less work per image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from finegrain.data.autoaugment import POLICIES, apply_policy, draw_policy
from finegrain.data.preprocessing import eval_image, geometry, train_image
from finegrain.data.splits import Split
from finegrain.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
MIXUP_TYPES = (0, 1, 2)


def steps_per_epoch(num_examples: int, batch_size: int, mixup_type: int = 0) -> int:
    """Batches `train_batches` yields per epoch (mixup type 1 consumes 2 x batch_size images per batch)."""
    return num_examples // (batch_size * (2 if mixup_type == 1 else 1))


def _epoch_seeds(seed: int, epoch: int) -> tuple[int, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(shuffle seed, per-example base seed [2], per-batch base seed [2], AutoAugment seed [2]) for one epoch."""
    shuffle_seed, *keys = (int(v) for v in np.random.SeedSequence([seed, epoch]).generate_state(7) // 2)
    return shuffle_seed, *(tf.constant(keys[i : i + 2], tf.int64) for i in (0, 2, 4))


def _check(split: Split, image_size: int, preprocessing: str, batch_size: int) -> None:
    geometry(preprocessing)
    if image_size < 8:
        raise UserError(f"image size {image_size} is too small: use at least 8 pixels")
    if batch_size < 1:
        raise UserError(f"batch size must be positive, got {batch_size}")
    if split.num_examples < 1:
        raise UserError(f"split {split.name!r} of {split.info.name} is empty")


def train_batches(
    split: Split,
    *,
    image_size: int,
    preprocessing: str,
    batch_size: int,
    autoaugment: str | None = None,
    mixup_type: int = 0,
    mixup_alpha: float = 0.2,
    seed: int = 0,
    epoch: int = 0,
    example_targets: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    finish: bool = True,
) -> tf.data.Dataset:
    """One epoch of (float32 [B, s, s, 3] on 0..255, float32 [B, num_classes] soft labels), drop_remainder.

    mixup_type 1 draws 2B images and mixes them pairwise into B; 2 mixes each batch with a shuffled
    copy of itself; lambda ~ Beta(mixup_alpha, mixup_alpha) per output example.
    finish=False: batches of (uint8 images, soft labels, mixing) as the host makes them, which
    `finish_batch` turns into the batches above (the training step calls it on the accelerator).
    `example_targets(positions [b], labels [b]) -> [b, K]`: extra soft targets per example (a teacher's
    distribution), looked up by the example's position in the split and appended to its labels
    before mixup, so they are mixed with the same weights: the targets are then [B, num_classes + K].
    """
    _check(split, image_size, preprocessing, batch_size)
    if autoaugment is not None and autoaugment not in POLICIES:
        raise UserError(f"unknown AutoAugment policy {autoaugment!r}: choose one of {', '.join(POLICIES)} or none")
    if mixup_type not in MIXUP_TYPES:
        raise UserError(f"mixup type must be 0 (off), 1 or 2, got {mixup_type}")
    if mixup_type and mixup_alpha <= 0:
        raise UserError(f"mixup alpha must be positive, got {mixup_alpha}")
    group = batch_size * (2 if mixup_type == 1 else 1)
    if split.num_examples < group:
        raise UserError(
            f"split {split.name!r} has {split.num_examples} images, fewer than one batch ({group}): lower the batch size"
        )
    num_classes = split.num_classes
    shuffle_seed, example_base, batch_base, policy_base = _epoch_seeds(seed, epoch)

    # Every per-example random number of the epoch in a few vectorised draws, zipped to the examples
    # (a random op costs ~25 us in a tf.data map; per example that added up to ~0.3 ms).
    seed_table = tf.random.stateless_uniform([split.num_examples, 2, 2], example_base, minval=None, maxval=None, dtype=tf.int64)
    flips = tf.random.stateless_uniform([split.num_examples], example_base + tf.constant([0, 1], tf.int64)) < 0.5
    randoms = (seed_table, flips)
    if autoaugment:
        randoms += draw_policy(autoaugment, policy_base, split.num_examples)

    def example(encoded: tf.Tensor, label: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # position: the example's index in the split, when targets are looked up; then its draws
        *position, (seeds, flip, *policy) = rest
        # The flip waits for finish_batch: AutoAugment's geometric ops draw their direction at random
        # and the others act on pixel values, so flipping after them draws the same distribution.
        image = train_image(encoded, seeds[0], image_size=image_size, preprocessing=preprocessing, flip=False)
        if autoaugment:
            image = apply_policy(image, *policy, seeds[1])
        # uint8 until batched: 4x less memory to copy
        return (image, tf.one_hot(label, num_classes, dtype=tf.float32), flip, *((label, *position) if position else ()))

    with_index = example_targets is not None
    ds = tf.data.Dataset.zip(split.shuffled(shuffle_seed, with_index=with_index),
                             tf.data.Dataset.from_tensor_slices(randoms))
    ds = ds.map(lambda x, drawn: example(*x, drawn), num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors(log_warning=True)  # safety net: folder images were already checked up front

    def batched(size: int) -> tf.data.Dataset:
        """Batches of (uint8 images, soft labels, flips), the extra targets appended (one lookup per batch)."""
        batches = ds.batch(size, drop_remainder=True, num_parallel_calls=AUTOTUNE, deterministic=True)
        if not with_index:
            return batches
        return batches.map(lambda x, y, flip, label, position: (x, tf.concat([y, example_targets(position, label)], -1), flip),
                           num_parallel_calls=AUTOTUNE, deterministic=True)

    if mixup_type == 0:
        ds = batched(batch_size).map(lambda x, y, flip: (x, y, {"flip": flip}))
    else:
        steps = steps_per_epoch(split.num_examples, batch_size, mixup_type)
        mixing = {"lam": _beta([steps, batch_size], mixup_alpha, batch_base)}
        if mixup_type == 2:  # each example's partner: the one its key pairs it with in sorted order
            mixing["partner_key"] = tf.random.stateless_uniform([steps, batch_size], batch_base + tf.constant([0, 1], tf.int64))
        # type 1: images 2j and 2j + 1 of the shuffled stream are mixed into output j
        ds = tf.data.Dataset.zip(batched(group), tf.data.Dataset.from_tensor_slices(mixing))
        ds = ds.map(lambda batch, mix: (*batch[:2], {"flip": batch[2], **mix}))
    if finish:
        ds = ds.map(finish_batch, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


@tf.function(jit_compile=True, reduce_retracing=True)
def finish_batch(images: tf.Tensor, targets: tf.Tensor, mixing: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of `train_batches(..., finish=False)` -> (float32 images [B, s, s, 3], targets [B, K]).

    `images` uint8 [G, s, s, 3], `targets` [G, K], `mixing`: "flip" [G] (mirror the image), and with
    mixup "lam" [B], the weight of each output's first image: G = 2B pairs images 2j and 2j + 1
    (type 1); with "partner_key" [B] (type 2) example i is mixed with example argsort(keys)[i].
    A run of consecutive examples (one replica's share of a batch) is finished the same way on its own.
    XLA fuses the flip, the cast and the mixing into one pass over the batch (TF would make ~5).
    """
    images = tf.where(mixing["flip"][:, None, None, None], tf.reverse(images, [2]), images)
    if "lam" not in mixing:
        return tf.cast(images, tf.float32), targets
    lam = mixing["lam"]
    if "partner_key" in mixing:
        partner = tf.argsort(mixing["partner_key"])
        return _mix(images, tf.gather(images, partner), lam), _mix(targets, tf.gather(targets, partner), lam)
    return _mix(images[0::2], images[1::2], lam), _mix(targets[0::2], targets[1::2], lam)


def _beta(shape: tf.Tensor, alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """Beta(alpha, alpha) samples as X / (X + Y) with X, Y ~ Gamma(alpha) (0.5 where both underflow)."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = tf.random.stateless_gamma(shape, s1, alpha)
    y = tf.random.stateless_gamma(shape, s2, alpha)
    total = x + y
    return tf.where(total > 0, x / tf.where(total > 0, total, 1.0), 0.5)


def _mix(a: tf.Tensor, b: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """lam * a + (1 - lam) * b with lam [n] over the first axis (flattened: a 2-D broadcast is fast)."""
    a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    flat_a, flat_b = tf.reshape(a, [tf.shape(a)[0], -1]), tf.reshape(b, [tf.shape(b)[0], -1])
    return tf.reshape(flat_b + lam[:, None] * (flat_a - flat_b), tf.shape(a))


def eval_batches(split: Split, *, image_size: int, preprocessing: str, batch_size: int) -> tf.data.Dataset:
    """(float32 [b, s, s, 3] on 0..255, int64 [b] labels) in data-set order, last partial batch kept.

    s = preprocessing.eval_image_size(preprocessing, image_size) (image_size is the training size).
    """
    _check(split, image_size, preprocessing, batch_size)
    ds = split.dataset.map(
        lambda encoded, label: (eval_image(encoded, image_size=image_size, preprocessing=preprocessing), label),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    ds = ds.ignore_errors(log_warning=True)
    return ds.batch(batch_size, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)
