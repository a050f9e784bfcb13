"""Typed fine-tuning recipes: schema defaults, then a YAML recipe file, then `key=value` overrides.

A recipe is plain data (dataclasses); the engine takes a `Recipe` and never reads the CLI.
Validation is strict, like the TF Model Garden's configs: an unknown key, a wrong type or a value
outside a field's allowed set is a `UserError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finegrain.errors import UserError
from finegrain.models.card import REFERENCE_HELP
from finegrain.train.tasks import TASK_NAMES
from finegrain.utils.io import atomic_write_text


def _recipes_dir() -> Path:
    # recipes/ at the repository root installs as the package finegrain.recipes (pyproject.toml);
    # run from a source checkout, the checkout's finegrain/ shadows that mapping, so look beside it.
    try:
        import finegrain.recipes

        return Path(finegrain.recipes.__file__).parent
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "recipes"


def _choice(default: Any, *allowed: Any, doc: str = "") -> Any:
    """A field whose value must be one of `allowed`."""
    return field(default=default, metadata={"choices": allowed, "doc": doc})


def _doc(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass
class ModelConfig:
    arch: str = _doc("assemble_resnet50", "a model name from `finegrain models`")
    init: str | None = _doc(
        None,
        "null = from scratch (warns); scratch = from scratch on purpose (pretraining); "
        "official = the released ImageNet weights of model.arch under "
        f"$FINEGRAIN_WEIGHTS_DIR; or any model reference: {REFERENCE_HELP}",
    )
    pooling: str = _choice("avg", "avg", "gem", doc="global pooling before the embedding")
    embedding_size: int = _doc(0, "0 = the pooled features are the embedding; >0 adds conv+BN to this size")
    head: str = _choice("linear", "linear", "cosine", doc="classifier: linear logits or cosine similarities")
    dropblock: bool = _doc(False, "DropBlock in stages 3 and 4 (keep prob scheduled by train.dropblock_*)")


@dataclass
class DataConfig:
    source: str = _doc("synthetic", "a data set name from `finegrain datasets` or a folder of class sub-folders")
    data_dir: str | None = _doc(None, "where prepared data sets live (null = the default data dir)")
    image_size: int = _doc(224, "training crop size in pixels")
    preprocessing: str = _choice(
        "imagenet", "imagenet", "imagenet_224_256", "imagenet_224_256a", "reid", doc="preprocessing type (finegrain.data.preprocessing)"
    )
    train_split: str = _choice("train", "train", "test", "retrieval_train", "retrieval_test")
    eval_split: str = _choice("test", "train", "test", "retrieval_train", "retrieval_test")
    autoaugment: str | None = _choice(None, None, "good", "imagenet", doc="AutoAugment policy")
    mixup_type: int = _choice(0, 0, 1, 2, doc="0 = off; 1 = mix 2B images into B; 2 = mix within the batch")
    mixup_alpha: float = _doc(0.2, "lambda ~ Beta(alpha, alpha)")


@dataclass
class TrainConfig:
    epochs: int = _doc(10, "number of epochs")
    batch_size: int = _doc(256, "global batch size (all replicas together)")
    steps_per_epoch: int | None = _doc(None, "null = data set size // batch size; an int caps it (demos, tests)")
    base_lr: float = _doc(0.01, "peak learning rate (not scaled with the batch size, as the paper)")
    warmup_epochs: float = _doc(5.0, "linear warm-up length")
    lr_schedule: str = _choice("cosine", "cosine", "constant")
    momentum: float = _doc(0.9, "SGD momentum")
    weight_decay: float = _doc(0.001, "wd * sum(w^2) / 2 over all weights except BatchNorm (the original's convention)")
    bn_momentum: float | None = _doc(None, "null = max(1 - 10 / steps_per_epoch, 0.9)")
    label_smoothing: float = _doc(0.0, "label smoothing in the loss")
    loss: str = _choice("softmax", "softmax", "cosine_softmax", "arcface")
    loss_scale: float = _doc(30.0, "scale s of cosine_softmax / arcface logits")
    loss_margin: float = _doc(0.0, "margin m (arcface: additive angular margin)")
    dropblock_keep_prob_start: float = _doc(0.9, "DropBlock keep probability at the first step")
    dropblock_keep_prob_end: float = _doc(0.7, "DropBlock keep probability at the last step (linear decay)")
    seed: int = _doc(0, "seed for initialisation, data order and augmentation")
    kd_targets: str | None = _doc(None, "knowledge distillation: a directory from `finegrain distill-targets` "
                                        "computed on this recipe's training split (null = no distillation)")
    kd_temperature: float = _doc(1.0, "distillation temperature T: loss += T^2 * CE(teacher / T, student / T)")


@dataclass
class EvalConfig:
    every_epochs: int = _doc(1, "evaluate every N epochs (and after the last)")
    every_epoch_from: float = _doc(1.0, "from this fraction of the epochs on, evaluate after every epoch "
                                        "(0.9: the last 10 %; 1.0: only every_epochs)")
    keep_best: int = _doc(3, "number of best checkpoints kept (by top-1, or Recall@1 for retrieval)")
    recall_ks: list[int] | None = _doc(None, "null = the data set's customary K list")


STRATEGIES = ("auto", "default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@dataclass
class RuntimeConfig:
    strategy: str = _choice("auto", *STRATEGIES, doc="tf.distribute strategy")
    precision: str = _choice("float32", *PRECISIONS)
    xla: bool = _doc(False, "jit-compile the train step")
    deterministic: bool = _doc(False, "TensorFlow op determinism (slower; bit-exact resume)")


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    task: str = _choice("classification", *TASK_NAMES, doc="what kind of run (finegrain.train.tasks)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# ---------------------------------------------------------------------------------------------
# Building a Recipe from nested dicts, with validation


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else tp.__name__


def _shown(value: Any, limit: int = 60) -> str:
    """repr of a value for a one-line message, shortened (a list can be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...]"[: 5 if text[:1] in "[{" else 4]


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except UserError:
                pass
    elif origin is list:
        if isinstance(value, list):
            return [_coerce(v, typing.get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is type(None):
        if value is None:
            return None
    elif tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as text: take what the user means
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise UserError(f"recipe key '{key}' must be a finite number, got {_shown(value)}")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    raise UserError(f"recipe key '{key}' must be {_type_name(tp)}, got {_shown(value)} ({type(value).__name__})")


#: Keys of older finegrain versions, ignored when read so that old run directories still resume.
RETIRED_KEYS = {"eval.metric"}  # the task now decides: top-1 for classification, Recall@1 for retrieval
NAME_PATTERN = re.compile(r"[^/\\.\s][^/\\]*")  # one path component: it names the run directory
MAX_IMAGE_SIZE = 2048  # beyond this one image alone outgrows a GPU's memory at ResNet-50 widths
MAX_EMBEDDING_SIZE = 16384


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"recipe section '{prefix[:-1] or 'top level'}' must be a mapping, got {_shown(values)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in values.items() if prefix + str(k) not in RETIRED_KEYS}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = f"in '{prefix[:-1]}' " if prefix else ""
        raise UserError(f"unknown recipe key '{prefix + unknown[0]}' {where}(allowed: {', '.join(fields)})")
    kwargs = {}
    for name, value in values.items():
        key, tp = prefix + name, hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key + ".")
            continue
        value = _coerce(value, tp, key)
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            allowed = ", ".join("null" if c is None else str(c) for c in choices)
            raise UserError(f"recipe key '{key}' is {_shown(value)}; allowed values: {allowed}")
        kwargs[name] = value
    return cls(**kwargs)


def _check_consistency(r: Recipe) -> None:
    """Rules that tie fields together; each names the keys to change."""
    positive = {
        "train.epochs": r.train.epochs,
        "train.batch_size": r.train.batch_size,
        "data.image_size": r.data.image_size,
        "eval.every_epochs": r.eval.every_epochs,
        "eval.keep_best": r.eval.keep_best,
    }
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"recipe key '{key}' must be at least 1, got {value}")
    if not NAME_PATTERN.fullmatch(r.name):
        raise UserError(f"recipe name {r.name!r} must not hold '/' or start with '.' (it names the run directory)")
    if r.data.image_size > MAX_IMAGE_SIZE:
        raise UserError(f"recipe key 'data.image_size' is {r.data.image_size}; at most {MAX_IMAGE_SIZE} pixels")
    if r.model.embedding_size > MAX_EMBEDDING_SIZE or r.model.embedding_size < 0:
        raise UserError(f"recipe key 'model.embedding_size' must be 0..{MAX_EMBEDDING_SIZE}, got {r.model.embedding_size}")
    for key, value, low, low_ok in (("train.base_lr", r.train.base_lr, 0.0, False),
                                     ("train.loss_scale", r.train.loss_scale, 0.0, False),
                                     ("train.warmup_epochs", r.train.warmup_epochs, 0.0, True),
                                     ("train.weight_decay", r.train.weight_decay, 0.0, True),
                                     ("train.loss_margin", r.train.loss_margin, 0.0, True),
                                     ("train.kd_temperature", r.train.kd_temperature, 0.0, False),
                                     ("train.seed", r.train.seed, 0, True)):
        if value < low or (value == low and not low_ok):
            raise UserError(f"recipe key '{key}' must be {'at least' if low_ok else 'greater than'} {low}, got {value}")
    if not 0.0 <= r.eval.every_epoch_from <= 1.0:
        raise UserError(f"recipe key 'eval.every_epoch_from' must be in [0, 1], got {r.eval.every_epoch_from}")
    if not 0.0 <= r.train.momentum < 1.0:
        raise UserError(f"recipe key 'train.momentum' must be in [0, 1), got {r.train.momentum}")
    if r.train.steps_per_epoch is not None and r.train.steps_per_epoch < 1:
        raise UserError("recipe key 'train.steps_per_epoch' must be null or at least 1")
    for key in ("dropblock_keep_prob_start", "dropblock_keep_prob_end"):
        if not 0.0 < getattr(r.train, key) <= 1.0:
            raise UserError(f"recipe key 'train.{key}' must be in (0, 1]")
    if not 0.0 <= r.train.label_smoothing < 1.0:
        raise UserError("recipe key 'train.label_smoothing' must be in [0, 1)")
    if r.train.bn_momentum is not None and not 0.0 <= r.train.bn_momentum < 1.0:
        raise UserError("recipe key 'train.bn_momentum' must be null or in [0, 1)")
    if r.data.mixup_alpha <= 0:
        raise UserError(f"recipe key 'data.mixup_alpha' must be greater than 0, got {r.data.mixup_alpha}")
    if r.train.loss in ("cosine_softmax", "arcface") and r.model.head != "cosine":
        raise UserError(f"train.loss={r.train.loss} needs model.head=cosine (set --set model.head=cosine)")
    if r.train.loss == "softmax" and r.model.head == "cosine":
        raise UserError("model.head=cosine needs train.loss=cosine_softmax or arcface")
    if r.eval.recall_ks is not None and (not r.eval.recall_ks or min(r.eval.recall_ks) < 1):
        raise UserError("recipe key 'eval.recall_ks' must be a non-empty list of positive integers")


def recipe_from_dict(values: dict[str, Any]) -> Recipe:
    """Validate nested plain data (as read from YAML) into a Recipe."""
    recipe = _build(Recipe, values, "")
    _check_consistency(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


# ---------------------------------------------------------------------------------------------
# Files and overrides


#: `model.init: scratch`: from scratch on purpose (ImageNet pretraining), without the warning of null.
SCRATCH = "scratch"


def pretraining_recipe(arch: str) -> str | None:
    """The shipped recipe that pretrains `arch` on ImageNet (`imagenet_<arch>`), if there is one."""
    name = f"imagenet_{arch}"
    return name if name in list_recipes() else None


def list_recipes() -> dict[str, str]:
    """Shipped recipe names -> their one-line description."""
    return {path.stem: str(_read_yaml(path).get("description", "")) for path in sorted(_recipes_dir().glob("*.yaml"))}


def recipe_path(name_or_path: str) -> Path:
    """A shipped recipe name (`food101_assemble`) or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise UserError(f"recipe {name_or_path} is a directory: give a YAML file")
        if not path.is_file():
            raise UserError(f"recipe file not found: {name_or_path}")
        return path
    shipped = _recipes_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise UserError(
            f"unknown recipe '{name_or_path}' (shipped: {', '.join(list_recipes())}; or give a path to a YAML file)"
        )
    return shipped


class _RecipeLoader(yaml.SafeLoader):
    """YAML as a recipe needs it: a repeated key or an alias (`*name`, which can expand a small file
    into millions of elements) is an error rather than silently taken."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed in recipes (line {mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.YAMLError(f"key '{repeated[0]}' appears twice (line {node.start_mark.line + 1})")
        return super().construct_mapping(node, deep=deep)


MAX_RECIPE_BYTES = 1_000_000


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise UserError(f"recipe file {path} is larger than {MAX_RECIPE_BYTES:,} bytes: not a recipe")
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError:
        raise UserError(f"recipe file {path} is not UTF-8 text (a binary file?)") from None
    except OSError as e:
        raise UserError(f"cannot read recipe file {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"recipe file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        raise UserError(f"recipe file {path} is empty: start from a shipped one (finegrain recipes show NAME)")
    if not isinstance(data, dict):
        raise UserError(f"recipe file {path} must hold a mapping of sections (model, data, train, ...)")
    return data


def apply_override(values: dict[str, Any], assignment: str) -> None:
    """Apply one `section.key=value` override in place; the value is parsed as YAML (3, 0.1, null, [1,2])."""
    if "=" not in assignment:
        raise UserError(f"override '{assignment}' must look like key=value, e.g. train.epochs=3")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if key in RETIRED_KEYS:
        raise UserError(f"recipe key '{key}' no longer exists: the task decides (top-1 for classification, "
                        "Recall@1 for retrieval)")
    try:
        value = yaml.load(raw, Loader=_RecipeLoader) if raw.strip() else ""  # noqa: S506
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override '{assignment}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_recipe(name_or_path: str, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Schema defaults, then the recipe file, then each `key=value` override, then validation."""
    path = recipe_path(name_or_path)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for assignment in overrides:
        apply_override(values, assignment)
    return recipe_from_dict(values)


def recipe_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, width=10_000)


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the resolved recipe atomically; `load_recipe(path)` gives the same Recipe back."""
    atomic_write_text(path, recipe_yaml(recipe))
