"""`finegrain tune`: fine-tune a model with a recipe, or resume a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from finegrain.errors import UserError
from finegrain.train.recipe import PRECISIONS, STRATEGIES  # no TensorFlow behind this import


def _choice(value: Optional[str], allowed: tuple[str, ...], option: str) -> Optional[str]:
    if value is not None and value not in allowed:
        raise UserError(f"{option} must be one of {', '.join(allowed)}, got '{value}'")
    return value


def tune(
    recipe: Optional[str] = typer.Option(None, "--recipe", "-r", help="A shipped recipe name or a YAML file."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field: key=value (repeatable)."),
    run_dir: Optional[str] = typer.Option(None, "--run-dir", help="Where the run goes (default runs/<recipe>-<time>)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="auto | default | mirrored | multiworker."),
    precision: Optional[str] = typer.Option(None, "--precision", help="float32 | mixed_bfloat16 | mixed_float16."),
    xla: Optional[bool] = typer.Option(None, "--xla/--no-xla", help="Jit-compile the train step with XLA."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Plain log lines instead of progress bars."),
) -> None:
    """Fine-tune a model with a recipe (see `finegrain recipes`); `--resume RUN_DIR` continues a run."""
    _choice(strategy, STRATEGIES, "--strategy")
    _choice(precision, PRECISIONS, "--precision")
    if resume is not None and (recipe is not None or set_ or run_dir is not None):
        raise UserError("--resume continues a run with its saved recipe: drop --recipe/--set/--run-dir")
    if resume is None and recipe is None:
        raise UserError("give --recipe NAME|PATH (see `finegrain recipes`) or --resume RUN_DIR")

    from finegrain.train.progress import LogReporter, RichReporter
    from finegrain.train.recipe import load_recipe

    from finegrain.train import rundir

    loaded = load_recipe(recipe, set_ or []) if recipe is not None else None
    if resume is None:
        if run_dir is not None and not run_dir.strip():
            raise UserError("--run-dir is empty: name a new directory")
        if (strategy or loaded.runtime.strategy) == "multiworker":  # every worker runs this; the chief claims later
            run_dir = rundir.check_new(Path(run_dir) if run_dir else rundir.default_run_dir(loaded.name))
        else:  # claimed before TensorFlow's seconds of start-up: runs started in the same second get their own
            run_dir = rundir.claim_new(run_dir) if run_dir else rundir.claim_default(loaded.name)
    else:
        rundir.check_resumable(resume)
    from finegrain.cli.console import err, start_tensorflow

    target = resume or run_dir
    try:
        start_tensorflow()
        from finegrain.train.engine import tune as run_tune

        reporter = LogReporter() if quiet else RichReporter(err)
        run_tune(loaded, target, resume=resume is not None, strategy=strategy, precision=precision, xla=xla,
                 reporter=reporter)
    except KeyboardInterrupt:
        if rundir.has_checkpoint(target) or resume is not None:
            err.print(f"interrupted: continue with  finegrain tune --resume {target}", highlight=False, soft_wrap=True)
        else:
            err.print("interrupted before the first checkpoint: nothing was kept; run the same command again",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        if resume is None:
            rundir.release_unused(run_dir)  # a no-op once the run wrote there; else the name is free again


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("tune")(tune)
