"""Training / evaluation pipelines: shapes, determinism, resumption by skip, mixup, preprocessing types."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.data import load_split
from finegrain.data.pipeline import eval_batches, finish_batch, steps_per_epoch, train_batches
from finegrain.data.preprocessing import PREPROCESSING, eval_image_size
from finegrain.errors import UserError


@pytest.fixture(scope="module")
def train(synthetic_dir):
    return load_split("synthetic", "train", data_dir=synthetic_dir)


def arrays(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_same_seed_same_batches_and_skip_resumes(train):
    kwargs = dict(image_size=24, preprocessing="imagenet", batch_size=64, autoaugment="good", mixup_type=1, seed=7)
    first = arrays(train_batches(train, epoch=2, **kwargs))
    again = arrays(train_batches(train, epoch=2, **kwargs).take(3))
    assert len(first) == steps_per_epoch(train.num_examples, 64, 1) == 9
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    resumed = arrays(train_batches(train, epoch=2, **kwargs).skip(2))
    assert np.array_equal(resumed[0][0], first[2][0]) and np.array_equal(resumed[0][1], first[2][1])
    other_epoch = arrays(train_batches(train, epoch=3, **kwargs).take(1))
    assert not np.array_equal(other_epoch[0][0], first[0][0])


@pytest.mark.parametrize("mixup_type", [1, 2])
def test_mixup_soft_labels_sum_to_one(train, mixup_type):
    batches = arrays(train_batches(train, image_size=16, preprocessing="imagenet", batch_size=50, mixup_type=mixup_type))
    assert len(batches) == steps_per_epoch(train.num_examples, 50, mixup_type)
    labels = np.concatenate([y for _, y in batches])
    images = np.concatenate([x for x, _ in batches])
    assert labels.shape[1] == train.num_classes and images.dtype == np.float32
    np.testing.assert_allclose(labels.sum(1), 1.0, atol=1e-5)
    assert ((labels > 0).sum(1) >= 2).mean() > 0.5  # most examples really are mixtures
    assert images.min() >= 0 and images.max() <= 255


def test_mixup_type_1_mixes_consecutive_images_with_their_label_weights(train):
    common = dict(image_size=16, preprocessing="imagenet", autoaugment="good", seed=3, epoch=1)
    x, y = next(iter(train_batches(train, batch_size=16, **common)))  # the same stream, unmixed
    mixed_x, mixed_y = next(iter(train_batches(train, batch_size=8, mixup_type=1, **common)))
    x, y, mixed_x, mixed_y = x.numpy(), y.numpy(), mixed_x.numpy(), mixed_y.numpy()
    checked = 0
    for j in range(8):
        a, b = np.argmax(y[2 * j]), np.argmax(y[2 * j + 1])
        if a == b:
            continue  # lambda cannot be read off the labels
        lam = mixed_y[j, a]
        np.testing.assert_allclose(mixed_y[j, b], 1.0 - lam, atol=1e-6)
        np.testing.assert_allclose(mixed_x[j], x[2 * j + 1] + lam * (x[2 * j] - x[2 * j + 1]), atol=1e-3)
        checked += 1
    assert checked >= 4


def test_unfinished_batches_are_uint8_and_half_are_flipped_when_finished(train):
    kwargs = dict(image_size=16, preprocessing="imagenet", batch_size=64, seed=2)
    images, targets, mixing = next(iter(train_batches(train, finish=False, **kwargs)))
    x, y = next(iter(train_batches(train, **kwargs)))
    assert images.dtype == np.uint8 and set(mixing) == {"flip"}
    flip = mixing["flip"].numpy()
    assert 16 <= flip.sum() <= 48  # a fair coin per image
    mirrored = np.where(flip[:, None, None, None], images.numpy()[:, :, ::-1], images.numpy())
    np.testing.assert_array_equal(x.numpy(), mirrored.astype(np.float32))
    np.testing.assert_array_equal(y.numpy(), targets.numpy())


@pytest.mark.parametrize("mixup_type", [0, 1])
def test_a_replicas_share_of_a_batch_finishes_like_its_rows_of_the_whole(train, mixup_type):
    # Under tf.distribute each replica finishes the consecutive examples it was given: for mixup type 1
    # the first half of the images (and of lam) must give the first half of the whole batch.
    kwargs = dict(image_size=16, preprocessing="imagenet", batch_size=8, mixup_type=mixup_type, autoaugment="good")
    images, targets, mixing = next(iter(train_batches(train, finish=False, **kwargs)))
    whole_x, whole_y = finish_batch(images, targets, mixing)
    g = images.shape[0] // 2
    share = {k: v[: (g if k == "flip" else 4)] for k, v in mixing.items()}
    x, y = finish_batch(images[:g], targets[:g], share)
    np.testing.assert_allclose(x.numpy(), whole_x.numpy()[:4], atol=1e-4)
    np.testing.assert_allclose(y.numpy(), whole_y.numpy()[:4], atol=1e-6)


@pytest.mark.parametrize("preprocessing", list(PREPROCESSING))
def test_preprocessing_types_give_the_promised_sizes(train, preprocessing):
    x, y = next(iter(train_batches(train, image_size=40, preprocessing=preprocessing, batch_size=4)))
    assert x.shape == (4, 40, 40, 3) and y.shape == (4, train.num_classes)
    xs, ys = next(iter(eval_batches(train, image_size=40, preprocessing=preprocessing, batch_size=4)))
    side = eval_image_size(preprocessing, 40)
    assert xs.shape == (4, side, side, 3) and ys.dtype == np.int64


def test_eval_sizes_scale_the_paper_ratios():
    assert eval_image_size("imagenet", 224) == 224 and eval_image_size("imagenet_224_256", 224) == 256
    assert eval_image_size("reid", 224) == 256 and eval_image_size("imagenet", 112) == 112


def test_eval_keeps_order_and_last_partial_batch(synthetic_dir):
    test = load_split("synthetic", "test", data_dir=synthetic_dir)
    labels = np.concatenate([y for _, y in arrays(eval_batches(test, image_size=32, preprocessing="imagenet", batch_size=64))])
    assert len(labels) == test.num_examples == 200
    assert np.array_equal(labels, [int(y) for _, y in test.dataset.as_numpy_iterator()])


def test_png_images_take_the_non_jpeg_path(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "png" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((30, 21, 3), 40 * i, np.uint8)).save(tmp_path / "png" / c / f"{i}.png")
    split = load_split(tmp_path / "png", "train", data_dir=tmp_path / "d")
    x, y = next(iter(train_batches(split, image_size=12, preprocessing="imagenet", batch_size=2, autoaugment="imagenet")))
    assert x.shape == (2, 12, 12, 3)
    xe, _ = next(iter(eval_batches(split, image_size=12, preprocessing="reid", batch_size=2)))
    assert xe.shape == (2, 13, 13, 3)  # reid evaluates at int(12 / 0.875), as the original


def test_bad_arguments_are_user_errors(train):
    for kwargs in ({"preprocessing": "bogus"}, {"autoaugment": "cifar"}, {"mixup_type": 3}, {"batch_size": 10_000}):
        args = {"image_size": 16, "preprocessing": "imagenet", "batch_size": 4, **kwargs}
        with pytest.raises(UserError):
            train_batches(train, **args)
