"""CLI command `robustness`: top-1 error under the ImageNet-C corruptions, CE, mCE and relative mCE.

No TensorFlow import at module level: it is imported inside the command (--help stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from finegrain.cli.common import (
    ARCH_HELP,
    MODEL_HELP,
    NUM_CLASSES_HELP,
    images_source,
    load_reference,
    positive,
    print_json,
)
from finegrain.errors import UserError

CORRUPTIONS_HELP = ("Comma-separated corruptions, or 'standard' (the 15 of mCE), or 'all' (default: all 19): "
                    "gaussian_noise shot_noise impulse_noise defocus_blur glass_blur motion_blur zoom_blur snow "
                    "frost fog brightness contrast elastic_transform pixelate jpeg_compression; extra: "
                    "speckle_noise gaussian_blur spatter saturate.")


def robustness(
    model: list[Path] = typer.Option(..., "--model", "-m", help=MODEL_HELP + " Repeat to compare models."),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set whose split is corrupted on the fly (default: the model's)."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder whose split is corrupted on the fly."),
    imagenet_c: Optional[Path] = typer.Option(None, "--imagenet-c", help="A prepared ImageNet-C folder: DIR/CORRUPTION/SEVERITY/SYNSET/*.JPEG."),
    tfds_corrupted: bool = typer.Option(False, "--tfds-corrupted", help="tensorflow-datasets' imagenet2012_corrupted configs prepared under the data dir."),
    split: str = typer.Option("test", "--split", help="Split corrupted on the fly."),
    corruptions: Optional[str] = typer.Option(None, "--corruptions", help=CORRUPTIONS_HELP),
    severities: Optional[str] = typer.Option(None, "--severities", help="Comma-separated severities 1-5 (default: all five)."),
    frost_dir: Optional[Path] = typer.Option(None, "--frost-dir", help="Folder with Hendrycks' frost pictures frost1.png .. frost5.jpg (frost on the fly needs them)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Eval image size (default: the model's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the model's, else the data set's)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images of each pass (a quick check; not comparable figures)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout instead of tables."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of error against severity, one panel per corruption, one line per model."),
) -> None:
    """Robustness to common corruptions (ImageNet-C): error per corruption and severity, CE, mCE, relative mCE.

    \b
    Sources (one): a data set's split corrupted on the fly (--dataset / --data, default the model's),
    a prepared ImageNet-C folder (--imagenet-c), or tfds' imagenet2012_corrupted (--tfds-corrupted).
    On the fly, each image gets the model's eval resize and crop, is rounded to 8 bits, then corrupted;
    the corruption is a pure function of (image, corruption, severity).
    \b
    Definitions (E = top-1 error, s = severity 1-5, E_clean = error on the clean split):
    - CE(c) = sum_s E(c,s) / sum_s E_AlexNet(c,s)  (ImageNet sources only)
    - relative CE(c) = sum_s (E(c,s) - E_clean) / sum_s (E_AlexNet(c,s) - E_AlexNet_clean)
    - mCE / relative mCE: mean over the 15 standard corruptions; the 4 extra ones apart; all 19 too
    - un-normalised mCE: mean over corruptions of the mean error over severities (any data set)
    """
    from finegrain.cli.console import err, start_tensorflow

    positive(batch_size, "--batch-size")
    positive(image_size, "--image-size")
    positive(limit, "--limit")
    if sum(x is not None and x is not False for x in (dataset, data, imagenet_c, tfds_corrupted or None)) > 1:
        raise UserError("give one source: --dataset, --data, --imagenet-c or --tfds-corrupted")
    if plot is not None and plot.suffix.lower() != ".png":
        raise UserError(f"--plot {plot}: give a .png file name")
    if plot is not None:  # fail before the long run, not after it
        if plot.is_dir():
            raise UserError(f"--plot {plot} is a directory: give a file name")
        try:
            plot.expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--plot {plot}: cannot create its folder ({e.strerror or e})") from None
    start_tensorflow()
    from finegrain.data.corruptions import check_available, parse_corruptions, parse_severities

    names = parse_corruptions(corruptions)
    levels = parse_severities(severities)
    models = [load_reference(m, arch, num_classes) for m in model]
    source = _source(models[0], dataset, data, imagenet_c, tfds_corrupted, split, frost_dir, data_dir).limited(limit)
    source.require(names, levels)
    if source.prepared_size is None:  # on the fly: every corruption runs once here, before the long run
        from finegrain.evaluate.robustness import geometry_groups

        sizes = {size for size, _ in geometry_groups(models, source, image_size, preprocessing)}
        for size in sorted(sizes):
            check_available(names, frost_dir=frost_dir, severities=levels, image_size=size)
    results = _run(models, source, names, levels, batch_size, image_size, preprocessing, not as_json)
    if source.skipped:
        from finegrain.data.folder import skipped_report

        err.print(skipped_report(source.skipped), highlight=False, soft_wrap=True, markup=False)
    if plot is not None:
        from finegrain.evaluate.robustness import plot_robustness

        plot_robustness(plot.expanduser(), results, title=f"top-1 error on {source.description} (dotted: clean)")
        err.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    if as_json:
        print_json({"source": source.description, "normalized": source.imagenet, "limit": limit,
                    "corruptions": names, "severities": levels, "models": [r.to_dict() for r in results]})
    else:
        _print(results, levels, source.imagenet)


def _source(loaded: Any, dataset: Optional[str], data: Optional[Path], imagenet_c: Optional[Path],
            tfds_corrupted: bool, split: str, frost_dir: Optional[Path], data_dir: Optional[Path]) -> Any:
    if imagenet_c is not None:
        from finegrain.data.imagenet_c import imagenet_c_folder

        return imagenet_c_folder(imagenet_c, data_dir=data_dir)
    if tfds_corrupted:
        from finegrain.data.imagenet_c import tfds_corrupted as tfds_source

        return tfds_source(data_dir=data_dir)
    from finegrain.data import load_split
    from finegrain.data.corruptions import on_the_fly

    name = images_source(dataset, data, loaded.card.dataset, others=", --imagenet-c DIR or --tfds-corrupted")
    return on_the_fly(load_split(name, split, data_dir=data_dir), frost_dir=frost_dir)


def _run(models: list[Any], source: Any, names: list[str], levels: list[int], batch_size: int,
         image_size: Optional[int], preprocessing: Optional[str], show_progress: bool) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from finegrain.cli.console import err
    from finegrain.evaluate.robustness import evaluate_robustness, total_images

    total = total_images(models, source, names, levels, image_size, preprocessing)
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not show_progress, transient=True) as bar:
        task = bar.add_task("robustness", total=total)
        return evaluate_robustness(models, source, corruptions=names, severities=levels, batch_size=batch_size,
                                   image_size=image_size, preprocessing=preprocessing,
                                   on_batch=lambda what, n: bar.update(task, advance=n, description=what))


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _print(results: list[Any], levels: list[int], normalized: bool) -> None:
    from rich.table import Table

    from finegrain.cli.console import out
    from finegrain.data.corruptions import STANDARD

    for r in results:
        out.print(f"robustness: {r.model} on {r.source}", soft_wrap=True, highlight=False)
        table = Table(title="top-1 error % by severity" + ("; CE and relative CE normalised by AlexNet" if normalized else ""),
                      title_justify="left")
        table.add_column("corruption", no_wrap=True)
        for s in levels:
            table.add_column(str(s), justify="right", no_wrap=True)
        table.add_column("mean", justify="right", no_wrap=True)
        if normalized:
            table.add_column("CE", justify="right", no_wrap=True)
            table.add_column("rel. CE", justify="right", no_wrap=True)
        for name, score in r.scores.items():
            row = [name if name in STANDARD else f"{name} (extra)"]
            row += [_percent(score.errors.get(s)) for s in levels] + [_percent(score.mean_error)]
            if normalized:
                row += [_percent(score.ce), _percent(score.relative_ce)]
            table.add_row(*row)
        out.print(table)
    out.print(_summary(results, normalized))
    if not all(r.complete for r in results):
        out.print("not every corruption and severity was evaluated: the means are over those that were, and not "
                  "comparable with published figures", highlight=False, soft_wrap=True)
    if normalized and any(r.clean_error is None for r in results):
        out.print("no clean error, so no relative mCE: ImageNet's validation split is not prepared under the data dir "
                  "(finegrain fetch imagenet)", highlight=False, soft_wrap=True)
    if not normalized:
        out.print("un-normalised: this is not ImageNet, so there is no AlexNet reference; the mCE figures are mean "
                  "top-1 errors over corruptions and severities", highlight=False, soft_wrap=True)


def _summary(results: list[Any], normalized: bool) -> Any:
    from rich.table import Table

    table = Table(title="summary, % (15 standard corruptions; extra: the other 4; all: the 19)", title_justify="left")
    table.add_column("figure", no_wrap=True)
    for r in results:
        table.add_column(r.model, justify="right", overflow="fold")
    rows = [("clean error", lambda r: r.clean_error)]
    if normalized:
        rows += [("mCE", lambda r: r.mce()), ("relative mCE", lambda r: r.relative_mce()),
                 ("mCE extra", lambda r: r.mce("extra")), ("mCE all 19", lambda r: r.mce("all"))]
    rows += [("un-normalised mCE", lambda r: r.unnormalized_mce()),
             ("un-normalised extra", lambda r: r.unnormalized_mce("extra")),
             ("un-normalised all 19", lambda r: r.unnormalized_mce("all"))]
    for label, value in rows:
        table.add_row(label, *[_percent(value(r)) for r in results])
    return table


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("robustness")(robustness)
