"""CLI commands for data sets: `finegrain fetch NAME` and `finegrain datasets`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from finegrain.cli import console
from finegrain.cli.console import start_tensorflow
from finegrain.data.catalog import DATA_DIR_ENV, DEFAULT_DATA_DIR  # no TensorFlow behind this import

DATA_DIR_HELP = f"Data directory (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})."


def _quiet_logs() -> None:
    """Hide tensorflow-datasets' absl warnings (e.g. half-written folders) and urllib3's per-retry lines:
    a failed download ends in one message of ours."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _result(line: str) -> None:
    """One result line on stdout, never hard-wrapped: rich would break it (paths included) at the console
    width, which is the terminal's, $COLUMNS or 80 when piped, so its text would depend on where it runs."""
    console.out.print(line, soft_wrap=True, highlight=False, markup=False)


def fetch(
    name: str = typer.Argument(..., help="food101, flowers102, cub200, cars196, aircraft, pets, sop, imagenet (archives by hand) or synthetic."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    manual_dir: Optional[Path] = typer.Option(
        None, "--manual-dir", help="Folder holding the original archive files (used instead of downloading; checksums still verified)."
    ),
) -> None:
    """Download and prepare a data set (a second run does nothing; an interrupted run can simply be run again)."""
    from finegrain.data.catalog import get_record, resolve_data_dir

    record = get_record(name)
    where = resolve_data_dir(data_dir)
    if record.tfds_name is None:
        from finegrain.data.synthetic import ensure_synthetic

        folder, made = ensure_synthetic(where)
        _result(f"{name}: {'generated' if made else 'ready'} at {folder}" + ("" if made else " (nothing to do)"))
        return
    start_tensorflow()
    from finegrain.data.tfds_source import fetch_tfds, split_sizes

    _quiet_logs()
    console.err.print(f"fetching {record.title} ({record.tfds_name}) into {where}", soft_wrap=True, markup=False)
    made = fetch_tfds(name, data_dir=where, manual_dir=manual_dir)
    sizes = ", ".join(f"{k} {v:,}" for k, v in split_sizes(name, where).items())
    if made:
        _result(f"{name}: prepared under {where} ({sizes})")
    else:
        _result(f"{name}: ready under {where} ({sizes}); nothing to do")


def datasets(data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP)) -> None:
    """List the known data sets, whether each is prepared under the data dir, and its split sizes."""
    from rich.table import Table

    from finegrain.data.catalog import CATALOG, resolve_data_dir
    from finegrain.data.synthetic import DEFAULTS as SYNTHETIC, synthetic_dir

    start_tensorflow()
    from finegrain.data.tfds_source import split_sizes

    _quiet_logs()
    where = resolve_data_dir(data_dir)
    table = Table(title=f"data sets under {where}")
    for column in ("name", "classes", "prepared", "images per split", "paper"):
        table.add_column(column)
    for record in CATALOG.values():
        if record.tfds_name:
            sizes = split_sizes(record.name, where)
            prepared = bool(sizes)
            split_text = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        else:
            prepared = (synthetic_dir(where) / "DONE").exists()
            n = record.num_classes
            split_text = (f"train {n * SYNTHETIC['train_per_class']}, test {n * SYNTHETIC['test_per_class']}"
                          if prepared else "generated on first use")
        paper = ", ".join(f"{k} {v:,}" for k, v in record.paper_sizes.items())
        table.add_row(record.name, f"{record.num_classes:,}", "yes" if prepared else "no", split_text or "-", paper)
    console.out.print(table)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("fetch")(fetch)
    app.command("datasets")(datasets)
