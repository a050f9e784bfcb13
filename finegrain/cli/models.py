"""CLI commands for finegrain.models: `finegrain models` and `finegrain weights import`."""

from __future__ import annotations

from pathlib import Path

import typer

from finegrain.cli import console
from finegrain.cli.console import start_tensorflow


def models() -> None:
    """List the registered models with their parameter counts at 1001 classes."""
    from rich.padding import Padding
    from rich.text import Text

    # The Keras-free table: listing starts neither Keras nor TensorFlow (a test pins the counts).
    from finegrain.models.architectures import IMAGENET_CLASSES, list_models, model_entry

    # Lines, not a table: a table cut to a narrow terminal or a pipe truncates the names themselves.
    console.out.print(f"finegrain models (parameters with a {IMAGENET_CLASSES}-way head):", highlight=False)
    rows = []
    for name in list_models():
        entry = model_entry(name)
        counts = "parameters not recorded"
        if entry.parameters is not None:
            counts = "{:,} trainable + {:,} non-trainable".format(*entry.parameters)
        weights = "official weights" if entry.has_official_weights else "no released weights"
        rows.append((name, f"{counts}, {weights}", entry.description))
    width = max(len(name) for name, _, _ in rows)
    for name, counts, description in rows:
        console.out.print(f"[bold]{name:<{width}}[/]  {counts}", highlight=False, soft_wrap=True)
        console.out.print(Padding(Text(description), (0, 0, 0, width + 2)))  # wraps under itself


def import_weights(
    checkpoint: Path = typer.Argument(..., help="Official TF1 checkpoint: a directory with a `checkpoint` file, or a model.ckpt-N prefix."),
    arch: str = typer.Option(None, "--arch", help="Architecture the checkpoint was trained with (default: read off its variables)."),
    out_file: Path = typer.Option(..., "--out", help="Keras weights file to write (*.weights.h5)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
) -> None:
    """Convert an official TF1 checkpoint to a Keras weights file plus its model card (NAME.json beside it).

    Every variable is mapped and checked. The file then works wherever a model is named
    (--model, model.init) without --arch.
    """
    start_tensorflow()
    from finegrain.models.refs import import_checkpoint

    report = import_checkpoint(checkpoint, arch, out_file, overwrite=force)
    console.out.print(f"{report.arch}: {len(report.loaded)} variables from {report.checkpoint} -> {out_file}"
                      + (f" (ignored {len(report.ignored)}: global_step / optimizer slots)" if report.ignored else ""))


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("models")(models)
    weights_app = typer.Typer(help="Official pre-trained weights.", no_args_is_help=True)
    weights_app.command("import")(import_weights)
    app.add_typer(weights_app, name="weights")
