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
    from finegrain.cli import data, distill, evaluate, index, models, predict, recipes, robustness, train

    for group in (data, models, recipes, train, distill, evaluate, predict, index, robustness):
        group.register(app)


_register_commands()


#: Modules to import before any command, comma-separated: they register a user's own architectures
#: (`finegrain.models.register_model`) so that recipes, references and commands can name them.
PLUGINS_ENV = "FINEGRAIN_PLUGINS"


def _load_plugins() -> None:
    import importlib

    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except Exception as e:  # an import error of the user's module: one line, not a traceback
            raise UserError(f"cannot import {name} named in {PLUGINS_ENV}: {type(e).__name__}: {e}") from None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors and command-line mistakes become one red line, exit code 2."""
    from finegrain.cli.console import open_consoles

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up chatter
    open_consoles()
    try:
        _load_plugins()
        code = app(args=argv, prog_name="finegrain", standalone_mode=False)
    except UserError as e:
        _fail(str(e))
    except typer.Abort:
        _fail("aborted", 130)
    except Exception as e:
        # typer's usage errors (unknown option, missing or malformed value) would print a framed
        # multi-line box; they carry format_message() and exit_code (click's ClickException shape).
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if not e.format_message().strip():  # no arguments: the help was shown instead
            sys.exit(e.exit_code)
        ctx = getattr(e, "ctx", None)
        where = ctx.command_path if ctx is not None else "finegrain"
        _fail(f"{e.format_message().strip()} (see: {where} --help)", e.exit_code or 2)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    from finegrain.cli.console import err

    first = message.strip().splitlines()[0] if message.strip() else "failed"
    err.print(f"[bold red]error:[/] {escape(first)}", highlight=False, soft_wrap=True)
    sys.exit(code)

if __name__ == "__main__":
    main()
