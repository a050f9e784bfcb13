"""Engine options on a tiny model and the real synthetic data: retrieval + ArcFace, bfloat16,
initialisation from a previous run or a weights file, a resume from a mid-epoch checkpoint."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from finegrain.errors import UserError
from finegrain.train import engine, rundir
from finegrain.train.progress import Reporter

from .conftest import small_recipe, tiny_model


class Interrupt(Exception):
    pass


class StopAtStep(Reporter):
    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, epoch, step, logs):
        if (epoch + 1, step) == self.at:
            raise Interrupt


def test_retrieval_run_with_arcface_selects_by_recall(tiny_arch, tmp_path):
    recipe = small_recipe(
        task="retrieval",
        model={"head": "cosine"},
        data={"train_split": "retrieval_train", "eval_split": "retrieval_test"},
        train={"epochs": 1, "steps_per_epoch": 3, "loss": "arcface", "loss_scale": 16.0, "loss_margin": 0.3},
        eval={"metric": "recall@1", "recall_ks": [1, 2]},
    )
    result = engine.tune(recipe, tmp_path / "run")
    last = result.history[-1]
    assert {"eval_recall@1", "eval_recall@2", "eval_map@r"} <= set(last)
    assert 0.0 <= last["eval_recall@1"] <= last["eval_recall@2"] <= 1.0
    assert result.best["metric"] == pytest.approx(last["eval_recall@1"])
    # 5 of the 10 synthetic classes are trained on; the other 5 are the zero-shot test classes.
    assert len(rundir.read_classes(tmp_path / "run")) == 5
    served = tf.saved_model.load(str(tmp_path / "run" / rundir.EXPORT))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    out = served.signatures["serving_default"](images=tf.constant(images))
    cosines = result.model(images.astype("float32"))["logits"].numpy()
    expected = tf.nn.softmax(16.0 * cosines).numpy()  # probabilities use the training scale
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_mixed_bfloat16_trains_and_restores_the_policy(tiny_arch, tmp_path):
    recipe = small_recipe(train={"epochs": 1, "steps_per_epoch": 2}, runtime={"deterministic": False})
    result = engine.tune(recipe, tmp_path / "run", precision="mixed_bfloat16")
    assert np.isfinite(result.history[0]["train_loss"])
    assert result.model.layers[2].compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert rundir.read_recipe(tmp_path / "run").runtime.precision == "mixed_bfloat16"


def test_init_from_a_previous_run_and_from_a_weights_file(tiny_arch, tmp_path):
    first = engine.tune(small_recipe(train={"epochs": 1, "steps_per_epoch": 2}), tmp_path / "first")
    recipe = small_recipe(model={"init": str(tmp_path / "first")})
    model = engine.build_model(recipe, 10)
    for a, b in zip(first.model.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    # A weights file with another classifier: everything else loads, the 3-way head stays fresh.
    model = engine.build_model(small_recipe(model={"init": str(tmp_path / "first" / rundir.WEIGHTS)}), 3)
    np.testing.assert_array_equal(np.asarray(model.weights[0].value), np.asarray(first.model.weights[0].value))
    assert model.output["logits"].shape[-1] == 3
    with pytest.raises(UserError, match="does not exist"):
        engine.build_model(small_recipe(model={"init": str(tmp_path / "nowhere.weights.h5")}), 3)


def test_resume_from_a_mid_epoch_checkpoint(tiny_arch, tmp_path):
    recipe = small_recipe(train={"epochs": 2, "steps_per_epoch": 4})
    reference = engine.tune(recipe, tmp_path / "reference")
    with pytest.raises(Interrupt):
        engine.tune(recipe, tmp_path / "run", reporter=StopAtStep(2, 3), checkpoint_every_steps=2)
    state = rundir.CheckpointStore(tmp_path / "run" / rundir.CHECKPOINTS, tf.train.Checkpoint()).last
    assert (state.epoch, state.step) == (1, 6)  # epoch 2, step 2 of 4
    resumed = engine.tune(None, tmp_path / "run", resume=True)
    for a, b in zip(reference.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    assert resumed.history[1]["train_loss"] == pytest.approx(reference.history[1]["train_loss"])


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tiny_arch, tmp_path):
    recipe = small_recipe(model={"init": str(tmp_path / "missing.weights.h5")})
    with pytest.raises(UserError, match="does not exist"):
        engine.tune(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # so the same --run-dir can be used again


def test_tiny_model_follows_the_output_contract():
    model = tiny_model("x", num_classes=4, head="cosine")
    out = model(np.zeros((1, 16, 16, 3), "float32"))
    assert set(out) == {"features", "embedding", "logits"} and out["logits"].shape == (1, 4)


def test_init_official_finds_the_weights_dir_or_says_where_to_put_them(tiny_arch, tmp_path, monkeypatch):
    first = engine.tune(small_recipe(train={"epochs": 1, "steps_per_epoch": 1}), tmp_path / "first")
    monkeypatch.setenv("FINEGRAIN_WEIGHTS_DIR", str(tmp_path / "weights"))
    recipe = small_recipe(model={"init": "official"})
    with pytest.raises(UserError, match=r"official ImageNet weights for .* not found: download the checkpoint from https://drive\.google"):
        engine.build_model(recipe, 10)
    (tmp_path / "weights").mkdir()
    first.model.save_weights(str(tmp_path / "weights" / f"{recipe.model.arch}.weights.h5"))
    model = engine.build_model(recipe, 10)
    for a, b in zip(first.model.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
