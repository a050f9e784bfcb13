"""evaluate.inference on a tiny stand-in model (the contract's dict outputs) and a small folder data set."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finegrain.data import load_split
from finegrain.evaluate.inference import eval_settings, split_outputs
from finegrain.models import ModelCard
from finegrain.models.refs import keras_forward

CARD = ModelCard("mean_colour", num_classes=4)  # nothing known about its preprocessing: the data set's

COLOURS = {"a_red": (200, 30, 30), "b_green": (30, 200, 30), "c_blue": (30, 30, 200), "d_yellow": (200, 200, 30)}


def mean_colour_model():
    """Embedding = mean RGB colour; logits = a fixed linear map of it. Same dict outputs as create_model."""
    import keras

    images = keras.Input((None, None, 3))
    embedding = keras.layers.GlobalAveragePooling2D()(images)
    logits = keras.layers.Dense(4, use_bias=False, kernel_initializer="ones")(embedding)
    return keras.Model(images, {"features": images, "embedding": embedding, "logits": logits})


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("colours")
    for name, colour in COLOURS.items():
        for split, count in (("train", 3), ("test", 2)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40 + 4 * i, 36), colour).save(folder / f"{i}.jpg", quality=95)
    (root / "test" / "a_red" / "broken.jpg").write_bytes(b"not an image")
    return root


def test_split_outputs_are_normalised_mean_colours(colour_folder):
    split = load_split(str(colour_folder), "retrieval_test", data_dir=colour_folder / "cache")
    seen = []
    outputs, labels = split_outputs(keras_forward(mean_colour_model()), CARD, split, keys=("embedding", "logits"),
                                    image_size=32, batch_size=3, on_batch=seen.append)
    assert seen == [3, 3, 3, 1]
    # retrieval_test = second half of the classes (blue, yellow), train + test images: 2 x 5.
    assert np.bincount(labels).tolist() == [5, 5]
    emb = outputs["embedding"]
    assert emb.shape == (10, 3) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    expected = np.array([COLOURS["c_blue"], COLOURS["d_yellow"]], np.float32)[labels]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(emb, expected, atol=0.02)
    assert outputs["logits"].shape == (10, 4)  # logits are not normalised
    np.testing.assert_allclose(outputs["logits"][:, 0], outputs["logits"][:, 1])


def test_classification_split_skips_unreadable_image(colour_folder):
    split = load_split(str(colour_folder), "test", data_dir=colour_folder / "cache")
    assert [Path(p).name for p, _ in split.skipped] == ["broken.jpg"]
    outputs, labels = split_outputs(keras_forward(mean_colour_model()), CARD, split, image_size=32)
    assert outputs["logits"].shape == (8, 4) and np.bincount(labels).tolist() == [2, 2, 2, 2]


def test_eval_settings_come_from_the_card_then_the_data_set(colour_folder):
    split = load_split(str(colour_folder), "test", data_dir=colour_folder / "cache")
    assert eval_settings(CARD, split, "logits") == (224, "imagenet")
    assert eval_settings(CARD, split, "embedding") == (224, "reid")
    trained = ModelCard("resnet50", image_size=96, preprocessing="imagenet_224_256")  # a classifier
    assert eval_settings(trained, split, "logits") == (96, "imagenet_224_256")
    # its preprocessing is for its logits: its embedding is evaluated the way the data set's retrieval is
    assert eval_settings(trained, split, "embedding") == (96, "reid")
    assert eval_settings(trained, split, "embedding", 64, "imagenet") == (64, "imagenet")
    retrieval = ModelCard("resnet50", image_size=96, preprocessing="imagenet", output="embedding")
    assert eval_settings(retrieval, split, "embedding") == (96, "imagenet")


def test_tta_flip_is_the_mean_of_the_image_and_its_mirror():
    import tensorflow as tf

    from finegrain.evaluate.inference import predict_batches

    model = mirror_sensitive_model()
    forward = keras_forward(model)
    images = tf.random.stateless_uniform([3, 8, 10, 3], [1, 2], maxval=255.0)
    labels = np.arange(3)
    plain, _ = predict_batches(forward, [(images, labels)], keys=("embedding", "logits"))
    mirror, _ = predict_batches(forward, [(tf.reverse(images, [2]), labels)], keys=("embedding", "logits"))
    flip, _ = predict_batches(forward, [(images, labels)], keys=("embedding", "logits"), tta="flip")
    for key in ("embedding", "logits"):
        assert not np.allclose(plain[key], mirror[key])  # the model does see the mirror
        np.testing.assert_allclose(flip[key], (plain[key] + mirror[key]) / 2, rtol=1e-5, atol=1e-5)


def mirror_sensitive_model():
    """Embedding = the left half's mean colour minus the right half's: a mirror flips its sign."""
    import keras

    images = keras.Input((None, None, 3))
    left = keras.layers.Lambda(lambda x: x[:, :, : keras.ops.shape(x)[2] // 2])(images)
    right = keras.layers.Lambda(lambda x: x[:, :, keras.ops.shape(x)[2] // 2 :])(images)
    embedding = keras.layers.Subtract()([keras.layers.GlobalAveragePooling2D()(left),
                                         keras.layers.GlobalAveragePooling2D()(right)])
    logits = keras.layers.Dense(4, use_bias=False, kernel_initializer="ones")(embedding)
    return keras.Model(images, {"features": images, "embedding": embedding, "logits": logits})


def test_unknown_tta_is_a_user_error():
    from finegrain.errors import UserError
    from finegrain.evaluate.inference import check_tta

    with pytest.raises(UserError, match="test-time augmentation"):
        check_tta("five-crop")
