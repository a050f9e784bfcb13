"""CLI commands for finegrain.evaluate: `retrieval-eval` and `eval`.

No TensorFlow / faiss import at module level: they are imported inside the commands (--help stays fast).
"""

from __future__ import annotations

import dataclasses
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

    source = images_source(dataset, data, loaded.card.dataset)
    own = dataset is None and data is None
    return load_split(source, split or (loaded.card.eval_split if own and loaded.card.eval_split else default_split),
                      data_dir=data_dir)


def _outputs(loaded: Any, split_info: Any, key: str, image_size: Optional[int], preprocessing: Optional[str],
             batch_size: int, show_progress: bool, tta: Optional[str] = None) -> tuple[Any, Any]:
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
                                        on_batch=lambda n: bar.advance(task, n), tta=tta)
    return outputs[key], labels


SET_HELP = "an image folder, DATASET[:SPLIT], or X.npy embeddings with X.labels.npy beside it."


def retrieval_eval(
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Precomputed [N, D] embeddings (.npy)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="[N] integer labels for --embeddings (.npy); -1 = distractor."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Catalog data set: cub200, cars196, sop, synthetic, ... (default: the run's)."),
    data: Optional[Path] = typer.Option(None, "--data", help="An image folder (one sub-folder per class) instead of --dataset."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to embed (default: the run's eval split, else retrieval_test)."),
    query: Optional[str] = typer.Option(None, "--query", help=f"A separate query set: {SET_HELP}"),
    gallery: Optional[str] = typer.Option(None, "--gallery", help=f"The gallery searched by --query: {SET_HELP}"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where prepared data sets live."),
    metric: str = typer.Option("cosine", "--metric", help="cosine (L2-normalised) or euclidean."),
    k: Optional[str] = typer.Option(None, "--k", help="Recall@K list, e.g. 1,2,4,8 (default: the data set's; SOP 1,10,100,1000)."),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none, or flip (mean of the image's and its mirror's embeddings, then L2-normalised)."),
    rerank: str = typer.Option("none", "--rerank", help="Re-ranking: none, qe (query expansion), dba+qe (with database-side augmentation) or kreciprocal (k-reciprocal encoding, Zhong et al. 2017)."),
    rerank_k: int = typer.Option(5, "--rerank-k", help="Neighbours averaged by --rerank."),
    per_class: bool = typer.Option(False, "--per-class", help="Recall@K and MAP@R of each class: the worst in a table, all in --json."),
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
    Separate query and gallery sets: --query SRC --gallery SRC (folders, DATASET[:SPLIT], or X.npy with X.labels.npy beside it).
    \b
    Definitions:
    - query set = gallery = the split; labels -1 mark gallery-only distractors (never queries).
    - each query is removed from its own results by identity (its index), not by dropping rank 1, so exact duplicates of the query still count as neighbours.
    - with --query/--gallery, a query that is also a gallery image (same file) is removed from its own results and from its R.
    - ties in similarity are broken by lower gallery index, also at the K boundary.
    - similarity: cosine = dot product of L2-normalised embeddings; euclidean = -squared L2.
    - Recall@K: share of queries with at least one same-class item among their K nearest.
    - R = number of other gallery items of the query's class.
    - R-precision: same-class items among the R nearest / R.
    - MAP@R: (1/R) * sum over i=1..R of P(i) * rel(i), P(i) = same-class share of the i nearest (Musgrave et al. 2020).
    - queries whose class has no other item are counted, reported and skipped.
    - search depth = max(max K, largest class size - 1), capped at gallery size - 1.
    - --json carries a protocol card: model and weights hash, embedding settings, TTA, re-ranking, K list, query and gallery identity (source, split, count, SHA-256 of the item list).
    """
    from finegrain.cli.console import err
    from finegrain.data.catalog import DEFAULT_RECALL_KS
    from finegrain.evaluate import metrics as m

    positive(batch_size, "--batch-size")
    positive(image_size, "--image-size")
    positive(rerank_k, "--rerank-k")
    ks = m.parse_ks(k) if k else None
    if save_embeddings is not None:
        _check_writable(save_embeddings, "--save-embeddings")
    from finegrain.evaluate.rerank import check_method

    if check_method(rerank) != "none" and metric != "cosine":
        raise UserError("--rerank averages L2-normalised embeddings: use it with --metric cosine")
    options = RetrievalOptions(model, arch, num_classes, data_dir, image_size, preprocessing, batch_size, tta,
                               not as_json)
    if query is not None or gallery is not None:
        if query is None or gallery is None:
            raise UserError("--query and --gallery go together: give both (the same source twice for query = gallery)")
        if embeddings is not None or labels is not None or dataset or data or split:
            raise UserError("give either --query/--gallery or --embeddings/--dataset/--data, not both")
        if plot is not None or save_embeddings is not None:
            raise UserError("--plot and --save-embeddings work with one set (--dataset/--data), not --query/--gallery")
        _separate_eval(options, query, gallery, ks, metric, rerank, rerank_k, per_class, as_json)
        return
    from finegrain.evaluate.protocol import array_items, model_identity, split_items

    model_card = None
    if embeddings is not None or labels is not None:
        if model is not None or dataset or data:
            raise UserError("give either --embeddings/--labels or --model with a data set, not both")
        if plot is not None:
            raise UserError("--plot shows images, which raw --embeddings do not have: use --model with --dataset/--data")
        x, y = _arrays(embeddings, labels)
        split_info, source_desc, ks = None, f"embeddings {embeddings}", ks or list(DEFAULT_RECALL_KS)
        items = array_items(embeddings, y) if x.ndim == 2 and len(x) == len(y) else None
        settings = (None, None)
    else:
        if model is None:
            raise UserError(f"give --model ({REFERENCE_HELP}) or --embeddings with --labels")
        loaded = options.load()
        split_info = _load_split(loaded, dataset, data, split, data_dir, "retrieval_test")
        x, y = options.embed(loaded, split_info)
        source_desc = f"{loaded.description} on {split_info.info.name}/{split_info.name}"
        ks = ks or list(split_info.info.recall_ks)
        if save_embeddings is not None:
            _save_embeddings(save_embeddings, x, y)
        items = split_items(split_info, str(data) if data is not None else split_info.info.name)
        items = dataclasses.replace(items, labels=y)
        model_card = model_identity(model, loaded.card)
        settings = options.settings(loaded, split_info)
    if x.ndim != 2:
        raise UserError(f"embeddings must be an [N, D] array, got shape {list(x.shape)}")
    queries = None
    if rerank != "none":
        import numpy as np

        from finegrain.evaluate.rerank import rerank_vectors

        queries, x = rerank_vectors(x, x, np.arange(len(x)), rerank, k=rerank_k)
    knn = m.retrieval_search(x, y, ks, metric=metric, queries=queries)
    if rerank == "kreciprocal":
        from finegrain.evaluate.rerank import k_reciprocal

        knn = k_reciprocal(knn, x)
    report = m.retrieval_metrics(knn, y, ks, per_class=per_class)
    _check_scored(report)

    if plot is not None and split_info is not None:
        from finegrain.evaluate.plot import plot_retrieval, read_images, sample_queries

        rows = sample_queries(knn, y, 8)
        top = min(8, knn.k)
        wanted = {int(i) for r in rows for i in (knn.query_ids[r], *knn.indices[r, :top])}
        plot_retrieval(plot, knn, y, read_images(split_info.dataset, wanted), rows, top=top, title=source_desc,
                       class_names=split_info.class_names)
        err.print(f"wrote {plot}", highlight=False, soft_wrap=True)

    card = _protocol(model_card, settings, tta if model_card else "none", metric, ks, None, items, report, rerank, rerank_k)
    names = split_info.class_names if split_info is not None else None
    _show(report, source_desc, card, names, as_json)


@dataclasses.dataclass
class RetrievalOptions:
    """How retrieval-eval turns an image source into embeddings (the model is loaded once, when needed)."""

    model: Optional[Path]
    arch: Optional[str]
    num_classes: Optional[int]
    data_dir: Optional[Path]
    image_size: Optional[int]
    preprocessing: Optional[str]
    batch_size: int
    tta: str
    show_progress: bool
    _loaded: Any = None

    def load(self) -> Any:
        if self._loaded is None:
            from finegrain.cli.console import start_tensorflow

            if self.model is None:
                raise UserError(f"image sources need a model: give --model ({REFERENCE_HELP})")
            start_tensorflow()
            from finegrain.evaluate.inference import check_tta

            check_tta(self.tta)
            self._loaded = load_reference(self.model, self.arch, self.num_classes)
        return self._loaded

    def embed(self, loaded: Any, split_info: Any) -> tuple[Any, Any]:
        return _outputs(loaded, split_info, "embedding", self.image_size, self.preprocessing, self.batch_size,
                        self.show_progress, self.tta)

    def settings(self, loaded: Any, split_info: Any) -> tuple[int, str]:
        from finegrain.evaluate.inference import eval_settings

        return eval_settings(loaded.card, split_info, "embedding", self.image_size, self.preprocessing)


def _side(options: RetrievalOptions, text: str) -> tuple[Any, Any, Any, Any]:
    """(embeddings, labels, ItemSet, split or None) of one --query / --gallery source."""
    from finegrain.cli.index import load_source
    from finegrain.evaluate.protocol import array_items, split_items

    if text.endswith(".npy"):
        path = Path(text)
        x, y = _arrays(path, path.with_suffix(".labels.npy"))
        if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
            raise UserError(f"{path} must hold [N, D] embeddings and {path.with_suffix('.labels.npy')} [N] labels")
        return x, y, array_items(path, y), None
    loaded = options.load()
    split_info, source = load_source(text, options.data_dir)
    x, y = options.embed(loaded, split_info)
    return x, y, dataclasses.replace(split_items(split_info, source), labels=y), split_info


def _separate_eval(options: RetrievalOptions, query: str, gallery: str, ks: Any, metric: str, rerank: str,
                   rerank_k: int, per_class: bool, as_json: bool) -> None:
    from finegrain.data.catalog import DEFAULT_RECALL_KS
    from finegrain.evaluate import metrics as m
    from finegrain.evaluate.protocol import model_identity
    from finegrain.evaluate.rerank import k_reciprocal, rerank_vectors

    qx, qy, q_items, _ = _side(options, query)
    gx, gy, g_items, g_split = _side(options, gallery)
    ks = ks or (list(g_split.info.recall_ks) if g_split is not None else list(DEFAULT_RECALL_KS))
    query_ids = m.identity_rows(q_items.ids, g_items.ids)
    qx, gx = rerank_vectors(qx, gx, query_ids, rerank, k=rerank_k)
    by_result = (lambda knn: k_reciprocal(knn, gx, qx)) if rerank == "kreciprocal" else None
    report, _ = m.evaluate_separate(qx, qy, gx, gy, ks, query_ids=query_ids, metric=metric, per_class=per_class,
                                    rerank=by_result)
    _check_scored(report)
    loaded = options._loaded
    model_card = model_identity(options.model, loaded.card) if loaded is not None else None
    settings = options.settings(loaded, g_split) if loaded is not None and g_split is not None else (None, None)
    card = _protocol(model_card, settings, options.tta if loaded is not None else "none", metric, ks, q_items, g_items,
                     report, rerank, rerank_k)
    card["query_in_gallery"] = int((query_ids >= 0).sum())
    _show(report, f"queries {query} against gallery {gallery}", card,
          g_split.class_names if g_split is not None else None, as_json)


def _check_scored(report: Any) -> None:
    if report.num_evaluated == 0:
        raise UserError(f"no query can be scored: {report.num_lone} lone and {report.num_distractors} distractor "
                        "items; every query needs another item of its class")


def _protocol(model_card: Any, settings: tuple, tta: str, metric: str, ks: Any, query: Any, gallery: Any,
              report: Any, rerank: str, rerank_k: int) -> dict:
    from finegrain.evaluate.protocol import protocol_card
    from finegrain.evaluate import rerank as r

    if rerank == "none":
        rerank_desc = {"method": rerank}
    elif rerank == "kreciprocal":
        rerank_desc = {"method": rerank, "k1": r.KRECIPROCAL_K1, "k2": r.KRECIPROCAL_K2,
                       "lambda": r.KRECIPROCAL_LAMBDA, "depth": r.KRECIPROCAL_DEPTH}
    else:
        rerank_desc = {"method": rerank, "k": rerank_k, "alpha": r.DEFAULT_ALPHA}
    return protocol_card(model=model_card, image_size=settings[0], preprocessing=settings[1], tta=tta, metric=metric,
                         ks=ks, query=query, gallery=gallery, definitions=report.definitions,
                         extra={"rerank": rerank_desc})


def _show(report: Any, source_desc: str, card: dict, class_names: Any, as_json: bool) -> None:
    if as_json:
        print_json({"source": source_desc, **report.to_dict(class_names), "protocol": card})
    else:
        _print_retrieval(report, source_desc, card, class_names)


def _print_retrieval(report: Any, source_desc: str, card: Optional[dict] = None, class_names: Any = None) -> None:
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
    if report.per_class is not None:
        worst = Table(title="worst classes (MAP@R)", title_justify="left")
        for column in ("class", "queries", "MAP@R", *(f"Recall@{kk}" for kk in report.recall_at_k)):
            worst.add_column(column, justify="left" if column == "class" else "right", overflow="fold")
        for c in report.per_class[:10]:
            d = c.to_dict(class_names)
            worst.add_row(d["class"] or str(c.label), str(c.num_queries), f"{100 * c.map_at_r:.2f}",
                          *(f"{100 * v:.2f}" for v in c.recall_at_k.values()))
        out.print(worst)
    out.print(
        f"gallery {report.num_gallery:,} ({report.num_classes:,} classes, {report.num_distractors:,} distractors); "
        f"queries evaluated {report.num_evaluated:,}, lone queries skipped {report.num_lone:,}; "
        f"{report.metric}, search depth {report.k_searched}. Definitions: finegrain retrieval-eval --help",
        highlight=False,
        soft_wrap=True,
    )
    if card is not None:
        embedding = card["embedding"]
        out.print(f"protocol: TTA {embedding['tta']}, re-ranking {card['rerank']['method']}, gallery sha256 "
                  f"{card['gallery']['items_sha256'][:16]}" + (f", weights sha256 {card['model']['weights_sha256'][:16]}"
                                                             if card["model"] else "") + " (full card: --json)",
                  highlight=False, soft_wrap=True)

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
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none, or flip (mean of the image's and its mirror's logits)."),
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
    from finegrain.evaluate.inference import check_tta

    check_tta(tta)

    loaded = load_reference(model, arch, num_classes)
    split_info = _load_split(loaded, dataset, data, split, data_dir, "test")
    logits, y = _outputs(loaded, split_info, "logits", image_size, preprocessing, batch_size, not as_json, tta)
    where = f"{split_info.info.name}/{split_info.name}"
    offset = loaded.card.label_offset
    y = aligned_labels(logits.shape[1], y, split_info.num_classes, offset, where)
    names = ["background"] * offset + list(split_info.class_names)  # in logit order
    report = classification_metrics(softmax(loaded.card.logit_scale * logits), y, num_confusions=confusions)
    source_desc = (f"{loaded.description} on {where}" + (f" (labels scored at logit index + {offset})" if offset else "")
                   + (f", TTA {tta}" if tta != "none" else ""))
    if as_json:
        print_json({"source": source_desc, "label_offset": offset, "tta": tta,
                    **report.to_dict(class_names=names)})
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
