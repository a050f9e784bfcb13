"""`Split.shuffled(seed, with_index=True)`: each example carries its position in the split's fixed order,
for folder, synthetic and tfds splits (class-range splits count kept examples only)."""

from __future__ import annotations

import pytest

from finegrain.data import load_split


def _check_indices(split) -> None:
    ordered = [image for image, _ in split.dataset.as_numpy_iterator()]
    labels = [int(y) for _, y in split.dataset.as_numpy_iterator()]
    seen = []
    for image, label, index in split.shuffled(7, with_index=True).as_numpy_iterator():
        assert ordered[index] == image and labels[index] == label
        seen.append(int(index))
    assert sorted(seen) == list(range(split.num_examples))
    assert seen != sorted(seen) or split.num_examples < 3  # really shuffled
    assert [x[0] for x in split.shuffled(7).as_numpy_iterator()] == [ordered[i] for i in seen]  # same order


def test_synthetic_examples_know_their_position(synthetic_dir):
    _check_indices(load_split("synthetic", "test", data_dir=synthetic_dir))


@pytest.mark.parametrize("name, split", [("food101", "train"), ("flowers102", "train"), ("cub200", "retrieval_test"),
                                         ("imagenet", "train")])
def test_tfds_examples_know_their_position(prepared, name, split):
    _check_indices(load_split(name, split, data_dir=prepared[0]))
