"""How a training run reports itself: a rich progress bar per epoch, plain log lines, or nothing.

The engine calls these hooks; it never prints. No TensorFlow here (the CLI imports this module).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    """No-op base: subclass and override the hooks you need."""

    def on_start(self, info: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, epoch: int, steps: int, start_step: int) -> None: ...

    def on_step(self, epoch: int, step: int, logs: dict[str, float]) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None: ...

    def on_end(self, summary: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


def _format_metrics(metrics: dict[str, Any]) -> str:
    parts = []
    for key, value in metrics.items():
        if key in ("epoch", "time"):
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


class LogReporter(Reporter):
    """Plain lines (for --quiet, logs and CI): one per epoch, plus one every `every_s` seconds."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 60.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._last = 0.0

    def _print(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)

    def on_start(self, info: dict[str, Any]) -> None:
        self._print("tune " + " ".join(f"{k}={v}" for k, v in info.items()))

    def on_step(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(f"epoch {epoch + 1} step {step} " + _format_metrics(logs))

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._print(f"epoch {epoch + 1} done " + _format_metrics(metrics))

    def on_end(self, summary: dict[str, Any]) -> None:
        self._print("finished " + _format_metrics(summary))

    def message(self, text: str) -> None:
        self._print(text)


class RichReporter(Reporter):
    """A rich progress bar per epoch (loss, accuracy, images/s, ETA) and a summary table at the end."""

    def __init__(self, console: Any = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress: Any = None
        self._task: Any = None
        self._epochs = 0

    def on_start(self, info: dict[str, Any]) -> None:
        self._epochs = int(info.get("epochs", 0))
        shown = ", ".join(f"{k}={v}" for k, v in info.items())
        self.console.print(f"[bold]tune[/] {shown}", highlight=False)

    def on_epoch_begin(self, epoch: int, steps: int, start_step: int) -> None:
        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self._epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, completed=start_step, stats="")

    def on_step(self, epoch: int, step: int, logs: dict[str, float]) -> None:
        stats = f"loss {logs['loss']:.4f} acc {logs['accuracy']:.3f} {logs['images_per_s']:.1f} img/s"
        self._progress.update(self._task, completed=step, stats=stats)

    def on_epoch_end(self, epoch: int, metrics: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print(f"  epoch {epoch + 1}: " + _format_metrics(metrics), highlight=False)

    def on_end(self, summary: dict[str, Any]) -> None:
        table = Table(title="finegrain tune", show_header=False)
        for key, value in summary.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        self.console.print(table)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)
