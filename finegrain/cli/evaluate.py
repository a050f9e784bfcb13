"""CLI commands for finegrain.evaluate: `retrieval-eval`, `eval` and `predict`.

No TensorFlow / faiss import at module level: they are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from finegrain.errors import UserError

DEFAULT_KS = "1,2,4,8"


def _load_array(path: Path, what: str) -> Any:
    import numpy as np

    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {what} file {path} as a .npy array: {str(e).splitlines()[0]}") from None


def _load_split(dataset: Optional[str], data: Optional[Path], split: str, data_dir: Optional[Path]) -> Any:
    from finegrain.data import load_split

    if dataset and data:
        raise UserError("give either --dataset NAME or --data FOLDER, not both")
    if data is not None and not data.is_dir():
        raise UserError(f"--data {data} is not a folder of class sub-folders")
    source = str(data) if data is not None else dataset
    if source is None:
        raise UserError("name the images to evaluate on: --dataset NAME (e.g. cub200) or --data FOLDER")
    return load_split(source, split, data_dir=data_dir)


def _model_source(model: Optional[Path], arch: Optional[str], num_classes: int) -> Any:
    from finegrain.evaluate.embed import load_model_source

    if model is None:
        raise UserError("give --model (a run directory, SavedModel, or weights file with --arch)")
    return load_model_source(model, arch=arch, num_classes=num_classes)


def _print_json(obj: Any) -> None:
    import sys

    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def retrieval_eval(
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Precomputed [N, D] embeddings (.npy)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="[N] integer labels for --embeddings (.npy); -1 = distractor."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Run directory, SavedModel directory, or weights file / TF1 checkpoint (with --arch)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a weights file / TF1 checkpoint (see `finegrain models`)."),
    num_classes: int = typer.Option(1001, "--num-classes", help="Classifier size of a weights file (1001 for official checkpoints)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set: cub200, cars196, sop, synthetic, ..."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder (one sub-folder per class) instead of --dataset."),
    split: str = typer.Option("retrieval_test", "--split", help="Split to embed (zero-shot test split by default)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    metric: str = typer.Option("cosine", "--metric", help="cosine (L2-normalised) or euclidean."),
    k: Optional[str] = typer.Option(None, "--k", help="Recall@K list, e.g. 1,2,4,8 (default: the data set's; SOP 1,10,100,1000)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass when embedding."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Training image size (default: the run's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the run's, else the data set's)."),
    save_embeddings: Optional[Path] = typer.Option(None, "--save-embeddings", help="Also write the embeddings (.npy) and labels (<name>.labels.npy)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout instead of a table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG grid of sample queries and their top results (needs images: a data set source)."),
) -> None:
    """Retrieval evaluation: Recall@K, MAP@R and R-precision with exact FAISS search.

    \b
    Sources: --embeddings X.npy --labels y.npy (from any model), or --model plus --dataset/--data (embeddings of the split under the eval preprocessing, L2-normalised).
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
    import numpy as np

    from finegrain.cli.console import err, out, start_tensorflow
    from finegrain.evaluate import metrics as m

    if embeddings is not None or labels is not None:
        if embeddings is None or labels is None:
            raise UserError("--embeddings and --labels go together: give both .npy files")
        if model is not None or dataset or data:
            raise UserError("give either --embeddings/--labels or --model with a data set, not both")
        if plot is not None:
            raise UserError("--plot shows images, which raw --embeddings do not have: use --model with --dataset/--data")
        x, y = _load_array(embeddings, "embeddings"), _load_array(labels, "labels")
        split_info, source_desc, default_ks = None, f"embeddings {embeddings}", DEFAULT_KS
    else:
        start_tensorflow()
        split_info = _load_split(dataset, data, split, data_dir)
        source = _model_source(model, arch, num_classes)
        from finegrain.evaluate.embed import split_outputs

        outputs, y = split_outputs(source, split_info, keys=("embedding",), image_size=image_size,
                                   preprocessing=preprocessing, batch_size=batch_size, progress=not as_json)
        x = outputs["embedding"]
        source_desc = f"{source.description} on {split_info.info.name}/{split_info.name}"
        default_ks = ",".join(map(str, split_info.info.recall_ks))
        if save_embeddings is not None:
            from finegrain.utils.io import atomic_path

            with atomic_path(save_embeddings) as tmp:
                np.save(tmp, x)
            with atomic_path(save_embeddings.with_suffix(".labels.npy")) as tmp:
                np.save(tmp, y)
    ks = m.parse_ks(k or default_ks)
    if np.ndim(x) == 2 and np.ndim(y) == 1 and len(x) != len(y):
        raise UserError(f"embeddings have {len(x)} rows but labels have {len(y)}: they must match one to one")
    knn = m.retrieval_search(x, y, ks, metric=metric)
    report = m.retrieval_metrics(knn, y, ks)

    if plot is not None and split_info is not None:
        from finegrain.evaluate.plot import plot_retrieval, read_images, sample_queries

        rows = sample_queries(knn, y, 8)
        top = min(8, knn.k)
        wanted = {int(i) for r in rows for i in (knn.query_ids[r], *knn.indices[r, :top])}
        plot_retrieval(plot, knn, y, read_images(split_info.dataset, wanted), rows, top=top, title=source_desc,
                       class_names=split_info.class_names)
        err.print(f"wrote {plot}")

    if as_json:
        _print_json({"source": source_desc, **report.to_dict()})
        return
    from rich.table import Table

    out.print(f"retrieval: {source_desc}", soft_wrap=True, highlight=False)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
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


