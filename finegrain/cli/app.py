"""The typer application. Each command group lives in its own module and registers itself here."""

from __future__ import annotations

import os
import sys

import typer

from finegrain import __version__
from finegrain.errors import UserError

app = typer.Typer(
    name="finegrain",
    help="Fine-grained image recognition by transfer learning with Assemble-ResNet (TensorFlow 2 / Keras 3).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"finegrain {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Fine-grained image recognition by transfer learning with Assemble-ResNet."""


def _register_commands() -> None:
    # Imported here so that each group module stays importable on its own (and cheap: none imports TF).
    from finegrain.cli import data, evaluate, models, predict, recipes, train

    for group in (data, models, recipes, train, evaluate, predict):
        group.register(app)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors become one red line and exit code 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up chatter
    try:
        app(args=argv, prog_name="finegrain")
    except UserError as e:
        from finegrain.cli.console import err

        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
