"""The ResNet family of the Assemble-ResNet paper, as functional Keras 3 graphs.

The builder follows the official TF1 code (clovaai/assembled-cnn) statement by statement where it
matters for the weights: layers are created in the original's creation order and every weighted layer
is named after the TF1 variable scope it corresponds to ("/" written as "-": Keras forbids "/" in layer
names and PyTorch "." in parameter names), e.g. the Keras layer `stage1-big1-conv2d_3` holds
`resnet_model/stage1/big1/conv2d_3/kernel`. TF1 auto-numbers `tf.layers` per variable scope in creation
order; `_Scope` reproduces that numbering, which makes the TF1 mapping (`finegrain.models.tf1`) a pure
function of the Keras variable paths, checked against the manifests in tests/models/data/.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import keras
from keras import layers

from finegrain.models.architectures import ResNetSpec
from finegrain.models.layers import (
    BN_MOMENTUM,
    BlurDownsample,
    DropBlock,
    FixedPaddingConv2D,
    SelectiveKernel,
    UpsampleAdd,
    batch_norm,
)

SEPARATOR = "-"  # stands for TF1's "/" in Keras layer names (never part of a TF1 name)
EXPANSION = 4
STEM_FILTERS = 64
DROPBLOCK_SIZE = 7
DROPBLOCK_GAMMA_SCALE = {2: 0.25, 3: 1.0}  # stage index (0-based) -> gamma scale; stages 3 and 4 only


class _Scope:
    """A TF1 variable scope: hands out `base`, `base_1`, `base_2`, ... per base name, in call order."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._counts: Counter[str] = Counter()

    def unique(self, base: str) -> str:
        n = self._counts[base]
        self._counts[base] += 1
        name = base.replace("/", SEPARATOR) + (f"_{n}" if n else "")
        return f"{self.path}{SEPARATOR}{name}" if self.path else name

    def child(self, base: str) -> _Scope:
        return _Scope(self.unique(base))