def eval_classification(
    model: Path = typer.Option(..., "--model", "-m", help="Run directory, SavedModel directory, or weights file (with --arch)."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a weights file / TF1 checkpoint."),
    num_classes: int = typer.Option(1001, "--num-classes", help="Classifier size of a weights file."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set name."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder instead of --dataset."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    batch_size: int = typer.Option(64, "--batch-size"),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Training image size (default: the run's, else 224)."),
    preprocessing: Optional[str] = typer.Option(None, "--preprocessing", help="Eval preprocessing (default: the run's, else the data set's)."),
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
    from finegrain.cli.console import out, start_tensorflow

    start_tensorflow()
    from finegrain.evaluate.classify import classification_metrics, softmax
    from finegrain.evaluate.embed import split_outputs

    split_info = _load_split(dataset, data, split, data_dir)
    source = _model_source(model, arch, num_classes)
    outputs, y = split_outputs(source, split_info, keys=("logits",), image_size=image_size,
                               preprocessing=preprocessing, batch_size=batch_size, progress=not as_json)
    logits = outputs["logits"]
    if logits.shape[1] != split_info.num_classes:
        raise UserError(
            f"the model has {logits.shape[1]} classes but {split_info.info.name}/{split} has {split_info.num_classes}: "
            "evaluate a model fine-tuned on this data set"
        )
    report = classification_metrics(softmax(source.logit_scale * logits), y, num_confusions=confusions)
    names = split_info.class_names
    if as_json:
        _print_json({"source": f"{source.description} on {split_info.info.name}/{split}",
                     **report.to_dict(class_names=names)})
        return
    from rich.table import Table

    out.print(f"classification: {source.description} on {split_info.info.name}/{split}", soft_wrap=True, highlight=False)
    summary = Table()
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    summary.add_row("top-1 accuracy", f"{100 * report.top1:.2f}")
    summary.add_row("top-5 accuracy", f"{100 * report.top5:.2f}")
    summary.add_row("ECE (15 bins)", f"{100 * report.ece:.2f}")
    summary.add_row("images", f"{report.num_examples:,}")
    out.print(summary)
    per_class = Table(title="lowest per-class accuracy", title_justify="left")
    per_class.add_column("class")
    per_class.add_column("accuracy", justify="right")
    scored = sorted((a, i) for i, a in enumerate(report.per_class_accuracy) if a == a)  # skip NaN
    for a, i in scored[:10]:
        per_class.add_row(names[i], f"{100 * a:.1f}")
    out.print(per_class)
    if report.confusions:
        pairs = Table(title="most-confused pairs", title_justify="left")
        for col in ("true", "predicted", "count"):
            pairs.add_column(col, justify="right" if col == "count" else "left")
        for c in report.confusions:
            pairs.add_row(names[c.true_class], names[c.predicted_class], str(c.count))
        out.print(pairs)


def predict(
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    model: Path = typer.Option(..., "--model", "-m", help="A finegrain run directory."),
    top: int = typer.Option(5, "--top", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout."),
) -> None:
    """Top classes with probabilities for each image.

    A missing or unreadable image gets one line on stderr; the others are still predicted
    (exit code 1 if any image failed).
    """
    import numpy as np

    from finegrain.cli.console import err, out, start_tensorflow

    start_tensorflow()
    from finegrain.evaluate.classify import softmax, top_k_indices
    from finegrain.evaluate.embed import load_model_source

    source = load_model_source(model)
    if source.class_names is None:
        raise UserError(f"{model} is not a finegrain run directory: predict needs its class names")
    import tensorflow as tf

    from finegrain.data.preprocessing import eval_image

    size, pre = source.image_size or 224, source.preprocessing or "imagenet"
    results, failed = [], 0
    for path in images:
        try:
            encoded = tf.constant(path.read_bytes())
            image = eval_image(encoded, image_size=size, preprocessing=pre)
        except OSError as e:
            err.print(f"[red]skipped[/] {path}: cannot read ({e.strerror or e})", highlight=False, soft_wrap=True)
            failed += 1
            continue
        except (tf.errors.InvalidArgumentError, ValueError):
            err.print(f"[red]skipped[/] {path}: not a decodable image (JPEG, PNG, BMP or GIF)", highlight=False, soft_wrap=True)
            failed += 1
            continue
        logits = np.asarray(source.predict(image[None], ("logits",))["logits"])
        probs = softmax(source.logit_scale * logits)[0]
        best = top_k_indices(probs[None], top)[0]
        results.append({"image": str(path), "top": [{"class": source.class_names[i], "probability": float(probs[i])} for i in best]})
    if as_json:
        _print_json(results)
    else:
        for r in results:
            out.print(f"[bold]{r['image']}[/]", highlight=False)
            for rank, t in enumerate(r["top"], start=1):
                out.print(f"  {rank}. {t['class']:<30} {100 * t['probability']:6.2f}%", highlight=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("retrieval-eval")(retrieval_eval)
    app.command("eval")(eval_classification)
    app.command("predict")(predict)
