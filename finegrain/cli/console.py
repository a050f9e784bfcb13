"""Shared rich consoles: results go to stdout, progress and messages to stderr."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
