"""Official TF1 checkpoint import: every variable of the manifests maps, values land where they belong."""

from __future__ import annotations

import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.models import create_model
from finegrain.models.tf1 import checkpoint_head, load_tf1_checkpoint, resolve_checkpoint, tf1_variable_map
from tests.models.conftest import fake_values, read_manifest, training_extras, write_tf1_checkpoint

ARCHS = ["resnet50", "assemble_resnet50", pytest.param("assemble_resnet152", marks=pytest.mark.slow)]


@pytest.mark.parametrize("arch", ARCHS)
def test_model_variables_are_exactly_the_manifest(arch, built_models):
    model = built_models(arch)
    mine = {name: tuple(v.shape) for name, v in tf1_variable_map(model).items()}
    assert mine == dict(read_manifest(arch))


@pytest.mark.parametrize("arch", ARCHS)
def test_import_assigns_every_variable_its_value(arch, built_models, tmp_path):
    manifest = read_manifest(arch)
    values = fake_values(manifest, seed=len(manifest))
    write_tf1_checkpoint(tmp_path / "ckpt", values, extra=training_extras(values))
    model = built_models(arch)

    report = load_tf1_checkpoint(model, tmp_path / "ckpt")  # the directory form

    assert sorted(report.loaded) == sorted(values)  # nothing unmapped, nothing skipped
    assert report.skipped_head == []
    assert set(report.ignored) == {"global_step", f"{manifest[0][0]}/Momentum"}
    targets = tf1_variable_map(model)
    assert set(targets) == set(values)
    for name, expected in values.items():
        np.testing.assert_array_equal(np.asarray(targets[name].numpy()), expected, err_msg=name)


@pytest.fixture(scope="module")
def r50_checkpoint(tmp_path_factory):
    values = fake_values(read_manifest("resnet50"), seed=1)
    prefix = write_tf1_checkpoint(tmp_path_factory.mktemp("r50") / "ckpt", values, step=77)
    return prefix, values


def test_prefix_and_file_forms_resolve(r50_checkpoint):
    prefix, _ = r50_checkpoint
    assert resolve_checkpoint(prefix) == str(prefix)
    assert resolve_checkpoint(f"{prefix}.index") == str(prefix)
    assert resolve_checkpoint(f"{prefix}.data-00000-of-00001") == str(prefix)
    assert resolve_checkpoint(prefix.parent) == str(prefix)
    assert checkpoint_head(prefix) == (1001, 0)


def test_create_model_fine_tune_loads_backbone_not_classifier(r50_checkpoint):
    prefix, values = r50_checkpoint
    model = create_model("resnet50", num_classes=7, weights=prefix)
    targets = tf1_variable_map(model)
    for name, value in values.items():
        if "/dense/" in name:
            continue
        np.testing.assert_array_equal(targets[name].numpy(), value, err_msg=name)
    assert tuple(model.get_layer("dense").kernel.shape) == (2048, 7)
    np.testing.assert_array_equal(model.get_layer("dense").bias.numpy(), np.zeros(7))  # fresh head


def test_keras_weights_file_round_trip(r50_checkpoint, tmp_path):
    prefix, values = r50_checkpoint
    model = create_model("resnet50", weights=prefix)
    model.save_weights(tmp_path / "r50.weights.h5")
    again = create_model("resnet50", weights=tmp_path / "r50.weights.h5")
    name = "resnet_model/conv2d_13/kernel"
    np.testing.assert_array_equal(tf1_variable_map(again)[name].numpy(), values[name])


def _expect_error(model, path, *words, head="auto"):
    with pytest.raises(UserError) as info:
        load_tf1_checkpoint(model, path, head=head)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def fresh_r50():
    return create_model("resnet50")


def test_wrong_arch_is_one_clear_error(r50_checkpoint, built_models):
    prefix, _ = r50_checkpoint
    _expect_error(built_models("assemble_resnet50"), prefix, "does not match model 'assemble_resnet50'",
                  "resnet_model/stage0/conv2d/kernel", "resnet_model/batch_normalization/beta",
                  "it looks like a 'resnet50' checkpoint")


def test_missing_variable_is_named(fresh_r50, tmp_path):
    values = fake_values(read_manifest("resnet50"), seed=2)
    del values["resnet_model/batch_normalization_7/moving_mean"]
    prefix = write_tf1_checkpoint(tmp_path, values)
    _expect_error(fresh_r50, prefix, "lacks", "resnet_model/batch_normalization_7/moving_mean")


def test_unexpected_variable_is_named(fresh_r50, tmp_path):
    values = fake_values(read_manifest("resnet50"), seed=3)
    values["resnet_model/conv2d_99/kernel"] = np.zeros((1, 1, 2, 2), np.float32)
    prefix = write_tf1_checkpoint(tmp_path, values)
    _expect_error(fresh_r50, prefix, "resnet_model/conv2d_99/kernel")


def test_mis_shaped_variable_is_named(fresh_r50, tmp_path):
    values = fake_values(read_manifest("resnet50"), seed=4)
    values["resnet_model/conv2d_5/kernel"] = np.zeros((3, 3, 256, 64), np.float32)
    prefix = write_tf1_checkpoint(tmp_path, values)
    _expect_error(fresh_r50, prefix, "resnet_model/conv2d_5/kernel", "[3, 3, 256, 64]", "[1, 1, 256, 64]")


def test_required_head_must_fit(fresh_r50, tmp_path):
    values = fake_values(read_manifest("resnet50"), seed=5)
    values["resnet_model/dense/kernel"] = np.zeros((2048, 10), np.float32)
    values["resnet_model/dense/bias"] = np.zeros((10,), np.float32)
    prefix = write_tf1_checkpoint(tmp_path, values)
    _expect_error(fresh_r50, prefix, "resnet_model/dense/", head="require")
    assert load_tf1_checkpoint(fresh_r50, prefix).skipped_head == ["resnet_model/dense/bias",
                                                                   "resnet_model/dense/kernel"]


def test_truncated_data_file_is_one_clear_error(fresh_r50, tmp_path):
    values = fake_values(read_manifest("resnet50"), seed=6)
    prefix = write_tf1_checkpoint(tmp_path, values)
    data = tmp_path / f"{prefix.name}.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    before = fresh_r50.get_layer("conv2d").kernel.numpy().copy()
    _expect_error(fresh_r50, prefix, "cannot read TF1 checkpoint", "truncated or corrupt")
    np.testing.assert_array_equal(fresh_r50.get_layer("conv2d").kernel.numpy(), before)  # untouched


def test_corrupt_index_file_is_one_clear_error(fresh_r50, tmp_path):
    prefix = write_tf1_checkpoint(tmp_path, fake_values(read_manifest("resnet50"), seed=7))
    index = tmp_path / f"{prefix.name}.index"
    index.write_bytes(index.read_bytes()[:40])
    _expect_error(fresh_r50, prefix, "cannot read TF1 checkpoint")


def test_wrong_paths_are_clear_errors(fresh_r50, tmp_path):
    _expect_error(fresh_r50, tmp_path / "nope" / "model.ckpt-1", "no TF1 checkpoint at")
    _expect_error(fresh_r50, tmp_path, "has no `checkpoint` file")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model.ckpt-5"\n')
    _expect_error(fresh_r50, tmp_path, "model.ckpt-5.index does not exist")
    with pytest.raises(UserError, match="does not exist"):
        create_model("resnet50", weights=tmp_path / "missing.weights.h5")
