"""The engine end to end with the real create_model on the synthetic set (32 px, a few steps), on the
tiny test architecture (the ResNets train through the engine in the model-reference tests).

One uninterrupted run is shared by the run-directory, export and resume tests (module fixture).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from finegrain.errors import UserError
from finegrain.models import load_model
from finegrain.train import engine, rundir
from finegrain.train.progress import Reporter

from .conftest import tiny_recipe


class Interrupt(Exception):
    """Stands in for a kill: raised from a reporter hook, after the engine has checkpointed."""


class StopAfterEpoch(Reporter):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, metrics):
        if epoch + 1 == self.epoch:
            raise Interrupt


def recipe_2x2():
    # DropBlock on: the resume test then also covers its keep-prob schedule and random masks.
    # Evaluation after epoch 2 only: the interrupted run skips an evaluation it does not need.
    return tiny_recipe(model={"dropblock": True}, train={"epochs": 2, "batch_size": 8, "steps_per_epoch": 2},
                       eval={"every_epochs": 2})


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    return engine.tune(recipe_2x2(), run_dir)


def test_run_directory_holds_everything(full_run):
    run = full_run.run_dir
    for name in (rundir.CARD, rundir.RECIPE, rundir.CLASSES, rundir.METRICS, rundir.WEIGHTS, rundir.CURVES, rundir.SUMMARY):
        assert (run / name).is_file(), name
    assert any((run / rundir.TENSORBOARD).glob("events.out.tfevents.*"))
    assert (run / rundir.EXPORT / "saved_model.pb").is_file()
    assert (run / rundir.CURVES).read_bytes()[:4] == b"\x89PNG"
    lines = rundir.read_metrics(run)
    assert [m["epoch"] for m in lines] == [1, 2]
    assert all({"train_loss", "train_accuracy", "lr", "dropblock_keep_prob"} <= set(m) for m in lines)
    assert {"eval_top1", "eval_top5"} <= set(lines[1]) and "eval_top1" not in lines[0]  # eval.every_epochs=2
    assert lines[1]["dropblock_keep_prob"] == pytest.approx(0.7)  # 0.9 -> 0.7 over the whole run
    assert lines[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # the cosine ends at zero
    assert len(rundir.read_classes(run)) == 10
    assert rundir.read_recipe(run) == recipe_2x2()
    state = json.loads((run / rundir.CHECKPOINTS / rundir.STATE).read_text())
    assert state["last"]["step"] == 4 and len(state["best"]) == 1  # keep_best=1
    kept = {p.name for p in (run / rundir.CHECKPOINTS).iterdir() if p.is_dir()}
    assert kept == {state["last"]["name"], state["best"][0]["name"]}
    assert not any(p.name.startswith(".tmp") for p in run.rglob("*"))


def test_export_and_load_run_match_the_model_in_memory(full_run):
    # After 4 steps from scratch the BN moving statistics are far from converged and activations can be
    # large, so outputs are compared with a relative tolerance.
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    expected = full_run.model(images.astype("float32"), training=False)
    served = tf.saved_model.load(str(full_run.run_dir / rundir.EXPORT))
    out = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(out["logits"].numpy(), expected["logits"].numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(1), 1.0, rtol=1e-5)
    emb = served.signatures["embedding"](images=tf.constant(images))["embedding"]
    np.testing.assert_allclose(emb.numpy(), expected["embedding"].numpy(), rtol=1e-3, atol=1e-5)

    loaded = load_model(full_run.run_dir)
    assert len(loaded.card.class_names) == 10 and loaded.card.arch == "tiny_test_net" and loaded.card.image_size == 32
    np.testing.assert_allclose(loaded.forward(images.astype("float32"))["logits"].numpy(),
                               expected["logits"].numpy(), rtol=1e-3, atol=1e-5)


def test_resume_after_epoch_one_equals_the_uninterrupted_run(full_run, tmp_path):
    run_dir = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        engine.tune(recipe_2x2(), run_dir, reporter=StopAfterEpoch(1))
    assert [m["epoch"] for m in rundir.read_metrics(run_dir)] == [1]
    assert not (run_dir / rundir.WEIGHTS).exists()

    resumed = engine.tune(None, run_dir, resume=True)
    assert [m["epoch"] for m in rundir.read_metrics(run_dir)] == [1, 2]
    for a, b in zip(full_run.model.weights, resumed.model.weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value), err_msg=a.path)
    assert rundir.read_metrics(run_dir)[1]["train_loss"] == pytest.approx(full_run.history[1]["train_loss"])


def test_existing_run_directory_is_refused(full_run):
    with pytest.raises(UserError, match="already exists.*--resume"):
        engine.tune(recipe_2x2(), full_run.run_dir)


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(UserError, match="not a finegrain run directory"):
        engine.tune(None, tmp_path, resume=True)
