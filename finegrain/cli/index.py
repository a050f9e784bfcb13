"""`finegrain index build | add | info` and `finegrain search`: a gallery embedded once, searched with photos.

No TensorFlow / faiss import at module level (--help stays fast).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer

from finegrain.cli.common import ARCH_HELP, MODEL_HELP, NUM_CLASSES_HELP, load_reference, positive, print_json
from finegrain.errors import UserError

index_app = typer.Typer(help="Build, extend and describe an index of gallery images for `finegrain search`.",
                        no_args_is_help=True)

SOURCE_HELP = ("An image folder (one sub-folder per class; every image), or a catalog data set DATASET[:SPLIT] "
               "(default split retrieval_test).")
TYPE_HELP = "Index type: flat (exact, default), fp16 (exact, half the memory), ivf or hnsw (approximate)."
TTA_HELP = "Test-time augmentation: none, or flip (mean of the image's and its mirror's embeddings)."
CHUNK_HELP = "Images per chunk file: a killed build continues after the last complete chunk."


def parse_source(text: str, default_split: str) -> tuple[str, str]:
    """'FOLDER' -> (folder, 'all'); 'DATASET' -> (name, default_split); 'DATASET:SPLIT' -> (name, split)."""
    from finegrain.data import CATALOG

    path = Path(text).expanduser()
    if path.is_dir():
        return str(path), "all"
    name, _, split = text.partition(":")
    if name in CATALOG:
        return name, split or default_split
    raise UserError(f"{text} is neither an image folder nor a catalog data set (DATASET[:SPLIT], see "
                    "`finegrain datasets`)")


def load_source(text: str, data_dir: Optional[Path], default_split: str = "retrieval_test") -> tuple[Any, str]:
    """(Split, source name) of a --data / --query / --gallery value; skipped files reported on stderr."""
    from finegrain.cli.console import err
    from finegrain.data import load_split
    from finegrain.data.folder import skipped_report

    source, split = parse_source(text, default_split)
    loaded = load_split(source, split, data_dir=data_dir)
    if loaded.skipped:
        err.print(skipped_report(loaded.skipped), highlight=False, soft_wrap=True, markup=False)
    return loaded, source


@contextmanager
def progress_bar(description: str, show: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A stderr progress bar driven by update(done, total)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from finegrain.cli.console import err

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not show, transient=True) as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _default_export(model: Path) -> Optional[Path]:
    """A run directory's own SavedModel export, if it has one."""
    from finegrain.train.rundir import EXPORT

    candidate = Path(model).expanduser() / EXPORT
    return candidate if (candidate / "saved_model.pb").is_file() else None


