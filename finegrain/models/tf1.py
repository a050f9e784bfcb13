"""Official TF1 checkpoints (clovaai/assembled-cnn) -> Keras weights.

The mapping is by name: each weighted Keras layer is named after its TF1 variable scope with "-" for
"/" (see finegrain.models.resnet), so a Keras variable with path `stage1-big1-sk_block_1/sk_fc_1/kernel`
is the TF1 variable `resnet_model/stage1/big1/sk_block_1/sk_fc_1/kernel`. Loading checks the mapping
both ways: every backbone variable must be in the checkpoint with the same shape, and every model
variable of the checkpoint must land somewhere. `global_step`, optimizer slots (`.../Momentum`, ...)
and variables outside `resnet_model/` are ignored.

Head variables (`dense`, `embedding_dense*`) are loaded when the checkpoint holds them with fitting
shapes; otherwise (fine-tuning to N classes, a new embedding) the model keeps its fresh head, and the
report says what was skipped. `head="require"` makes the head mandatory (the `weights import` command).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from finegrain.errors import UserError, first_line
from finegrain.models.heads import CLASSIFIER_NAMES, EMBEDDING_DENSE, HEAD_LAYERS
from finegrain.models.resnet import SEPARATOR

MODEL_SCOPE = "resnet_model/"
IGNORED_NAMES = frozenset({"global_step"})
SLOT_SUFFIXES = frozenset({"Momentum", "Adam", "Adam_1", "RMSProp", "RMSProp_1", "ExponentialMovingAverage"})
HEAD_MODES = ("auto", "require", "skip")


@dataclass
class LoadReport:
    """What `load_tf1_checkpoint` did."""

    checkpoint: str
    arch: str = ""
    loaded: list[str] = field(default_factory=list)  # TF1 names assigned to the model
    skipped_head: list[str] = field(default_factory=list)  # head variables left at their initial values
    ignored: list[str] = field(default_factory=list)  # global_step, optimizer slots, non-model variables


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """A directory with a `checkpoint` file or a `model.ckpt-N` prefix (or one of its files) -> prefix."""
    path = Path(path)
    if path.is_dir():
        if not (path / "checkpoint").is_file():
            raise UserError(f"directory {path} has no `checkpoint` file; pass the checkpoint prefix "
                            f"(e.g. {path}/model.ckpt-12345) instead")
        try:
            state = tf.train.get_checkpoint_state(str(path))
        except Exception as e:
            raise UserError(f"cannot parse {path / 'checkpoint'}: {first_line(e)}") from None
        if state is None or not state.model_checkpoint_path:
            raise UserError(f"{path / 'checkpoint'} names no checkpoint (model_checkpoint_path is empty)")
        recorded = Path(state.model_checkpoint_path)
        # Downloaded checkpoints often record an absolute path from the machine that trained them.
        for prefix in (recorded if recorded.is_absolute() else path / recorded, path / recorded.name):
            if Path(f"{prefix}.index").is_file():
                return str(prefix)
        raise UserError(f"{path / 'checkpoint'} points to {recorded}, but {path / recorded.name}.index does not exist")
    text = str(path)
    for suffix in (".index", ".meta"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    if ".data-" in Path(text).name:
        text = text[: text.rindex(".data-")]
    if not Path(f"{text}.index").is_file():
        raise UserError(f"no TF1 checkpoint at {path}: expected a directory with a `checkpoint` file "
                        "or a model.ckpt-N prefix with .index and .data-* files")
    return text


def _is_ignored(name: str) -> bool:
    return name in IGNORED_NAMES or not name.startswith(MODEL_SCOPE) or name.rsplit("/", 1)[-1] in SLOT_SUFFIXES


def _head_scope(tf1_name: str) -> str | None:
    scope = tf1_name[len(MODEL_SCOPE):].split("/", 1)[0]
    return scope if scope in HEAD_LAYERS else None


def read_variable_shapes(prefix: str) -> dict[str, tuple[int, ...]]:
    """All variable names and shapes of a TF1 checkpoint (UserError if unreadable)."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: tuple(shape) for name, shape in reader.get_variable_to_shape_map().items()}
    except Exception as e:  # DataLossError, NotFoundError, OutOfRangeError, ... all mean "unreadable"
        raise UserError(f"cannot read TF1 checkpoint {prefix}: {first_line(e)} (truncated or corrupt files? "
                        "download them again)") from None


def checkpoint_head(path: str | os.PathLike) -> tuple[int | None, int]:
    """(num_classes of the checkpoint's dense head or None, its embedding size or 0)."""
    return head_of(read_variable_shapes(resolve_checkpoint(path)))


def head_of(shapes: dict[str, tuple[int, ...]]) -> tuple[int | None, int]:
    """`checkpoint_head` from variable shapes already read."""
    dense = shapes.get(f"{MODEL_SCOPE}{CLASSIFIER_NAMES['linear']}/bias")
    embedding = shapes.get(f"{MODEL_SCOPE}{EMBEDDING_DENSE}/kernel")
    return (int(dense[0]) if dense else None), (int(embedding[-1]) if embedding else 0)


