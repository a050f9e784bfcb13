"""CLI commands for finegrain.evaluate: `retrieval-eval` and `eval`.

No TensorFlow / faiss import at module level: they are imported inside the commands (--help stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from finegrain.cli.common import ARCH_HELP, MODEL_HELP, NUM_CLASSES_HELP, load_reference, positive, print_json
from finegrain.errors import UserError
from finegrain.models.card import REFERENCE_HELP

def _load_array(path: Path, what: str) -> Any:
    import numpy as np

    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic:
        raise UserError(f"cannot read {what} file {path}: empty or truncated .npy file")
    if magic != b"\x93NUMPY":  # else np.load would take it for a pickle
        raise UserError(f"cannot read {what} file {path}: not a .npy array (write it with numpy.save)")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        kind = "a pickled object array (refused: it could run code)" if "pickle" in str(e) else "not a .npy array"
        raise UserError(f"cannot read {what} file {path}: {kind}") from None
    except (OSError, EOFError):
        raise UserError(f"cannot read {what} file {path}: empty or truncated .npy file") from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise UserError(f"{what} file {path} must hold a real-valued numeric array, got {getattr(array, 'dtype', '?')}")
    return array


def _arrays(embeddings: Optional[Path], labels: Optional[Path]) -> tuple[Any, Any]:
    if embeddings is None or labels is None:
        raise UserError("--embeddings and --labels go together: give both .npy files")
    return _load_array(embeddings, "embeddings"), _load_array(labels, "labels")


def _load_split(loaded: Any, dataset: Optional[str], data: Optional[Path], split: Optional[str],
                data_dir: Optional[Path], default_split: str) -> Any:
    """The images to evaluate on: --dataset / --data, else the data set and split the model's run used."""
    from finegrain.data import load_split

    if dataset and data:
        raise UserError("give either --dataset NAME or --data FOLDER, not both")
    if data is not None and not data.is_dir():
        raise UserError(f"--data {data} is not a folder of class sub-folders")
    source = str(data) if data is not None else dataset or loaded.card.dataset
    if source is None:
        raise UserError("name the images to evaluate on: --dataset NAME (e.g. cub200) or --data FOLDER "
                        "(a run directory knows its own)")
    own = dataset is None and data is None
    return load_split(source, split or (loaded.card.eval_split if own and loaded.card.eval_split else default_split),
                      data_dir=data_dir)


def _outputs(loaded: Any, split_info: Any, key: str, image_size: Optional[int], preprocessing: Optional[str],
             batch_size: int, show_progress: bool) -> tuple[Any, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from finegrain.cli.console import err
    from finegrain.evaluate.inference import split_outputs

    if split_info.skipped:
        from finegrain.data.folder import skipped_report

        err.print(skipped_report(split_info.skipped), highlight=False, soft_wrap=True, markup=False)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, disable=not show_progress, transient=True) as bar:
        task = bar.add_task(f"{key} of {split_info.info.name}/{split_info.name}", total=split_info.num_examples)
        outputs, labels = split_outputs(loaded.forward, loaded.card, split_info, keys=(key,), image_size=image_size,
                                        preprocessing=preprocessing, batch_size=batch_size,
                                        on_batch=lambda n: bar.advance(task, n))
    return outputs[key], labels


