"""CLI commands for finegrain.data (filled in by its issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
