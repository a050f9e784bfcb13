"""The registered architectures: names, descriptions, parameter counts, and what builds each one.

No Keras and no TensorFlow here: `finegrain models` lists this table in a fraction of a second, and
`finegrain.models.registry.create_model` builds from it. The built-in family is described by
`ResNetSpec` switches (built by `finegrain.models.resnet`); other architectures register a feature
builder function (see tests/tiny_arch.py).

The recorded parameter counts are the one place `finegrain models` reads them from; a test builds
every model and checks that they agree (tests/models/test_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from finegrain.errors import UserError

IMAGENET_CLASSES = 1001  # the official heads: index 0 is "background"


@dataclass(frozen=True)
class ResNetSpec:
    """Architecture switches of the ResNet family, named after the original's flags."""

    block_sizes: tuple[int, int, int, int]
    big_little: bool = False  # resnet_version=2: Big-Little stem and stages 1-3
    alpha: int = 2  # Big-Little: little-branch width divisor
    beta: int = 4  # Big-Little: little-branch depth divisor
    selective_kernel: bool = False
    anti_alias: bool = False  # "sconv": stride-1 3x3 stage + blur downsample in stride-2 blocks
    resnet_d: bool = False  # deep 3x3 stem + average-pool shortcuts (resnet_version=1 only)

    @property
    def block_strides(self) -> tuple[int, int, int, int]:
        # Big-Little stages 1-3 already downsample in the big branch; the merge block strides 2, 2, 1.
        return (2, 2, 1, 2) if self.big_little else (1, 2, 2, 2)


RESNET50 = ResNetSpec(block_sizes=(3, 4, 6, 3))
ASSEMBLE_RESNET50 = ResNetSpec(block_sizes=(3, 4, 6, 3), big_little=True, alpha=2, beta=4,
                               selective_kernel=True, anti_alias=True)
ASSEMBLE_RESNET152 = ResNetSpec(block_sizes=(5, 12, 30, 3), big_little=True, alpha=1, beta=2,
                                selective_kernel=True, anti_alias=True)
ASSEMBLE_RESNET50_IR = ResNetSpec(block_sizes=(3, 4, 6, 3), selective_kernel=True, resnet_d=True)


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture: either a ResNet `spec` or a `build_features` function."""

    name: str
    description: str
    build_features: Callable | None = None  # (images, *, bn_momentum, keep_prob, zero_init_residual) -> features
    has_official_weights: bool = True
    parameters: tuple[int, int] | None = None  # (trainable, non-trainable) at 1001 classes, if recorded
    spec: ResNetSpec | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def _add(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def register_model(name: str, description: str, *, has_official_weights: bool = True,
                   parameters: tuple[int, int] | None = None) -> Callable:
    """Decorator: register `fn(images, *, bn_momentum, keep_prob, zero_init_residual) -> feature map`.

    `parameters`: the (trainable, non-trainable) counts at 1001 classes, so listing models needs no
    build.
    """

    def decorate(fn: Callable) -> Callable:
        _add(ModelEntry(name, description, build_features=fn, has_official_weights=has_official_weights,
                        parameters=parameters))
        return fn

    return decorate


def list_models() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    """The registry record of `name`; UserError listing the known names if there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(_REGISTRY)}") from None


_add(ModelEntry("resnet50", "ResNet-50 v1.5 (stride on the 3x3 conv)", spec=RESNET50,
                parameters=(25_559_081, 53_120)))
_add(ModelEntry("assemble_resnet50", "ResNet-50 + Big-Little (a2, b4) + Selective Kernel + anti-alias",
                spec=ASSEMBLE_RESNET50, parameters=(41_848_489, 77_312)))
_add(ModelEntry("assemble_resnet152", "blocks [5,12,30,3] + Big-Little (a1, b2) + Selective Kernel + anti-alias",
                spec=ASSEMBLE_RESNET152, parameters=(117_006_249, 249_600)))
_add(ModelEntry("assemble_resnet50_ir", "retrieval backbone: ResNet-50-D + Selective Kernel",
                spec=ASSEMBLE_RESNET50_IR, has_official_weights=False, parameters=(38_793_097, 64_576)))
