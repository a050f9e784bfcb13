"""`finegrain recipes`: list the shipped recipes, or show one resolved."""

from __future__ import annotations

from typing import Optional

import typer

from finegrain.cli.console import out

recipes_app = typer.Typer(help="List the shipped fine-tuning recipes, or show one.", no_args_is_help=False)


@recipes_app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    """List the shipped recipes with one line each."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from finegrain.train.recipe import list_recipes

    table = Table(title="recipes (finegrain tune --recipe NAME)")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, description in list_recipes().items():
        table.add_row(name, description)
    out.print(table)


@recipes_app.command("show")
def show(
    recipe: str = typer.Argument(..., help="A shipped recipe name or a path to a YAML file."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field: key=value (repeatable)."),
) -> None:
    """Print a recipe with every field resolved (schema defaults, then the file, then --set)."""
    from rich.syntax import Syntax

    from finegrain.train.recipe import load_recipe, recipe_yaml

    out.print(Syntax(recipe_yaml(load_recipe(recipe, set_ or [])), "yaml", theme="ansi_dark", background_color="default", word_wrap=True))


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")
