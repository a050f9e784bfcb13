"""Recipes: every shipped file validates; the override order is defaults, file, --set; errors name the key."""

import dataclasses

import pytest
import yaml

from finegrain.errors import UserError
from finegrain.train.recipe import Recipe, list_recipes, load_recipe, recipe_to_dict, save_recipe

SHIPPED = [
    "food101_assemble", "food101_vanilla", "flowers102_assemble", "cars196_assemble", "cub200_assemble",
    "sop_ir", "cub200_ir", "cars196_ir", "synthetic_demo",
]


def test_every_shipped_recipe_loads_and_validates():
    assert set(SHIPPED) <= set(list_recipes())
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.description, f"{name} has no description"


def test_paper_settings_in_shipped_recipes():
    food = load_recipe("food101_assemble")
    assert (food.model.arch, food.data.source, food.train.epochs) == ("assemble_resnet50", "food101", 100)
    assert (food.train.base_lr, food.train.batch_size, food.train.weight_decay) == (0.01, 256, 0.001)
    assert (food.data.autoaugment, food.data.mixup_type, food.train.label_smoothing) == ("good", 1, 0.1)
    assert food.model.dropblock and (food.train.dropblock_keep_prob_start, food.train.dropblock_keep_prob_end) == (0.9, 0.7)
    vanilla = load_recipe("food101_vanilla")
    assert vanilla.model.arch == "resnet50" and not vanilla.model.dropblock
    assert (vanilla.data.autoaugment, vanilla.data.mixup_type, vanilla.train.label_smoothing) == (None, 0, 0.0)
    for name, epochs in [("flowers102_assemble", 1000), ("cars196_assemble", 1000)]:
        assert load_recipe(name).train.epochs == epochs
    sop = load_recipe("sop_ir")
    assert (sop.task, sop.model.pooling, sop.model.embedding_size, sop.train.loss) == ("retrieval", "gem", 1536, "arcface")
    assert (sop.train.loss_margin, sop.train.base_lr, sop.train.batch_size, sop.train.epochs) == (0.3, 0.008, 128, 60)
    cars = load_recipe("cars196_ir")
    assert (cars.train.loss, cars.train.label_smoothing, cars.data.autoaugment) == ("cosine_softmax", 0.1, "good")
    assert load_recipe("cub200_ir").train.base_lr == 0.001


def test_override_order_defaults_then_file_then_cli(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 7\n  base_lr: 0.1\n")
    recipe = load_recipe(str(path), ["train.epochs=3", "data.autoaugment=good", "eval.recall_ks=[1, 5]"])
    assert recipe.train.epochs == 3  # CLI beats the file
    assert recipe.train.base_lr == 0.1  # the file beats the default
    assert recipe.train.momentum == Recipe().train.momentum  # untouched default
    assert recipe.data.autoaugment == "good" and recipe.eval.recall_ks == [1, 5]
    assert recipe.name == "mine"
    assert load_recipe(str(path), ["train.base_lr=1"]).train.base_lr == 1.0  # int accepted for float


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochz=3", "unknown recipe key 'train.epochz'"),
        ("bogus.x=1", "unknown recipe key 'bogus'"),
        ("train.epochs=three", "'train.epochs' must be int"),
        ("train.epochs=2.5", "'train.epochs' must be int"),
        ("model.dropblock=maybe", "'model.dropblock' must be bool"),
        ("data.preprocessing=foo", "allowed values: imagenet, imagenet_224_256, imagenet_224_256a, reid"),
        ("train.loss=arcface", "needs model.head=cosine"),
        ("train.epochs=0", "'train.epochs' must be at least 1"),
        ("train.epochs", "must look like key=value"),
        ("train=3", "section 'train' must be a mapping"),
    ],
)
def test_validation_errors_name_the_key(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_recipe("synthetic_demo", [override])


def test_unknown_recipe_and_bad_files(tmp_path):
    with pytest.raises(UserError, match="unknown recipe 'nope'.*synthetic_demo"):
        load_recipe("nope")
    with pytest.raises(UserError, match="recipe file not found"):
        load_recipe(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(str(bad))


def test_saved_recipe_round_trips(tmp_path):
    recipe = load_recipe("sop_ir", ["train.epochs=2"])
    save_recipe(recipe, tmp_path / "recipe.yaml")
    assert load_recipe(str(tmp_path / "recipe.yaml")) == recipe
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text()) == recipe_to_dict(recipe)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


#: Classification data sets with an Assemble recipe, and its epochs (the paper's, where it gives them).
ASSEMBLE_EPOCHS = {"food101": 100, "cars196": 1000, "flowers102": 1000, "aircraft": 800, "pets": 1300, "cub200": 1000}


def test_every_assemble_recipe_has_a_vanilla_baseline_beside_it():
    """Assemble-ResNet-FGVC-50 with the paper's fine-tuning regularisers, and vanilla ResNet-50 from the
    official weights with none of them; both with Food-101's batch, LR, weight decay and schedule."""
    food = load_recipe("food101_assemble")
    for source, epochs in ASSEMBLE_EPOCHS.items():
        assemble, vanilla = load_recipe(f"{source}_assemble"), load_recipe(f"{source}_vanilla")
        assert assemble.task == vanilla.task == "classification"
        assert (assemble.model.arch, assemble.model.init, assemble.model.dropblock) == ("assemble_resnet50", "official", True)
        assert (assemble.data.autoaugment, assemble.data.mixup_type, assemble.train.label_smoothing) == ("good", 1, 0.1)
        assert (vanilla.model.arch, vanilla.model.init, vanilla.model.dropblock) == ("resnet50", "official", False)
        assert (vanilla.data.autoaugment, vanilla.data.mixup_type, vanilla.train.label_smoothing) == (None, 0, 0.0)
        for recipe in (assemble, vanilla):
            assert (recipe.data.source, recipe.train.epochs) == (source, epochs)
            assert (recipe.data.train_split, recipe.data.eval_split, recipe.data.image_size) == ("train", "test", 224)
            assert dataclasses.replace(recipe.train, epochs=food.train.epochs, label_smoothing=0.1) == food.train
            assert recipe.eval.every_epochs == (1 if source == "food101" else 10)
    for name in ("aircraft_assemble", "pets_assemble"):
        assert "no per-data-set batch, LR or weight decay" in load_recipe(name).description
