"""CLI: `finegrain distill-targets`: a teacher's logits over a training split, for knowledge distillation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from finegrain.cli.common import ARCH_HELP, NUM_CLASSES_HELP, load_reference, positive
from finegrain.models.card import REFERENCE_HELP


def distill_targets(
    teacher: Path = typer.Option(..., "--teacher", help=f"The teacher: {REFERENCE_HELP}."),
    out: Path = typer.Option(..., "--out", help="Directory for the targets (a killed run continues in it)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set the student trains on."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder instead of --dataset."),
    split: str = typer.Option("train", "--split", help="The student's training split."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Teacher's image size (default: its card's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Teacher's eval preprocessing (default: its card's)."),
) -> None:
    """Compute a teacher's logits once over the student's training split (un-augmented, at the teacher's
    own image size and eval preprocessing), for `train.kd_targets` in a recipe.

    \b
    Stored as float16 (memory-mapped in training) with the split's identity: a changed split refuses
    the file. Killed, the same command continues from the last written chunk. A 1001-way (background)
    teacher can teach a 1000-way student and the other way round: the logits are aligned by class.
    """
    from finegrain.cli.console import err, out as stdout, start_tensorflow
    from finegrain.errors import UserError

    positive(batch_size, "--batch-size")
    positive(image_size, "--image-size")
    if (dataset is None) == (data is None):
        raise UserError("name the student's training images: --dataset NAME or --data FOLDER (one of them)")
    start_tensorflow()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from finegrain.data import load_split
    from finegrain.train.distill import compute_targets

    source = str(data) if data is not None else dataset
    images = load_split(source, split, data_dir=data_dir)
    loaded = load_reference(teacher, arch, num_classes)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"teacher logits on {images.info.name}/{images.name}", total=images.num_examples)
        targets, computed = compute_targets(
            loaded, str(teacher), images, source, out, batch_size=batch_size, image_size=image_size,
            preprocessing=preprocessing, on_rows=lambda n: bar.advance(task, n),
            on_chunk=lambda done: bar.update(task, completed=done))
    what = "wrote" if computed else "already complete (nothing to do):"
    stdout.print(f"{what} {targets.directory}: {targets.logits.shape[0]:,} x {targets.logits.shape[1]:,} teacher "
                 f"logits of {loaded.description} at {targets.info['image_size']} px, {targets.info['preprocessing']}",
                 soft_wrap=True, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("distill-targets")(distill_targets)
