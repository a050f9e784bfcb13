"""`finegrain recipes` through the console entry point."""

import pytest

from finegrain.cli.app import main


def run(capsys, *argv):
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_recipes_lists_every_shipped_recipe(capsys):
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    for name in ("food101_assemble", "sop_ir", "synthetic_demo"):
        assert name in out


def test_recipes_show_applies_overrides(capsys):
    code, out, _ = run(capsys, "recipes", "show", "food101_assemble", "--set", "train.epochs=3")
    assert code == 0 and "epochs: 3" in out and "base_lr: 0.01" in out


def test_recipes_show_bad_key_is_one_line(capsys):
    code, out, err = run(capsys, "recipes", "show", "food101_assemble", "--set", "train.nope=1")
    assert code == 2
    assert "unknown recipe key 'train.nope'" in err and "Traceback" not in err + out


#: The paper's figure each recipe's description states, as `finegrain recipes` shows it in its own column.
PAPER = {
    "food101_assemble": "top-1 92.5", "food101_vanilla": "top-1 87.0",
    "cars196_assemble": "top-1 94.4", "cars196_vanilla": "top-1 89.1",
    "flowers102_assemble": "top-1 98.9", "flowers102_vanilla": "top-1 96.1",
    "aircraft_assemble": "top-1 92.4", "aircraft_vanilla": "top-1 78.8",
    "pets_assemble": "top-1 94.3", "pets_vanilla": "top-1 92.5",
    "sop_ir": "Recall@1 85.9", "cub200_ir": "Recall@1 80.3", "cars196_ir": "Recall@1 96.1",
    "imagenet_resnet50": "top-1 76.3", "imagenet_assemble_resnet50": "top-1 82.78",
    "imagenet_assemble_resnet152": "top-1 84.19",
}
NOT_IN_THE_PAPER = {"cub200_assemble", "cub200_vanilla", "sop_assemble", "cub200_assemble_ret", "cars196_assemble_ret",
                    "imagenet_assemble_resnet50_ir"}


def test_every_recipe_states_the_paper_figure_it_targets():
    from finegrain.cli.recipes import paper_figure
    from finegrain.train.recipe import list_recipes

    shipped = list_recipes()
    assert set(shipped) == set(PAPER) | NOT_IN_THE_PAPER | {"synthetic_demo"}
    for name, description in shipped.items():
        figure, rest = paper_figure(description)
        assert figure == PAPER.get(name, ""), name
        assert "paper top-1" not in rest and "paper Recall@1" not in rest  # stated once, in the fixed form
        if name in NOT_IN_THE_PAPER:
            assert "not in the paper" in description
    assert paper_figure("CUB (paper Recall@1 80.3) with GeM.") == ("Recall@1 80.3", "CUB with GeM.")


def test_recipes_table_shows_the_figure_in_its_own_column_and_never_cuts_a_name(capsys, monkeypatch):
    from finegrain.train.recipe import list_recipes

    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COLUMNS", "40")  # narrower than the table: it runs past the edge rather than cut text
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    firsts = {name: figure for name, figure, _, _ in rows if name}
    assert list(firsts) == list(list_recipes())  # every name whole, on its own line, in order
    assert firsts == {name: PAPER.get(name, "-") for name in firsts}
    assert "(paper" not in out
    assert "Assemble-ResNet-FGVC-50:" in out  # descriptions wrap at their column's least width, whole words


def test_recipes_say_which_need_weights_that_were_never_released(capsys, monkeypatch):
    from finegrain.cli.recipes import starting_weights
    from finegrain.train.recipe import load_recipe

    for name in ("sop_ir", "cub200_ir", "cars196_ir"):
        assert starting_weights(name) == "needs pretrained weights"
    for name in ("sop_assemble", "cub200_assemble_ret", "cars196_assemble_ret"):
        assert starting_weights(name) == "official"
        recipe = load_recipe(name, [])
        assert (recipe.model.arch, recipe.model.pooling, recipe.model.embedding_size) == ("assemble_resnet50", "gem", 1536)
        assert recipe.task == "retrieval" and recipe.train.loss == ("arcface" if name == "sop_assemble" else "cosine_softmax")
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run(capsys, "recipes")
    assert code == 0, err
    assert "cars196_ir, cub200_ir, sop_ir: no weights of their backbone were released" in " ".join(out.split())
