"""Knowledge distillation: the loss, the teacher targets (computed once, resumable, tied to their split)
and their lookup in the training pipeline (through shuffling and mixup), and a distilled run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from finegrain.data import load_split
from finegrain.data.pipeline import train_batches
from finegrain.errors import UserError
from finegrain.models import load_model
from finegrain.train import engine
from finegrain.train.distill import compute_targets, read_targets, teacher_lookup
from finegrain.train.losses import distillation_loss
from tests.cli.conftest import run
from tests.train.conftest import tiny_recipe

WORKER = Path(__file__).with_name("distill_worker.py")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_loss_is_t_squared_cross_entropy_of_the_softened_distributions(temperature):
    student = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], np.float32)
    teacher_logits = np.array([[1.0, 0.0, -1.0], [-0.5, 2.5, 0.0]], np.float32)
    teacher = _softmax(teacher_logits / temperature)
    expected = -temperature**2 * (teacher * np.log(_softmax(student / temperature))).sum(axis=1)
    got = distillation_loss(tf.constant(student), tf.constant(teacher), temperature).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    mixed = 0.3 * teacher + 0.7 * teacher[::-1]  # a mixup of the two teacher distributions
    expected = -temperature**2 * (mixed * np.log(_softmax(student / temperature))).sum(axis=1)
    np.testing.assert_allclose(distillation_loss(tf.constant(student), tf.constant(mixed), temperature).numpy(),
                               expected, rtol=1e-5)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    engine.tune(tiny_recipe(train={"epochs": 2, "steps_per_epoch": 10, "base_lr": 0.1}), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def targets_dir(teacher_run, tmp_path_factory) -> Path:
    """Targets computed in one go, in-process, with the worker's settings (the killed run must equal them)."""
    from tests.train.distill_worker import compute_all

    out = tmp_path_factory.mktemp("kd") / "targets"
    compute_all(str(teacher_run), str(out))
    return out


def _written_targets(out: Path, split, shift: int = 1, source: str = "synthetic") -> Path:
    """Targets written by hand: the 'teacher' says label + shift (mod C) with certainty, for every example."""
    from finegrain.train import distill

    labels = np.array([int(y) for _, y in split.dataset.as_numpy_iterator()])

    logits = 30.0 * np.eye(split.num_classes, dtype=np.float16)[(labels + shift) % split.num_classes]
    out.mkdir(parents=True)
    np.save(out / distill.LOGITS_FILE, logits)
    np.save(out / distill.LABELS_FILE, labels)
    card = {"arch": "tiny_test_net", "num_classes": split.num_classes, "label_offset": 0}
    (out / distill.INFO_FILE).write_text(json.dumps({"teacher": "hand", "teacher_card": card, "image_size": 32,
                                                      "preprocessing": "imagenet",
                                                      "split": distill.split_identity(split, source)}))
    return out


@pytest.mark.parametrize("mixup_type", [0, 1, 2])
def test_teacher_distributions_follow_their_examples_through_shuffling_and_mixup(tmp_path, mixup_type):
    split = load_split("synthetic", "train")
    lookup = teacher_lookup(_written_targets(tmp_path / "hand", split), split, "synthetic", split.num_classes, 0, 1.0)
    batches = train_batches(split, image_size=16, preprocessing="imagenet", batch_size=8, mixup_type=mixup_type,
                            seed=5, epoch=1, example_targets=lookup)
    for _, targets in batches.take(3):
        labels, teacher = np.split(targets.numpy(), 2, axis=1)
        assert labels.shape == (8, 10)
        # each example's teacher says its label + 1; mixed with the labels' weights, so rolled labels
        np.testing.assert_allclose(teacher, np.roll(labels, 1, axis=1), atol=1e-5)


def test_distill_targets_are_the_teachers_logits_in_float16(targets_dir, teacher_run):
    from finegrain.evaluate.inference import split_outputs

    targets = read_targets(targets_dir)
    split = load_split("synthetic", "train")
    teacher = load_model(teacher_run)
    outputs, labels = split_outputs(teacher.forward, teacher.card, split, image_size=32)
    assert targets.logits.dtype == np.float16 and targets.logits.shape == (split.num_examples, 10)
    np.testing.assert_allclose(targets.logits, outputs["logits"], rtol=2e-3, atol=2e-3)
    np.testing.assert_array_equal(targets.labels, labels)


