"""Engine options on the tiny test architecture and the real synthetic data: retrieval + ArcFace,
bfloat16, initialisation from each kind of model reference, resumes from a mid-epoch checkpoint and
from a run killed before its first checkpoint."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from finegrain.errors import UserError
from finegrain.models import build_model, load_model, read_card
from finegrain.train import engine, rundir
from finegrain.train.checkpoints import CheckpointStore
from finegrain.train.progress import Reporter

from .conftest import tiny_recipe


class Interrupt(Exception):
    pass


class StopAtStep(Reporter):
    def __init__(self, epoch: int, step: int) -> None:
        self.at = (epoch, step)

    def on_step(self, epoch, step, logs):
        if (epoch + 1, step) == self.at:
            raise Interrupt


def weights_equal(a: keras.Model, b: keras.Model) -> None:
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(x.value), np.asarray(y.value), err_msg=x.path)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    return engine.tune(tiny_recipe(train={"epochs": 1, "steps_per_epoch": 2}), tmp_path_factory.mktemp("r") / "first")


def test_retrieval_run_with_arcface_selects_by_recall(tmp_path):
    recipe = tiny_recipe(
        task="retrieval",
        model={"head": "cosine"},
        data={"train_split": "retrieval_train", "eval_split": "retrieval_test"},
        train={"epochs": 1, "steps_per_epoch": 3, "loss": "arcface", "loss_scale": 16.0, "loss_margin": 0.3},
        eval={"recall_ks": [1, 2]},
    )
    result = engine.tune(recipe, tmp_path / "run")
    last = result.history[-1]
    assert {"eval_recall@1", "eval_recall@2", "eval_map@r"} <= set(last)
    assert 0.0 <= last["eval_recall@1"] <= last["eval_recall@2"] <= 1.0
    assert result.best["metric"] == pytest.approx(last["eval_recall@1"])
    # 5 of the 10 synthetic classes are trained on; the other 5 are the zero-shot test classes.
    card = read_card(tmp_path / "run")
    assert len(card.class_names) == 5 and card.output == "embedding" and card.logit_scale == 16.0
    served = tf.saved_model.load(str(tmp_path / "run" / rundir.EXPORT))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    out = served.signatures["serving_default"](images=tf.constant(images))
    cosines = result.model(images.astype("float32"))["logits"].numpy()
    expected = tf.nn.softmax(16.0 * cosines).numpy()  # probabilities use the training scale
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, rtol=1e-4, atol=1e-6)


def test_retrieval_ks_default_to_the_data_sets(tmp_path):
    recipe = tiny_recipe(task="retrieval", data={"train_split": "retrieval_train", "eval_split": "retrieval_test"},
                         train={"epochs": 1, "steps_per_epoch": 1})
    result = engine.tune(recipe, tmp_path / "run")
    assert {k for k in result.history[-1] if k.startswith("eval_recall@")} == {f"eval_recall@{k}" for k in (1, 2, 4, 8)}


def test_mixed_bfloat16_trains_and_restores_the_policy(tmp_path):
    recipe = tiny_recipe(train={"epochs": 1, "steps_per_epoch": 2}, runtime={"deterministic": False})
    result = engine.tune(recipe, tmp_path / "run", precision="mixed_bfloat16")
    assert np.isfinite(result.history[0]["train_loss"])
    assert result.model.get_layer("tiny_conv0").compute_dtype == "bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert rundir.read_recipe(tmp_path / "run").runtime.precision == "mixed_bfloat16"


def test_init_from_a_run_a_saved_model_and_a_weights_file(first_run):
    run = first_run.run_dir
    card = read_card(run)
    for reference in (run, run / rundir.EXPORT, run / rundir.WEIGHTS):
        model, fresh = build_model(card, str(reference))
        assert fresh == []
        weights_equal(first_run.model, model)
    # Another class count: every weight but the classifier comes over by path, the 3-way head is new.
    three = card.__class__(**{**card.to_dict(), "num_classes": 3, "class_names": None})
    for reference in (run, run / rundir.EXPORT):
        model, fresh = build_model(three, str(reference))
        assert sorted(fresh) == ["dense/bias", "dense/kernel"]
        np.testing.assert_array_equal(np.asarray(model.get_layer("tiny_conv0").kernel),
                                      np.asarray(first_run.model.get_layer("tiny_conv0").kernel))
        assert model.output["logits"].shape[-1] == 3
    with pytest.raises(UserError, match="does not exist"):
        build_model(card, str(run / "nowhere.weights.h5"))


def test_init_from_another_architecture_is_refused(first_run):
    card = read_card(first_run.run_dir)
    with pytest.raises(UserError, match="does not fit model 'resnet50'"):
        build_model(card.__class__(**{**card.to_dict(), "arch": "resnet50"}), str(first_run.run_dir))


def test_resume_from_a_mid_epoch_checkpoint(tmp_path):
    recipe = tiny_recipe(train={"epochs": 2, "steps_per_epoch": 4})
    reference = engine.tune(recipe, tmp_path / "reference")
    with pytest.raises(Interrupt):
        engine.tune(recipe, tmp_path / "run", reporter=StopAtStep(2, 3), checkpoint_every_steps=2)
    state = CheckpointStore(tmp_path / "run" / rundir.CHECKPOINTS, tf.train.Checkpoint()).last
    assert (state.epoch, state.step) == (1, 6)  # epoch 2, step 2 of 4
    assert state.totals["seen"] == 16  # the part-done epoch's sums travel with the checkpoint
    (tmp_path / "run" / ".model.weights.h5.tmp-left-by-a-kill").write_text("x")
    resumed = engine.tune(None, tmp_path / "run", resume=True)
    weights_equal(reference.model, resumed.model)
    assert resumed.history[1]["train_loss"] == pytest.approx(reference.history[1]["train_loss"])
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_a_run_killed_before_its_first_checkpoint_resumes_from_its_start(tmp_path):
    recipe = tiny_recipe(train={"epochs": 1, "steps_per_epoch": 2})
    reference = engine.tune(recipe, tmp_path / "reference")
    # What a kill -9 in the first epoch leaves: the run's description, no checkpoint.
    killed = tmp_path / "killed"
    killed.mkdir()
    for name in (rundir.RECIPE, rundir.CLASSES, rundir.CARD):
        (killed / name).write_bytes((tmp_path / "reference" / name).read_bytes())
    resumed = engine.tune(None, killed, resume=True)
    weights_equal(reference.model, resumed.model)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    recipe = tiny_recipe(model={"init": str(tmp_path / "missing.weights.h5")})
    with pytest.raises(UserError, match="does not exist"):
        engine.tune(recipe, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # so the same --run-dir can be used again


def test_damaged_checkpoint_state_is_one_user_error(first_run, tmp_path):
    for i, damage in enumerate(("", "{", "{}", "\x00\xff", json.dumps({"last": {"name": "x"}, "best": [], "history": []}))):
        run = tmp_path / f"damaged{i}"
        run.mkdir()
        (run / rundir.RECIPE).write_bytes((first_run.run_dir / rundir.RECIPE).read_bytes())
        (run / rundir.CHECKPOINTS).mkdir()
        (run / rundir.CHECKPOINTS / rundir.STATE).write_text(damage)
        with pytest.raises(UserError, match="damaged"):
            engine.tune(None, run, resume=True)


def test_init_official_finds_the_weights_dir_or_says_where_to_put_them(first_run, tmp_path, monkeypatch):
    monkeypatch.setenv("FINEGRAIN_WEIGHTS_DIR", str(tmp_path / "weights"))
    card = read_card(first_run.run_dir)
    with pytest.raises(UserError, match=r"official ImageNet weights for .* not found: download the checkpoint from https://drive\.google"):
        build_model(card, "official:tiny_test_net")
    (tmp_path / "weights").mkdir()
    first_run.model.save_weights(str(tmp_path / "weights" / "tiny_test_net.weights.h5"))
    model, _ = build_model(card, "official:tiny_test_net")
    weights_equal(first_run.model, model)
    assert load_model("official:tiny_test_net", num_classes=10).card.arch == "tiny_test_net"
