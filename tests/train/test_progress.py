"""Reporters: the rich bar/summary and the plain log lines show what a user watches for."""

import io

from rich.console import Console

from finegrain.train.progress import LogReporter, RichReporter


def drive(reporter):
    reporter.on_start({"run_dir": "runs/x", "epochs": 2, "steps_per_epoch": 3})
    for epoch in range(2):
        reporter.on_epoch_begin(epoch, 3, 0)
        for step in range(1, 4):
            reporter.on_step(epoch, step, {"loss": 1.5 / step, "accuracy": 0.25 * step, "images_per_s": 12.5,
                                           "lr": 0.01})
        reporter.on_epoch_end(epoch, {"epoch": epoch + 1, "train_loss": 0.5, "eval_top1": 0.75})
    reporter.on_end({"run_dir": "runs/x", "best_top1": 0.75, "best_epoch": 2})


def test_rich_reporter_shows_progress_and_a_summary_table():
    console = Console(record=True, width=120, force_terminal=False)
    drive(RichReporter(console))
    text = console.export_text()
    assert "epoch 2/2" in text and "img/s" in text and "acc 0.750" in text
    assert "eval_top1=0.75" in text
    assert "best_top1" in text and "0.7500" in text  # the summary table


def test_log_reporter_prints_plain_lines():
    stream = io.StringIO()
    drive(LogReporter(stream, every_s=0))
    lines = stream.getvalue().splitlines()
    assert any("epoch 1 step 3" in line and "images_per_s=12.5" in line for line in lines)
    assert sum("done" in line for line in lines) == 2
    assert "finished" in lines[-1] and "best_top1=0.75" in lines[-1]
    assert not any("\x1b[" in line for line in lines)  # no terminal escapes