class _Builder:
    """Functional-graph helpers that share the spec, BN momentum and the DropBlock keep-prob variable."""

    def __init__(self, spec: ResNetSpec, bn_momentum: float, keep_prob: keras.Variable | None,
                 zero_init_residual: bool = False) -> None:
        self.spec = spec
        self.zero_init_residual = zero_init_residual
        self.bn_momentum = bn_momentum
        self.keep_prob = keep_prob  # None: DropBlock off

    # -- primitives -----------------------------------------------------------------------------
    def conv(self, x, scope: _Scope, filters: int, kernel_size: int, strides: int = 1):
        return FixedPaddingConv2D(filters, kernel_size, strides, name=scope.unique("conv2d"))(x)

    def bn(self, x, scope: _Scope, zero_gamma: bool = False):
        return batch_norm(scope.unique("batch_normalization"), self.bn_momentum, zero_gamma=zero_gamma)(x)

    def conv_bn(self, x, scope: _Scope, filters: int, kernel_size: int, strides: int = 1, relu: bool = True):
        x = self.bn(self.conv(x, scope, filters, kernel_size, strides), scope)
        return layers.ReLU()(x) if relu else x

    def dropblock_for(self, stage: int) -> Callable:
        if self.keep_prob is None or stage not in DROPBLOCK_GAMMA_SCALE:
            return lambda x: x
        return lambda x: DropBlock(DROPBLOCK_SIZE, DROPBLOCK_GAMMA_SCALE[stage], keep_prob=self.keep_prob)(x)

    # -- shortcuts ------------------------------------------------------------------------------
    def shortcut(self, x, scope: _Scope, filters: int, strides: int, kind: str):
        """Projection shortcut conv (its BN is added by the caller)."""
        if kind == "bl" and strides > 1:  # Big-Little: zero pad 1, 3x3 average pool VALID, 1x1 conv
            x = layers.ZeroPadding2D(1)(x)
            x = layers.AveragePooling2D(3, strides, padding="valid")(x)
            strides = 1
        elif kind == "d":  # ResNet-D: 2x2 average pool (pad (0, 1) + VALID when strided), 1x1 conv
            if strides > 1:
                x = layers.ZeroPadding2D(((0, 1), (0, 1)))(x)
                x = layers.AveragePooling2D(2, strides, padding="valid")(x)
            else:
                x = layers.AveragePooling2D(2, 1, padding="same")(x)
            strides = 1
        return self.conv(x, scope, filters, 1, strides)

    # -- blocks ---------------------------------------------------------------------------------
    def bottleneck(self, x, scope: _Scope, filters: int, strides: int, shortcut_kind: str | None,
                   drop: Callable, anti_alias: bool = False, last_relu: bool = True):
        """ResNet v1.5 bottleneck (stride on the 3x3 stage), in the original's creation order."""
        shortcut = x
        if shortcut_kind is not None:
            shortcut = drop(self.bn(self.shortcut(x, scope, EXPANSION * filters, strides, shortcut_kind), scope))
        y = layers.ReLU()(drop(self.bn(self.conv(x, scope, filters, 1), scope)))
        blur = anti_alias and strides > 1
        mid_strides = 1 if blur else strides
        if self.spec.selective_kernel:
            y = self.conv_bn(y, scope, 2 * filters, 3, mid_strides)
            y = drop(SelectiveKernel(filters, bn_momentum=self.bn_momentum, name=scope.unique("sk_block"))(y))
        else:
            y = layers.ReLU()(drop(self.bn(self.conv(y, scope, filters, 3, mid_strides), scope)))
        if blur:
            y = BlurDownsample()(y)
        y = drop(self.bn(self.conv(y, scope, EXPANSION * filters, 1), scope, zero_gamma=self.zero_init_residual))
        y = layers.Add()([y, shortcut])
        return layers.ReLU()(y) if last_relu else y

    def block_layer(self, x, scope: _Scope, filters: int, num_blocks: int, strides: int, stage: int,
                    shortcut_kind: str, last_relu: bool = True):
        """A stage: first block projects (and strides), the rest are identity blocks."""
        drop = self.dropblock_for(stage)
        x = self.bottleneck(x, scope, filters, strides, shortcut_kind, drop, anti_alias=self.spec.anti_alias,
                            last_relu=last_relu if num_blocks == 1 else True)
        for i in range(1, num_blocks):
            x = self.bottleneck(x, scope, filters, 1, None, drop, last_relu=last_relu if i == num_blocks - 1 else True)
        return x

    # -- stems ----------------------------------------------------------------------------------
    def stem(self, x, root: _Scope):
        if self.spec.big_little:
            return self._big_little_stem(x, root)
        if self.spec.resnet_d:
            x = self.conv_bn(x, root, STEM_FILTERS // 2, 3, 2)
            x = self.conv_bn(x, root, STEM_FILTERS // 2, 3)
            x = self.conv_bn(x, root, STEM_FILTERS, 3)
        else:
            x = self.conv_bn(x, root, STEM_FILTERS, 7, 2)
        return layers.MaxPooling2D(3, 2, padding="same")(x)

    def _big_little_stem(self, x, root: _Scope):
        # The original opens a fresh "stage0" scope for the BN, hence "stage0_1/batch_normalization".
        x = self.conv(x, root.child("stage0"), STEM_FILTERS, 7, 2)
        x = layers.ReLU()(self.bn(x, root.child("stage0")))
        pool = root.child("stage0/pool")  # replaces the max-pool
        big = self.conv_bn(x, pool, STEM_FILTERS, 3, 2, relu=False)
        little = self.conv_bn(x, pool, STEM_FILTERS // self.spec.alpha, 3)
        little = self.conv_bn(little, pool, STEM_FILTERS // self.spec.alpha, 3, 2)
        little = self.conv_bn(little, pool, STEM_FILTERS, 1, relu=False)
        x = layers.ReLU()(layers.Add()([big, little]))
        return self.conv_bn(x, pool, STEM_FILTERS, 1)

    # -- whole backbone -------------------------------------------------------------------------
    def backbone(self, x, root: _Scope):
        spec = self.spec
        x = self.stem(x, root)
        for stage, num_blocks in enumerate(spec.block_sizes):
            filters = STEM_FILTERS * 2**stage
            strides = spec.block_strides[stage]
            if spec.big_little and stage < 3:
                scope = root.child(f"stage{stage + 1}")
                big = self.block_layer(x, scope.child(f"big{stage + 1}"), filters, num_blocks - 1, 2, stage,
                                       "bl", last_relu=False)
                little_scope = scope.child(f"little{stage + 1}")
                little = self.block_layer(x, little_scope, filters // spec.alpha,
                                          max(1, num_blocks // spec.beta - 1), 1, stage, "bl")
                little = self.conv_bn(little, little_scope, EXPANSION * filters, 1, relu=False)
                x = UpsampleAdd()([little, big])
                x = self.block_layer(x, scope.child(f"merge{stage + 1}"), filters, 1, strides, stage, "bl")
            elif spec.big_little:
                x = self.block_layer(x, root.child(f"stage{stage + 1}"), filters, num_blocks, strides, stage, "bl")
            else:
                x = self.block_layer(x, root, filters, num_blocks, strides, stage, "d" if spec.resnet_d else "proj")
        return x


def build_backbone(images, spec: ResNetSpec, *, bn_momentum: float = BN_MOMENTUM,
                   keep_prob: keras.Variable | None = None, zero_init_residual: bool = False):
    """Preprocessed images -> final feature map [B, h, w, 2048]; `keep_prob` set turns DropBlock on.

    Returns the feature map and the root scope (the head continues its TF1 numbering).
    """
    root = _Scope()
    return _Builder(spec, bn_momentum, keep_prob, zero_init_residual).backbone(images, root), root

