"""tensorflow-datasets' progress bars (download, extract, generate, shuffle) as one rich display on stderr.

tensorflow-datasets draws its bars through `tqdm_utils.tqdm_lib.tqdm`. With `tqdm.rich` each bar
opened its own live display on rich's global console (stdout, next to the results), stopped only
by that bar's own close() (for a `for x in tqdm(...)` bar: when the loop ends or the generator is
collected), and drew "0% 6/0" for bars whose total tfds grows later. Here every bar is a task of
ONE `rich.progress.Progress` on stderr, which `tfds_progress()` starts and stops itself, on the way
out of its block whatever state tfds leaves its bars in; after the block sys.stdout and sys.stderr
are the streams they were before it.

tensorflow-datasets opens its download and extraction bars with `total=0` and grows the total as it
finds work (or never, for files taken from the manual dir); while a total is unknown the bar is
drawn as an indeterminate (pulsing) bar with a plain count.
"""

from __future__ import annotations

import os
import re
import types
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text
from tqdm.std import tqdm as std_tqdm

_PATH = re.compile(r"(?<!\S)/\S+")  # an absolute path within a description ("Shuffling /data/.../x.tfrecord...")


def short_label(desc: str | None) -> str:
    """A bar's description with absolute paths cut to their last part, so the bars keep their room."""
    return _PATH.sub(lambda m: os.path.basename(m.group(0)), (desc or "").rstrip(": "))


class CountColumn(ProgressColumn):
    """`done/total unit`, or `done unit` while the total is unknown."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "")
        done = f"{task.completed:,.0f}"
        text = f"{done}/{task.total:,.0f}" if task.total is not None else done
        return Text(f"{text} {unit}".rstrip(), style="progress.download")


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}", table_column=Column(max_width=48, no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=None),
        TaskProgressColumn(),  # empty while the total is unknown
        CountColumn(),
        TimeElapsedColumn(),
        console=console,
        auto_refresh=console.is_terminal,  # off a terminal, only the final state is written (at stop)
        expand=True,
    )


def bar_class(progress: Progress) -> type:
    """A tqdm class whose bars are tasks of `progress` (tqdm keeps the counting tfds relies on)."""
    class RichTaskBar(std_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["gui"] = True  # tqdm itself writes nothing; display() below updates the rich task
            kwargs["disable"] = bool(kwargs.get("disable"))  # tqdm's None means "off unless a tty": rich decides
            self._task = None
            super().__init__(*args, **kwargs)
            if not self.disable:
                self._task = progress.add_task(short_label(self.desc), total=self._known_total(), completed=self.n,
                                               unit=(self.unit or "").strip())

        def _known_total(self) -> float | None:
            return self.total if self.total else None  # tfds starts counting bars at 0 and grows them

        def display(self, *_: Any, **__: Any) -> None:
            if self._task is not None:
                progress.update(self._task, total=self._known_total(), completed=self.n, description=short_label(self.desc))

        def update(self, n: float = 1) -> bool | None:
            shown = super().update(n)  # tqdm redraws at most every `mininterval` seconds...
            self.display()  # ...the rich task always holds the count (rich throttles the drawing)
            return shown

        def clear(self, *_: Any, **__: Any) -> None:
            pass  # rich owns the screen; nothing of tqdm's to erase

        def close(self) -> None:
            task, closing = self._task, not self.disable
            super().close()
            if task is None or not closing:
                return
            if self.leave:  # the final state stays: a finished bar, with the count as its total if none was known
                progress.update(task, total=self._known_total() or max(self.n, 1), completed=self.n)
            else:
                progress.remove_task(task)

    return RichTaskBar


@contextmanager
def tfds_progress(console: Console | None = None) -> Iterator[Progress]:
    """Within the block, tensorflow-datasets' bars are tasks of one rich Progress on `console` (stderr)."""
    from tensorflow_datasets.core.utils import tqdm_utils

    progress = make_progress(console or Console(stderr=True, soft_wrap=True))  # soft: tfds prints whole lines
    saved = tqdm_utils.tqdm_lib
    tqdm_utils.tqdm_lib = types.SimpleNamespace(tqdm=bar_class(progress))
    try:
        with progress:
            yield progress
    finally:
        tqdm_utils.tqdm_lib = saved
