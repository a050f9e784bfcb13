"""`finegrain recipes`: list the shipped recipes, or show one resolved."""

from __future__ import annotations

import re
from typing import Optional

import typer

from finegrain.cli import console

recipes_app = typer.Typer(help="List the shipped fine-tuning recipes, or show one.", no_args_is_help=False)

#: How a recipe's description states the paper's figure it targets: "... (paper top-1 92.5)."
PAPER_FIGURE = re.compile(r"\s*\(paper (top-1|Recall@1) (\d+(?:\.\d+)?)\)")
DESCRIPTION_WIDTH = 24


def starting_weights(name: str) -> str:
    """What a shipped recipe starts from: "official", "needs pretrained weights" (model.init unset and
    no weights released for its architecture), or "scratch" / "random" (meant so, or from a run)."""
    from finegrain.models.architectures import model_entry
    from finegrain.train.recipe import load_recipe

    model = load_recipe(name, []).model
    if model.init is None:
        return "random" if model_entry(model.arch).has_official_weights else "needs pretrained weights"
    return "official" if str(model.init).startswith("official") else str(model.init)


def paper_figure(description: str) -> tuple[str, str]:
    """("top-1 92.5", the description without "(paper top-1 92.5)"), or ("", description) when it states none."""
    found = PAPER_FIGURE.search(description)
    if found is None:
        return "", description
    return f"{found[1]} {found[2]}", description[:found.start()] + description[found.end():]


@recipes_app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    """List the shipped recipes: name, the paper's figure it targets, description."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from finegrain.train.recipe import list_recipes

    rows = [(name, *paper_figure(description)) for name, description in list_recipes().items()]
    starts = {name: starting_weights(name) for name, _, _ in rows}
    # Names and figures are never cut or broken: their columns are as wide as their longest entry, and the
    # descriptions (which wrap) get at least DESCRIPTION_WIDTH; below that width the table runs past the
    # console's edge (the terminal wraps its lines) rather than losing text.
    widths = [max(len(name) for name, _, _ in rows), max(len("paper"), *(len(f) for _, f, _ in rows)), DESCRIPTION_WIDTH]
    least = sum(widths) + len("starts from") + 3 * (len(widths) + 1) + 1  # with the borders and padding
    table = Table(title="recipes (finegrain tune --recipe NAME)", width=least if console.out.width < least else None)
    table.add_column("name", style="bold", no_wrap=True, min_width=widths[0])
    table.add_column("paper", no_wrap=True, min_width=widths[1])
    table.add_column("starts from", min_width=len("starts from"))
    table.add_column("description", min_width=widths[2])
    for name, figure, description in rows:
        table.add_row(name, figure or "-", starts[name], description)
    console.out.print(table, crop=False)
    missing = [name for name, start in starts.items() if start == "needs pretrained weights"]
    if missing:
        console.out.print(f"{', '.join(missing)}: no weights of their backbone were released; pretrain it first, then "
                          "--set model.init=THAT_RUN (see `finegrain recipes show NAME`).", highlight=False, soft_wrap=True)


@recipes_app.command("show")
def show(
    recipe: str = typer.Argument(..., help="A shipped recipe name or a path to a YAML file."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: key=value (repeatable)."),
) -> None:
    """Print a recipe with every field resolved (schema defaults, then the file, then --set)."""
    from rich.syntax import Syntax

    from finegrain.train.recipe import load_recipe, recipe_yaml

    console.out.print(Syntax(recipe_yaml(load_recipe(recipe, set_ or [])), "yaml", theme="ansi_dark", background_color="default", word_wrap=True))


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
