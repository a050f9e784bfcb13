"""A short run learns: top-1 on the synthetic test split well above chance (10 classes: 0.10).

The model is the registered tiny test architecture (tests/tiny_arch.py), not a ResNet: on this 2-core CPU one ResNet-50 train
step costs seconds whatever the image size, and a from-scratch ResNet needs far more steps than a
test can afford. The engine, loss, schedules, data pipeline and evaluation are the real ones.
"""

from finegrain.train import engine

from .conftest import tiny_recipe


def test_short_run_learns_well_above_chance(tmp_path):
    recipe = tiny_recipe(
        data={"image_size": 64},
        train={"epochs": 8, "batch_size": 32, "steps_per_epoch": None, "base_lr": 0.1, "warmup_epochs": 0.5,
               "weight_decay": 0.0001},
        eval={"every_epochs": 4},
        runtime={"deterministic": False},
    )
    result = engine.tune(recipe, tmp_path / "run")
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["eval_top1"] >= 0.25, result.history  # measured 0.335; chance is 0.10