@index_app.command("build")
def build(
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    data: str = typer.Option(..., "--data", help=SOURCE_HELP),
    out: Path = typer.Option(..., "--out", help="The index directory to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing index (and discard a partial build)."),
    index_type: str = typer.Option("flat", "--type", help=TYPE_HELP),
    tta: str = typer.Option("none", "--tta", help=TTA_HELP),
    export: Optional[Path] = typer.Option(None, "--export", help="SavedModel export whose embeddings must equal the index's (default: a run directory's export/)."),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Eval image size (default: the model's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the model's, else the data set's)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help=CHUNK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the index card as JSON."),
) -> None:
    """Embed every image of --data with the model's eval preprocessing and write a searchable index.

    \b
    The directory holds the FAISS index, each item's identity (file path) and label, and a protocol
    card (model reference and weights hash, image size, preprocessing, TTA, similarity, gallery
    identity). An approximate --type prints its Recall@10 against exact search on a sample.
    With a SavedModel export (a run directory's export/, or --export), the first images' embeddings
    are checked against the export's (parity). A killed build, run again, continues.
    """
    from finegrain.cli.console import err, start_tensorflow

    for value, option in ((batch_size, "--batch-size"), (chunk_size, "--chunk-size"), (image_size, "--image-size")):
        positive(value, option)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    start_tensorflow()
    from finegrain.evaluate.index import build_index, settings_for
    from finegrain.evaluate.index_faiss import check_type

    check_type(index_type)
    loaded = load_reference(model, arch, num_classes)
    split, source = load_source(data, data_dir)
    settings = settings_for(loaded, split, image_size, preprocessing, tta)
    reference = _absolute_reference(model)
    if export is None and not reference.startswith("official"):
        export = _default_export(Path(reference))
    with progress_bar(f"embedding {split.info.name}/{split.name}", not as_json) as update:
        card = build_index(out, loaded, reference, split, source, index_type=index_type, settings=settings,
                           export=export, force=force, batch_size=batch_size, chunk_size=chunk_size, progress=update)
    if as_json:
        print_json(card)
        return
    err.print(f"wrote {out}", highlight=False, soft_wrap=True)
    _print_card(card)


def _absolute_reference(model: Path) -> str:
    """The reference as the index stores it: official:ARCH as is, a path made absolute."""
    text = str(model)
    return text if text == "official" or text.startswith("official:") else str(Path(text).expanduser().resolve())


@index_app.command("add")
def add(
    directory: Path = typer.Argument(..., help="An index directory (from `finegrain index build`)."),
    data: str = typer.Option(..., "--data", help=SOURCE_HELP),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The index's model, if it has moved since the build (its weights must be the same)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help=CHUNK_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the new index card as JSON."),
) -> None:
    """Append the images of --data that the index does not hold yet, embedded as the index's were."""
    from finegrain.cli.console import err, start_tensorflow

    positive(batch_size, "--batch-size")
    positive(chunk_size, "--chunk-size")
    start_tensorflow()
    from finegrain.evaluate.index import add_to_index, load_index_model
    from finegrain.evaluate.index_store import read_index

    loaded = load_index_model(read_index(directory), model)
    split, source = load_source(data, data_dir)
    with progress_bar(f"embedding {split.info.name}/{split.name}", not as_json) as update:
        card, added, skipped = add_to_index(directory, loaded, split, source, batch_size=batch_size,
                                            chunk_size=chunk_size, progress=update)
    if as_json:
        print_json({"images_added": added, "images_skipped": skipped, **card})
        return
    err.print(f"added {added:,} image(s) to {directory}" + (f"; {skipped:,} already indexed, skipped" if skipped else ""),
              highlight=False, soft_wrap=True)
    _print_card(card)


@index_app.command("info")
def info(
    directory: Path = typer.Argument(..., help="An index directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the index card as JSON."),
) -> None:
    """Describe an index: its model, how images were embedded, its type and size, its gallery."""
    from finegrain.evaluate.index_store import CARD_FILE, is_index

    if not is_index(directory):
        raise UserError(f"{directory} is not an index: build one with `finegrain index build`")
    import json

    try:
        card = json.loads((Path(directory) / CARD_FILE).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise UserError(f"the card of the index {directory} is damaged: build it again") from None
    if as_json:
        print_json(card)
    else:
        _print_card(card)


def _print_card(card: dict[str, Any]) -> None:
    from rich.table import Table

    from finegrain.cli.console import out

    index, model, gallery = card["index"], card["model"], card["gallery"]
    table = Table(title="index", title_justify="left", show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    recall = index.get("recall_at_10_vs_exact")
    parity = card.get("parity", {})
    rows = [
        ("items", f"{index['count']:,} ({gallery['source']}, split {gallery['split']})"),
        ("type", f"{index['type']} (FAISS {index['faiss_factory']}{', ' + index['search_parameters'] if index['search_parameters'] else ''})"),
        ("Recall@10 vs exact", "exact search" if recall is None else f"{100 * recall:.2f}"),
        ("embedding", f"{index['dim']}-d, cosine; {card['embedding']['image_size']} px, "
                      f"{card['embedding']['preprocessing']} preprocessing, TTA {card['embedding']['tta']}"),
        ("model", f"{model['reference']} ({model['arch']}, {model['pooling']} pooling)"),
        ("weights sha256", model["weights_sha256"]),
        ("gallery sha256", gallery["items_sha256"]),
        ("parity", parity.get("note") or f"export {parity['export']}: min cosine {parity['min_cosine']:.6f} "
                   f"over {parity['images']} images"),
        ("added", ", ".join(f"{a['count']:,} from {a['source']}" for a in card.get("added", [])) or "-"),
        ("finegrain", card["finegrain_version"]),
    ]
    for field, value in rows:
        table.add_row(field, value)
    out.print(table)


def search(
    images: list[Path] = typer.Argument(..., help="Query photos."),
    index_dir: Path = typer.Option(..., "--index", help="An index directory (from `finegrain index build`)."),
    k: int = typer.Option(10, "--k", help="Results per query."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The index's model, if it has moved since the build."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG: each query with its results."),
) -> None:
    """The nearest gallery items (path, label, cosine similarity) of each query photo.

    Queries are embedded with the index's model, image size, preprocessing and TTA. A missing or
    unreadable image gets one line on stderr; the others are still searched (exit code 1 if any failed).
    """
    from finegrain.cli.console import err, out, start_tensorflow

    positive(k, "--k")
    positive(batch_size, "--batch-size")
    start_tensorflow()
    from finegrain.evaluate.index import load_index_model, search_index, stored_settings
    from finegrain.evaluate.index_store import read_index
    from finegrain.evaluate.inference import embed_files

    stored = read_index(index_dir)
    loaded = load_index_model(stored, model)
    s = stored_settings(stored)
    vectors, kept, failed = embed_files(loaded.forward, images, image_size=s.image_size,
                                        preprocessing=s.preprocessing, tta=s.tta, batch_size=batch_size)
    for position, reason in failed:
        err.print(f"[red]skipped[/] {images[position]}: {reason}", highlight=False, soft_wrap=True)
    results = []
    if kept:
        scores, rows = search_index(stored, vectors, k)
        for position, score_row, id_row in zip(kept, scores, rows):
            found = [{"rank": rank, "item": stored.ids[r], "label": int(stored.labels[r]),
                      "class": _class_name(stored.class_names, stored.labels[r]), "score": float(sc)}
                     for rank, (sc, r) in enumerate(zip(score_row, id_row), start=1) if r >= 0]
            results.append({"query": str(images[position]), "results": found})
    if plot is not None and results:
        from finegrain.evaluate.plot import plot_search

        plot_search(plot, results, title=f"index {index_dir}")
        err.print(f"wrote {plot}", highlight=False, soft_wrap=True)
    if as_json:
        print_json(results)
    else:
        for result in results:
            out.print(f"[bold]{result['query']}[/]", highlight=False, soft_wrap=True)
            for r in result["results"]:
                out.print(f"  {r['rank']:>3}. {r['score']:.4f}  {r['class']:<24} {r['item']}", highlight=False,
                          soft_wrap=True, markup=False)
    if failed:
        raise typer.Exit(1)


def _class_name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search")(search)