def tf1_variable_map(model: keras.Model) -> dict[str, keras.Variable]:
    """TF1 name -> Keras variable for every weight of `model` that a TF1 checkpoint can hold."""
    mapping: dict[str, keras.Variable] = {}
    for variable in model.weights:
        if variable.name == "dropblock_keep_prob":  # finegrain's own training state, not a TF1 variable
            continue
        mapping[MODEL_SCOPE + variable.path.replace(SEPARATOR, "/")] = variable
    return mapping


def _fits(checkpoint_shape: tuple[int, ...], variable: keras.Variable) -> bool:
    # A TF1 1x1 conv kernel [1,1,C,E] is a Keras dense kernel [C,E] (the embedding layer).
    shape = tuple(variable.shape)
    return checkpoint_shape == shape or (checkpoint_shape[:2] == (1, 1) and checkpoint_shape[2:] == shape)


def guess_arch(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The registered architecture a checkpoint's variable names suggest (a hint for error messages)."""
    names = [name for name in shapes if not _is_ignored(name)]
    if f"{MODEL_SCOPE}stage0/pool/conv2d/kernel" in shapes:  # Big-Little stem; depth tells 50 from 152
        big3_blocks = sum(1 for name in names
                          if name.startswith(f"{MODEL_SCOPE}stage3/big3/") and name.endswith("sk_fc_1/kernel"))
        return {5: "assemble_resnet50", 29: "assemble_resnet152"}.get(big3_blocks)
    if f"{MODEL_SCOPE}conv2d/kernel" in shapes:
        has_sk = any("/sk_block" in name for name in names)
        return "assemble_resnet50_ir" if has_sk else "resnet50"
    return None


def _examples(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def plan_load(model: keras.Model, shapes: dict[str, tuple[int, ...]], head: str = "auto",
              where: str = "the checkpoint") -> tuple[list[str], list[str], list[str]]:
    """Check the name/shape mapping; return (names to load, head names skipped, names ignored).

    Raises one UserError naming the first problem: missing, unexpected or mis-shaped variables.
    """
    if head not in HEAD_MODES:
        raise ValueError(f"head must be one of {HEAD_MODES}, got {head!r}")
    targets = tf1_variable_map(model)
    ignored = sorted(name for name in shapes if _is_ignored(name))
    available = {name: shape for name, shape in shapes.items() if not _is_ignored(name)}
    skipped: set[str] = set()
    if head != "require":
        # A head layer loads as a whole or not at all (a kernel without its bias would be nonsense).
        for scope in HEAD_LAYERS:
            in_model = {name for name in targets if _head_scope(name) == scope}
            in_checkpoint = {name for name in available if _head_scope(name) == scope}
            loads = (head == "auto" and in_model and in_model == in_checkpoint
                     and all(_fits(available[name], targets[name]) for name in in_model))
            if not loads:
                skipped |= in_model | in_checkpoint
    usable = {name: shape for name, shape in available.items() if name not in skipped}
    missing = sorted(name for name in targets if name not in usable and name not in skipped)
    unexpected = sorted(name for name in usable if name not in targets)
    arch = model.name
    if missing and unexpected:
        guess = guess_arch(shapes)
        hint = (f"it looks like a {guess!r} checkpoint" if guess and guess != arch
                else "pick the architecture the checkpoint was trained with")
        raise UserError(f"{where} does not match model {arch!r}: {len(missing)} model variables are missing "
                        f"(e.g. {_examples(missing)}) and {len(unexpected)} checkpoint variables are unexpected "
                        f"(e.g. {_examples(unexpected)}); {hint}")
    if missing:
        raise UserError(f"{where} lacks variable(s) of model {arch!r}: {_examples(missing)}")
    if unexpected:
        raise UserError(f"{where} has variable(s) that model {arch!r} does not: {_examples(unexpected)}")
    for name, shape in sorted(usable.items()):
        if not _fits(shape, targets[name]):
            raise UserError(f"variable {name} has shape {list(shape)} in {where} but "
                            f"{list(targets[name].shape)} in model {arch!r}")
    return sorted(usable), sorted(skipped), ignored


def load_tf1_checkpoint(model: keras.Model, path: str | os.PathLike, *, head: str = "auto") -> LoadReport:
    """Assign an official TF1 checkpoint to `model` (BatchNorm moving statistics included).

    head="auto": load the head when it fits, else keep the model's new head; "require": the head must
    load too; "skip": never load the head. All values are read before any is assigned, so a failure
    leaves the model untouched.
    """
    prefix = resolve_checkpoint(path)
    shapes = read_variable_shapes(prefix)
    to_load, skipped, ignored = plan_load(model, shapes, head, where=f"checkpoint {prefix}")
    targets = tf1_variable_map(model)
    try:
        reader = tf.train.load_checkpoint(prefix)
        values = {name: reader.get_tensor(name) for name in to_load}
    except Exception as e:
        raise UserError(f"cannot read TF1 checkpoint {prefix}: {first_line(e)} (truncated or corrupt files? "
                        "download them again)") from None
    for name, value in values.items():
        variable = targets[name]
        variable.assign(np.asarray(value, dtype=variable.dtype).reshape(variable.shape))
    return LoadReport(checkpoint=prefix, arch=model.name, loaded=to_load, skipped_head=skipped, ignored=ignored)
