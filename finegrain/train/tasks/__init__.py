"""Tasks: what kind of run a recipe is (`recipe.task`). A new kind of task is one new module here
and one line in `_MODULES`; nothing else in finegrain branches on the task's name."""

from __future__ import annotations

import importlib

from finegrain.errors import UserError

# Name -> module defining the task class `TASK`. Imported on first use, not here: the recipe schema
# reads TASK_NAMES, and reading a recipe (`finegrain recipes`, --help) must not start TensorFlow.
_MODULES = {
    "classification": "finegrain.train.tasks.classification",
    "retrieval": "finegrain.train.tasks.retrieval",
}
TASK_NAMES = tuple(_MODULES)


def get_task(name: str) -> type:
    """The task class registered as `name` (a subclass of `finegrain.train.tasks.base.Task`)."""
    if name not in _MODULES:
        raise UserError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}")
    return importlib.import_module(_MODULES[name]).TASK
