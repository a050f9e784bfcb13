"""tensorflow-datasets' tqdm bars drawn as tasks of one rich Progress: totals, closing, streams restored."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from finegrain.data.tfds_progress import bar_class, make_progress, short_label, tfds_progress


def terminal(width: int = 100) -> Console:
    """A console that behaves as a terminal (live redraws, stdout/stderr redirected) whatever runs the tests."""
    return Console(file=io.StringIO(), force_terminal=True, width=width, color_system=None)


def test_unknown_total_is_a_count_then_a_fraction_once_known():
    progress = make_progress(Console(file=io.StringIO(), width=100))
    bar = bar_class(progress)(total=0, desc="Extraction completed...", unit=" file")
    task = progress.tasks[0]
    bar.update(6)  # tfds manual-dir path: counts without ever growing the total
    assert task.total is None and task.completed == 6  # indeterminate, not "0% 6/0"
    bar.total += 8  # what tfds' update_total does
    bar.refresh()
    assert task.total == 8 and task.completed == 6
    bar.update(2)
    bar.close()
    assert task.finished and task.total == 8


def test_leave_false_bar_is_removed_and_leave_true_bar_finishes_with_its_count():
    progress = make_progress(Console(file=io.StringIO(), width=100))
    bar_cls = bar_class(progress)
    kept = bar_cls(total=0, desc="Dl Completed...", unit=" url")
    kept.update(3)
    for _ in bar_cls(range(4), desc="Generating train examples...", leave=False):
        pass
    kept.close()
    assert [t.description for t in progress.tasks] == ["Dl Completed..."]
    assert progress.tasks[0].total == 3 and progress.tasks[0].finished


def test_display_is_stopped_and_streams_restored_even_with_a_bar_left_open():
    """A generator bar abandoned by an exception must not keep the display live or stdout redirected."""
    from tensorflow_datasets.core.utils import tqdm_utils

    console = terminal()
    before = sys.stdout, sys.stderr, tqdm_utils.tqdm_lib
    abandoned = None
    with pytest.raises(ValueError):
        with tfds_progress(console) as progress:
            assert sys.stdout is not before[0]  # on a terminal, rich redirects while live
            abandoned = iter(tqdm_utils.tqdm(range(10), desc="Generating train examples...", leave=False))
            next(abandoned)
            raise ValueError("archive problem mid-way")
    assert not progress.live.is_started and console._live_stack == []
    assert (sys.stdout, sys.stderr, tqdm_utils.tqdm_lib) == before
    print("a user's line after the bars")  # goes to the real stdout (pytest's capture), not into the display
    abandoned.close()  # a late close (garbage collection) on a stopped display is harmless


def test_descriptions_keep_only_the_last_part_of_paths():
    long = "Shuffling /data/oxford_flowers102/incomplete.Q8DS0U_2.1.1/oxford_flowers102-train.tfrecord*..."
    assert short_label(long) == "Shuffling oxford_flowers102-train.tfrecord*..."
    assert short_label("Dl Size...") == "Dl Size..." and short_label(None) == ""