def retrieval_eval(
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Precomputed [N, D] embeddings (.npy)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="[N] integer labels for --embeddings (.npy); -1 = distractor."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set: cub200, cars196, sop, synthetic, ... (default: the run's)."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder (one sub-folder per class) instead of --dataset."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to embed (default: the run's eval split, else retrieval_test)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    metric: str = typer.Option("cosine", "--metric", help="cosine (L2-normalised) or euclidean."),
    k: Optional[str] = typer.Option(None, "--k", help="Recall@K list, e.g. 1,2,4,8 (default: the data set's; SOP 1,10,100,1000)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass when embedding."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Eval image size (default: the model's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the model's, else the data set's)."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings", help="Also write the embeddings (.npy) and labels (<name>.labels.npy)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout instead of a table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG grid of sample queries and their top results (needs images: a data set source)."),
) -> None:
    """Retrieval evaluation: Recall@K, MAP@R and R-precision with exact FAISS search.

    \b
    Sources: --embeddings X.npy --labels y.npy (from any model), or --model (a run uses its own data set; or --dataset/--data): embeddings of the split under the eval preprocessing, L2-normalised.
    \b
    Definitions:
    - query set = gallery = the split; labels -1 mark gallery-only distractors (never queries).
    - each query is removed from its own results by identity (its index), not by dropping rank 1, so exact duplicates of the query still count as neighbours.
    - ties in similarity are broken by lower gallery index, also at the K boundary.
    - similarity: cosine = dot product of L2-normalised embeddings; euclidean = -squared L2.
    - Recall@K: share of queries with at least one same-class item among their K nearest.
    - R = number of other gallery items of the query's class.
    - R-precision: same-class items among the R nearest / R.
    - MAP@R: (1/R) * sum over i=1..R of P(i) * rel(i), P(i) = same-class share of the i nearest (Musgrave et al. 2020).
    - queries whose class has no other item are counted, reported and skipped.
    - search depth = max(max K, largest class size - 1), capped at gallery size - 1.
    """
    from finegrain.cli.console import err, start_tensorflow
    from finegrain.data.catalog import DEFAULT_RECALL_KS
    from finegrain.evaluate import metrics as m

    positive(batch_size, "--batch-size")
    positive(image_size, "--image-size")
    ks = m.parse_ks(k) if k else None
    if save_embeddings is not None:
        _check_writable(save_embeddings, "--save-embeddings")
    if embeddings is not None or labels is not None:
        if model is not None or dataset or data:
            raise UserError("give either --embeddings/--labels or --model with a data set, not both")
        if plot is not None:
            raise UserError("--plot shows images, which raw --embeddings do not have: use --model with --dataset/--data")
        x, y = _arrays(embeddings, labels)
        split_info, source_desc, ks = None, f"embeddings {embeddings}", ks or list(DEFAULT_RECALL_KS)
    else:
        if model is None:
            raise UserError(f"give --model ({REFERENCE_HELP}) or --embeddings with --labels")
        start_tensorflow()
        loaded = load_reference(model, arch, num_classes)
        split_info = _load_split(loaded, dataset, data, split, data_dir, "retrieval_test")
        x, y = _outputs(loaded, split_info, "embedding", image_size, preprocessing, batch_size, not as_json)
        source_desc = f"{loaded.description} on {split_info.info.name}/{split_info.name}"
        ks = ks or list(split_info.info.recall_ks)
        if save_embeddings is not None:
            _save_embeddings(save_embeddings, x, y)
    if x.ndim != 2:
        raise UserError(f"embeddings must be an [N, D] array, got shape {list(x.shape)}")
    knn = m.retrieval_search(x, y, ks, metric=metric)
    report = m.retrieval_metrics(knn, y, ks)
    if report.num_evaluated == 0:
        raise UserError(f"no query can be scored: {report.num_lone} lone and {report.num_distractors} distractor "
                        "items; every query needs another item of its class")

    if plot is not None and split_info is not None:
        from finegrain.evaluate.plot import plot_retrieval, read_images, sample_queries

        rows = sample_queries(knn, y, 8)
        top = min(8, knn.k)
        wanted = {int(i) for r in rows for i in (knn.query_ids[r], *knn.indices[r, :top])}
        plot_retrieval(plot, knn, y, read_images(split_info.dataset, wanted), rows, top=top, title=source_desc,
                       class_names=split_info.class_names)
        err.print(f"wrote {plot}", highlight=False, soft_wrap=True)

    if as_json:
        print_json({"source": source_desc, **report.to_dict()})
    else:
        _print_retrieval(report, source_desc)


def _print_retrieval(report: Any, source_desc: str) -> None:
    from rich.table import Table

    from finegrain.cli.console import out

    out.print(f"retrieval: {source_desc}", soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    for kk, v in report.recall_at_k.items():
        table.add_row(f"Recall@{kk}", f"{100 * v:.2f}")
    table.add_row("MAP@R", f"{100 * report.map_at_r:.2f}")
    table.add_row("R-precision", f"{100 * report.r_precision:.2f}")
    out.print(table)
    out.print(
        f"gallery {report.num_gallery:,} ({report.num_classes:,} classes, {report.num_distractors:,} distractors); "
        f"queries evaluated {report.num_evaluated:,}, lone queries skipped {report.num_lone:,}; "
        f"{report.metric}, search depth {report.k_searched}. Definitions: finegrain retrieval-eval --help",
        highlight=False,
        soft_wrap=True,
    )

def _check_writable(path: Path, option: str) -> None:
    """Fail before the work, not after it: the folder of an output file must exist or be creatable."""
    try:
        path.expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {path}: cannot create its folder ({e.strerror or e})") from None
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory: give a file name")


def _save_embeddings(path: Path, x: Any, y: Any) -> None:
    import numpy as np

    from finegrain.utils.io import atomic_path

    with atomic_path(path) as tmp:
        np.save(tmp, x)
    with atomic_path(path.with_suffix(".labels.npy")) as tmp:
        np.save(tmp, y)


def eval_classification(
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set name (default: the run's)."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder instead of --dataset."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to evaluate (default: the run's eval split, else test)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    batch_size: int = typer.Option(64, "--batch-size"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Eval image size (default: the model's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the model's, else the data set's)."),
    confusions: int = typer.Option(10, "--confusions", help="How many most-confused class pairs to list."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout instead of tables."),
) -> None:
    """Classification evaluation: top-1/top-5 accuracy, ECE, per-class accuracy, confusions.

    \b
    - top-k: share of images whose true class is among the k most probable.
    - ECE: 15 equal-width bins over the max softmax probability;
      sum over bins of |accuracy - mean confidence| * share of images in the bin.
    - per-class accuracy: correct / images of the class.
    - confusions: (true, predicted) pairs with the most errors.
    """
    from finegrain.cli.console import start_tensorflow

    positive(batch_size, "--batch-size")
    positive(image_size, "--image-size")
    positive(confusions, "--confusions", allow_zero=True)
    start_tensorflow()
    from finegrain.evaluate.classify import aligned_labels, classification_metrics, softmax

    loaded = load_reference(model, arch, num_classes)
    split_info = _load_split(loaded, dataset, data, split, data_dir, "test")
    logits, y = _outputs(loaded, split_info, "logits", image_size, preprocessing, batch_size, not as_json)
    where = f"{split_info.info.name}/{split_info.name}"
    offset = loaded.card.label_offset
    y = aligned_labels(logits.shape[1], y, split_info.num_classes, offset, where)
    names = ["background"] * offset + list(split_info.class_names)  # in logit order
    report = classification_metrics(softmax(loaded.card.logit_scale * logits), y, num_confusions=confusions)
    source_desc = f"{loaded.description} on {where}" + (f" (labels scored at logit index + {offset})" if offset else "")
    if as_json:
        print_json({"source": source_desc, "label_offset": offset, **report.to_dict(class_names=names)})
    else:
        _print_classification(report, names, source_desc)


def _print_classification(report: Any, names: list[str], source_desc: str) -> None:
    from rich.table import Table

    from finegrain.cli.console import out

    out.print(f"classification: {source_desc}", soft_wrap=True, highlight=False)
    summary = Table()
    summary.add_column("metric", no_wrap=True)
    summary.add_column("value", justify="right", no_wrap=True)
    summary.add_row("top-1 accuracy", f"{100 * report.top1:.2f}")
    summary.add_row("top-5 accuracy", f"{100 * report.top5:.2f}")
    summary.add_row("ECE (15 bins)", f"{100 * report.ece:.2f}")
    summary.add_row("images", f"{report.num_examples:,}")
    out.print(summary)
    per_class = Table(title="lowest per-class accuracy", title_justify="left")
    per_class.add_column("class", overflow="fold")
    per_class.add_column("accuracy", justify="right", no_wrap=True)
    scored = sorted((a, i) for i, a in enumerate(report.per_class_accuracy) if a == a)  # skip NaN
    for a, i in scored[:10]:
        per_class.add_row(names[i], f"{100 * a:.1f}")
    out.print(per_class)
    if report.confusions:
        pairs = Table(title="most-confused pairs", title_justify="left")
        for col in ("true", "predicted", "count"):
            pairs.add_column(col, justify="right" if col == "count" else "left", overflow="fold")
        for c in report.confusions:
            pairs.add_row(names[c.true_class], names[c.predicted_class], str(c.count))
        out.print(pairs)

def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("retrieval-eval")(retrieval_eval)
    app.command("eval")(eval_classification)
