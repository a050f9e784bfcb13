"""`finegrain predict`: the top classes of a few image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from finegrain.cli.common import ARCH_HELP, MODEL_HELP, NUM_CLASSES_HELP, load_reference, positive, print_json


def predict(
    images: list[Path] = typer.Argument(..., help="Image files to classify."),
    model: Path = typer.Option(..., "--model", "-m", help=MODEL_HELP),
    arch: Optional[str] = typer.Option(None, "--arch", help=ARCH_HELP),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help=NUM_CLASSES_HELP),
    top: int = typer.Option(5, "--top", help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON to stdout."),
) -> None:
    """Top classes with probabilities for each image (class numbers when the model has no class names).

    A missing or unreadable image gets one line on stderr; the others are still predicted
    (exit code 1 if any image failed).
    """
    import numpy as np

    from finegrain.cli.console import err, out, start_tensorflow

    positive(top, "--top")
    start_tensorflow()
    import tensorflow as tf

    from finegrain.data.preprocessing import eval_image
    from finegrain.evaluate.classify import softmax, top_k_indices
    from finegrain.evaluate.inference import DEFAULT_IMAGE_SIZE

    loaded = load_reference(model, arch, num_classes)
    card = loaded.card
    size, pre = card.image_size or DEFAULT_IMAGE_SIZE, card.preprocessing or "imagenet"
    results, failed = [], 0
    for path in images:
        try:
            image = eval_image(tf.constant(path.read_bytes()), image_size=size, preprocessing=pre)
        except OSError as e:
            err.print(f"[red]skipped[/] {path}: cannot read ({e.strerror or e})", highlight=False, soft_wrap=True)
            failed += 1
            continue
        except (tf.errors.InvalidArgumentError, ValueError):
            err.print(f"[red]skipped[/] {path}: not a decodable image (JPEG, PNG, BMP or GIF)", highlight=False, soft_wrap=True)
            failed += 1
            continue
        probs = softmax(card.logit_scale * np.asarray(loaded.forward(image[None])["logits"]))[0]
        names = card.class_names or _imagenet_names(card, len(probs)) or [str(i) for i in range(len(probs))]
        best = top_k_indices(probs[None], top)[0]
        results.append({"image": str(path), "top": [{"class": names[i], "probability": float(probs[i])} for i in best]})
    if as_json:
        print_json(results)
    else:
        for r in results:
            out.print(f"[bold]{r['image']}[/]", highlight=False, soft_wrap=True)
            for rank, t in enumerate(r["top"], start=1):
                out.print(f"  {rank}. {t['class']:<30} {100 * t['probability']:6.2f}%", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _imagenet_names(card: Any, num_logits: int) -> list[str] | None:
    """ImageNet synsets in logit order (after "background" for a 1001-way head) for an ImageNet model
    whose card names no classes (the released checkpoints, keras: models)."""
    if card.dataset != "imagenet":
        return None
    from finegrain.data.imagenet_c import imagenet_synsets

    names = ["background"] * card.label_offset + list(imagenet_synsets())
    return names if len(names) == num_logits else None


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("predict")(predict)