def test_a_killed_computation_continues_to_the_same_targets(targets_dir, teacher_run, tmp_path):
    out = tmp_path / "killed"
    killed = subprocess.run([sys.executable, str(WORKER), str(teacher_run), str(out), "128"], timeout=600)
    assert killed.returncode == -9
    progress = json.loads((out / "progress.json").read_text())
    assert progress["done"] == 128 and not (out / "targets.json").exists()
    subprocess.run([sys.executable, str(WORKER), str(teacher_run), str(out), "0"], check=True, timeout=600)
    np.testing.assert_array_equal(read_targets(out).logits, read_targets(targets_dir).logits)
    assert not (out / "progress.json").exists()


def test_targets_of_another_split_are_refused_in_one_line(targets_dir, tmp_path, capsys):
    test_split = load_split("synthetic", "test")
    with pytest.raises(UserError, match="computed for synthetic/train \\(1,200 images\\), not for this synthetic/test"):
        teacher_lookup(targets_dir, test_split, "synthetic", 10, 0, 1.0)
    # a folder that gained one image, or renamed one: same source and split names, another item list
    folder = tmp_path / "photos"
    shutil.copytree(Path(load_split("synthetic", "train").paths[0]).parents[1], folder / "train")
    split = load_split(str(folder), "train")
    hand = _written_targets(tmp_path / "hand", split, source=str(folder))
    assert teacher_lookup(hand, split, str(folder), 10, 0, 1.0) is not None
    first = Path(split.paths[0])
    shutil.copy(first, first.with_name("copy.jpg"))
    with pytest.raises(UserError, match=f"not for this {folder}/train \\({split.num_examples + 1} images\\)"):
        teacher_lookup(hand, load_split(str(folder), "train"), str(folder), 10, 0, 1.0)
    first.with_name("copy.jpg").unlink()
    first.rename(first.with_name("renamed.jpg"))
    with pytest.raises(UserError, match="same count, other images or classes"):
        teacher_lookup(hand, load_split(str(folder), "train"), str(folder), 10, 0, 1.0)


