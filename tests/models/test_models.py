"""The model family: SPEC parameter counts, forward shapes, head variants, mixed precision, surgery."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.models import (
    create_model,
    get_dropblock_keep_prob,
    list_models,
    replace_classifier,
    set_bn_momentum,
    set_dropblock_keep_prob,
)
from finegrain.models.layers import DropBlock

SPEC_PARAMS = {  # the paper's and the original checkpoints': trainable / non-trainable at 1001 classes
    "resnet50": (25_559_081, 53_120),
    "assemble_resnet50": (41_848_489, 77_312),
    "assemble_resnet152": (117_006_249, 249_600),
}


def _count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def _images(height: int, width: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3)).astype(np.uint8)


def _numpy(outputs: dict) -> dict:
    return {k: np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(v, "float32"))) for k, v in outputs.items()}


def test_registry_lists_the_family_and_rejects_unknown_names():
    assert list_models()[:4] == ["resnet50", "assemble_resnet50", "assemble_resnet152", "assemble_resnet50_ir"]
    with pytest.raises(UserError, match="unknown model 'resnet51'; known models: resnet50, assemble_resnet50"):
        create_model("resnet51")
    with pytest.raises(UserError, match="pooling"):
        create_model("resnet50", pooling="max")
    with pytest.raises(UserError, match="head"):
        create_model("resnet50", head="arcface")


R152 = pytest.param("assemble_resnet152", marks=pytest.mark.slow)  # ~10-20 s to build; built once per session


@pytest.mark.parametrize("arch", ["resnet50", "assemble_resnet50", R152, "assemble_resnet50_ir"])
def test_parameter_counts_equal_the_spec_and_the_registry(arch, built_models):
    from finegrain.models.registry import model_entry

    model = built_models(arch)
    counts = (_count(model.trainable_weights), _count(model.non_trainable_weights))
    assert counts == model_entry(arch).parameters  # what `finegrain models` prints without building
    assert counts == SPEC_PARAMS.get(arch, counts)


@pytest.mark.parametrize("arch", ["resnet50", "assemble_resnet50", R152, "assemble_resnet50_ir"])
def test_forward_shapes_square_and_non_square(arch, built_models):
    model = built_models(arch)
    for (height, width), feature_hw in (((64, 64), (2, 2)), ((64, 96), (2, 3))):
        out = model(_images(height, width), training=False)
        assert tuple(out["features"].shape) == (2, *feature_hw, 2048)
        assert tuple(out["embedding"].shape) == (2, 2048)
        assert tuple(out["logits"].shape) == (2, 1001)
        assert np.isfinite(_numpy(out)["logits"]).all()


def test_uint8_and_float_inputs_give_equal_outputs():
    model = create_model("assemble_resnet50", num_classes=10)
    images = _images(64, 64)
    as_uint8 = _numpy(model(images, training=False))
    as_float = _numpy(model(images.astype(np.float32), training=False))
    for key in as_uint8:
        np.testing.assert_allclose(as_uint8[key], as_float[key], rtol=1e-6, atol=1e-6, err_msg=key)


def test_gem_embedding_and_cosine_head_variants():
    images = _images(64, 64)
    avg = create_model("resnet50", num_classes=5)
    gem = create_model("resnet50", num_classes=5, pooling="gem", embedding_size=32, head="cosine")
    out = _numpy(gem(images, training=False))
    assert out["embedding"].shape == (2, 32) and out["logits"].shape == (2, 5)
    assert np.abs(out["logits"]).max() <= 1.0 + 1e-5  # cosine similarities
    kernel = np.asarray(gem.get_layer("cosine_dense").kernel.numpy())
    expected = (out["embedding"] / np.linalg.norm(out["embedding"], axis=1, keepdims=True)) @ (
        kernel / np.linalg.norm(kernel, axis=0, keepdims=True))
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-4, atol=1e-5)
    assert [layer.name for layer in gem.layers if "embedding" in layer.name] == [
        "embedding_dense", "embedding_dense_batch_normalization"]
    # GeM differs from average pooling on the same feature map.
    features = _numpy(avg(images, training=False))["features"]
    pooled_gem = gem.get_layer("gem_pool")(features)
    assert not np.allclose(np.asarray(pooled_gem), features.mean(axis=(1, 2)))
    # Linear head on an embedding: dense on ReLU(embedding), embedding taken before the ReLU.
    linear = create_model("resnet50", num_classes=5, embedding_size=16)
    out = _numpy(linear(images, training=False))
    assert (out["embedding"] < 0).any()
    dense = linear.get_layer("dense")
    np.testing.assert_allclose(out["logits"], np.maximum(out["embedding"], 0) @ dense.kernel.numpy()
                               + dense.bias.numpy(), rtol=1e-4, atol=1e-5)


def test_mixed_bfloat16_forward_pass():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = create_model("assemble_resnet50", num_classes=10, embedding_size=8, dropblock=True)
        out = model(_images(64, 96), training=True)
        assert "bfloat16" in str(out["features"].dtype)
        assert "float32" in str(out["logits"].dtype) and "float32" in str(out["embedding"].dtype)
        assert np.isfinite(_numpy(out)["logits"]).all()
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name


def test_replace_classifier_keeps_every_other_weight():
    model = create_model("resnet50", embedding_size=16)
    images = _images(64, 64)
    before = _numpy(model(images, training=False))
    for head in ("linear", "cosine"):
        new = replace_classifier(model, 7, head=head)
        after = _numpy(new(images, training=False))
        assert after["logits"].shape == (2, 7)
        np.testing.assert_allclose(after["embedding"], before["embedding"], rtol=1e-6)
        np.testing.assert_allclose(after["features"], before["features"], rtol=1e-6)
        old_layers = {layer.name: layer for layer in model.layers}
        kept = [layer for layer in new.layers if layer.weights and layer.name not in ("dense", "cosine_dense")]
        assert len(kept) == len([layer for layer in model.layers if layer.weights]) - 1
        for layer in kept:
            for mine, theirs in zip(layer.get_weights(), old_layers[layer.name].get_weights()):
                np.testing.assert_array_equal(mine, theirs)


def test_dropblock_keep_prob_is_one_shared_variable():
    model = create_model("assemble_resnet50", num_classes=3, dropblock=True)
    dropblocks = [layer for layer in model._flatten_layers() if isinstance(layer, DropBlock)]
    # 4 per projecting block (shortcut BN, BN1, SK, BN3), 3 per identity block, in stages 3 and 4:
    # big3 (1 + 4 blocks), little3 (1), merge3 (1), stage4 (1 + 2)
    assert len(dropblocks) == (4 + 3 * 4) + 4 + 4 + (4 + 3 * 2)
    assert len({id(layer.keep_prob) for layer in dropblocks}) == 1
    assert get_dropblock_keep_prob(model) == 1.0
    set_dropblock_keep_prob(model, 0.85)
    assert get_dropblock_keep_prob(model) == pytest.approx(0.85)
    assert {layer.gamma_scale for layer in dropblocks} == {0.25, 1.0}
    # One extra non-trainable scalar: the shared keep-prob (counted once).
    assert _count(model.non_trainable_weights) == SPEC_PARAMS["assemble_resnet50"][1] + 1
    with pytest.raises(UserError, match="no DropBlock"):
        set_dropblock_keep_prob(create_model("resnet50"), 0.9)
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        set_dropblock_keep_prob(model, 0.0)


def test_set_bn_momentum_reaches_nested_batchnorms():
    model = create_model("assemble_resnet50_ir", num_classes=3)
    set_bn_momentum(model, 0.9)
    momenta = {layer.momentum for layer in model._flatten_layers()
               if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}


def test_zero_init_residual_zeroes_only_the_last_gamma_of_each_block():
    import keras as _keras

    def zero_gammas(model):
        bns = [l for l in model.layers if isinstance(l, _keras.layers.BatchNormalization)]
        return sum(not np.any(np.asarray(l.gamma.value)) for l in bns), len(bns)

    zeroed, total = zero_gammas(create_model("resnet50", num_classes=10, zero_init_residual=True))
    assert zeroed == 16 and total == 53  # one per bottleneck block (3+4+6+3); stem and shortcuts keep 1
    assert zero_gammas(create_model("resnet50", num_classes=10))[0] == 0  # faithful default
