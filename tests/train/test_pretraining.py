"""ImageNet pretraining: the original's recipes, its evaluation cadence, and where the retrieval
backbone's weights come from (they were never released)."""

from __future__ import annotations

import pytest

from finegrain.train.engine import _pretraining_hint
from finegrain.train.loop import evaluates_after
from finegrain.train.recipe import load_recipe, pretraining_recipe


def test_pretraining_recipes_carry_the_originals_settings():
    for name, arch, preprocessing in [("imagenet_assemble_resnet50", "assemble_resnet50", "imagenet_224_256"),
                                      ("imagenet_assemble_resnet152", "assemble_resnet152", "imagenet_224_256a"),
                                      ("imagenet_assemble_resnet50_ir", "assemble_resnet50_ir", "imagenet_224_256")]:
        r = load_recipe(name)
        assert (r.model.arch, r.model.init, r.data.source, r.data.preprocessing) == (arch, "scratch", "imagenet",
                                                                                  preprocessing)
        assert (r.train.batch_size, r.train.base_lr, r.train.epochs, r.train.warmup_epochs) == (1024, 0.4, 600, 5)
        assert (r.train.weight_decay, r.train.label_smoothing, r.train.kd_temperature) == (1e-4, 0.1, 1.0)
        assert (r.data.mixup_type, r.data.autoaugment, r.model.dropblock) == (1, "imagenet", True)
        assert (r.train.dropblock_keep_prob_start, r.train.dropblock_keep_prob_end) == (1.0, 0.9)
        assert (r.runtime.precision, r.eval.every_epochs, r.eval.every_epoch_from) == ("mixed_float16", 10, 0.9)
    vanilla = load_recipe("imagenet_resnet50")
    assert (vanilla.model.arch, vanilla.data.preprocessing, vanilla.train.epochs, vanilla.eval.every_epochs) == \
        ("resnet50", "imagenet", 120, 5)
    assert (vanilla.data.mixup_type, vanilla.data.autoaugment, vanilla.train.label_smoothing) == (0, None, 0.0)


@pytest.mark.parametrize("epochs, every, start, expected", [
    (600, 10, 0.9, [*range(10, 541, 10), *range(541, 601)]),  # the original's Assemble-ResNet schedule
    (10, 4, 1.0, [4, 8, 10]),  # the last epoch always
    (5, 10, 0.0, [1, 2, 3, 4, 5]),
])
def test_evaluation_every_n_epochs_then_every_epoch_at_the_end(epochs, every, start, expected):
    assert [e for e in range(1, epochs + 1) if evaluates_after(e, epochs, every, start)] == expected


def test_the_retrieval_backbone_names_the_recipe_that_makes_it():
    assert pretraining_recipe("assemble_resnet50_ir") == "imagenet_assemble_resnet50_ir"
    assert "finegrain tune --recipe imagenet_assemble_resnet50_ir" in _pretraining_hint("assemble_resnet50_ir")
    assert _pretraining_hint("assemble_resnet50") == ""  # released weights exist: model.init official


def test_scratch_trains_from_scratch_without_the_warning(tmp_path):
    from finegrain.train import engine
    from finegrain.train.progress import Reporter
    from tests.train.conftest import tiny_recipe

    class Messages(Reporter):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def message(self, text: str) -> None:
            self.lines.append(text)

    for init, warned in ((None, True), ("scratch", False)):
        reporter = Messages()
        engine.tune(tiny_recipe(model={"init": init}, train={"epochs": 1, "steps_per_epoch": 1}),
                    tmp_path / str(init), reporter=reporter)
        assert any("from scratch" in line for line in reporter.lines) == warned