def test_a_recipe_with_stale_targets_stops_before_the_run_directory_is_made(targets_dir, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: kd\nmodel: {{arch: tiny_test_net}}\ndata: {{source: synthetic, image_size: 32, "
                      f"train_split: test}}\ntrain: {{epochs: 1, batch_size: 8, steps_per_epoch: 1, "
                      f"kd_targets: {targets_dir}}}\n")
    code, out, err = run(capsys, "tune", "--recipe", str(recipe), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and "were computed for synthetic/train (1,200 images), not for this synthetic/test" in err
    assert not (tmp_path / "run").exists()


def test_a_1001_way_teacher_teaches_a_1000_way_student_and_back(tmp_path):
    split = load_split("synthetic", "train")
    hand = _written_targets(tmp_path / "hand", split, shift=0)
    info = json.loads((hand / "targets.json").read_text())
    logits = np.load(hand / "logits.npy")
    np.save(hand / "logits.npy", np.concatenate([np.full((len(logits), 1), 50, np.float16), logits], axis=1))
    info["teacher_card"].update(num_classes=11, label_offset=1)
    (hand / "targets.json").write_text(json.dumps(info))
    lookup = teacher_lookup(hand, split, "synthetic", 10, 0, 1.0)  # background column dropped
    labels = tf.constant([int(y) for _, y in split.dataset.take(4).as_numpy_iterator()], tf.int64)
    probabilities = lookup(tf.range(4, dtype=tf.int64), labels).numpy()
    np.testing.assert_array_equal(probabilities.argmax(axis=1), labels.numpy())
    with pytest.raises(UserError, match="scores 10 classes, the student 9"):
        teacher_lookup(hand, split, "synthetic", 9, 0, 1.0)
    student_1001 = teacher_lookup(_written_targets(tmp_path / "plain", split, shift=0), split, "synthetic", 11, 1, 1.0)
    padded = student_1001(tf.range(4, dtype=tf.int64), labels).numpy()
    assert padded.shape == (4, 11) and np.all(padded[:, 0] < 1e-6)  # the background column: the row's minimum
    np.testing.assert_array_equal(padded.argmax(axis=1), labels.numpy() + 1)


@pytest.fixture(scope="module")
def keras_teacher(tmp_path_factory) -> str:
    """keras:MobileNetV3Small with weights from a local file (as on a machine without internet)."""
    import keras

    path = tmp_path_factory.mktemp("keras") / "mnv3.weights.h5"
    keras.applications.MobileNetV3Small(weights=None).save_weights(path)
    return f"keras:MobileNetV3Small:{path}"


def test_a_keras_applications_classifier_teaches_through_the_command(keras_teacher, tmp_path, capsys):
    code, out, err = run(capsys, "distill-targets", "--teacher", keras_teacher, "--dataset", "synthetic",
                         "--split", "test", "--image-size", "32", "--out", str(tmp_path / "kd"))
    assert code == 0, err
    targets = read_targets(tmp_path / "kd")
    assert targets.logits.shape == (200, 1000) and targets.info["teacher_card"]["arch"] == "keras:MobileNetV3Small"
    with pytest.raises(UserError, match="scores 1000 classes, the student 10: distil from a teacher of the same"):
        teacher_lookup(tmp_path / "kd", load_split("synthetic", "test"), "synthetic", 10, 0, 1.0)
    code, out, err = run(capsys, "distill-targets", "--teacher", keras_teacher, "--dataset", "synthetic",
                         "--split", "test", "--image-size", "32", "--out", str(tmp_path / "kd"))
    assert code == 0 and "nothing to do" in out


def test_keras_references_fail_in_one_line():
    from finegrain.models import ModelCard, build_model

    with pytest.raises(UserError, match="keras.applications has no model 'NoSuchNet'"):
        load_model("keras:NoSuchNet")
    with pytest.raises(UserError, match="weights file /nowhere.h5 does not exist"):
        load_model("keras:ResNet50:/nowhere.h5")
    with pytest.raises(UserError, match="can teach .* but not initialise a finegrain model"):
        build_model(ModelCard("tiny_test_net", num_classes=10), "keras:ResNet50")


def _colour_folder(root: Path) -> Path:
    """Four colour classes a tiny network learns in a few steps: a teacher that is right on all of them."""
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 180, 40), "blue": (40, 60, 200), "yellow": (210, 200, 40)}
    for part, count in (("train", 40), ("test", 10)):
        for name, colour in colours.items():
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.normal(128, 40, (32, 32, 3)) * 0.6 + np.array(colour) * 0.4
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.mark.slow
@pytest.mark.skipif(not (Path(sys.executable).parent / "finegrain").exists(), reason="console script not installed")
def test_a_student_learns_faster_with_a_good_teacher_through_the_installed_script(tmp_path, capsys):
    import os

    data = _colour_folder(tmp_path / "colours")
    teacher = engine.tune(tiny_recipe(data={"source": str(data)}, train={"epochs": 3, "steps_per_epoch": 10,
                                                                         "base_lr": 0.1, "batch_size": 16}),
                          tmp_path / "teacher")
    assert teacher.summary["eval_top1"] == 1.0
    script = Path(sys.executable).parent / "finegrain"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "FINEGRAIN_PLUGINS": "tests.tiny_arch", "PYTHONPATH": str(root)}

    def finegrain(*args: str) -> str:
        result = subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    finegrain("distill-targets", "--teacher", str(tmp_path / "teacher"), "--data", str(data), "--out",
              str(tmp_path / "kd"))
    recipe = tmp_path / "student.yaml"
    recipe.write_text(f"name: student\nmodel: {{arch: tiny_test_net, init: scratch}}\ndata: {{source: {data}, "
                      "image_size: 32}\ntrain: {epochs: 1, steps_per_epoch: 4, batch_size: 16, base_lr: 0.01, "
                      "warmup_epochs: 0.0, seed: 0}\nruntime: {deterministic: true}\n")
    # The student with targets through the script; the same student without them in-process (same seed).
    finegrain("tune", "--recipe", str(recipe), "--run-dir", str(tmp_path / "distilled"), "--quiet",
              "--set", f"train.kd_targets={tmp_path / 'kd'}")
    code, _, err = run(capsys, "tune", "--recipe", str(recipe), "--run-dir", str(tmp_path / "alone"), "--quiet")
    assert code == 0, err
    accuracy = {}
    for name in ("alone", "distilled"):
        history = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        accuracy[name] = history[-1]["eval_top1"]
    assert accuracy["distilled"] > accuracy["alone"] + 0.1, accuracy


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_command_into_the_same_targets_stops_while_the_first_computes(targets_dir, teacher_run, tmp_path):
    import fcntl

    from tests.train.distill_worker import compute_all

    out = tmp_path / "busy"
    out.mkdir()
    with open(out / ".lock", "a") as held:  # as the first command holds it while it computes
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another command is computing targets into .*busy: wait"):
            compute_all(str(teacher_run), str(out))
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing of the second one was written
    compute_all(str(teacher_run), str(out))  # the lock released (as by the first one's exit): it computes
    np.testing.assert_array_equal(read_targets(out).logits, read_targets(targets_dir).logits)
    assert not (out / ".lock").exists() and not (out / "progress.json").exists()
