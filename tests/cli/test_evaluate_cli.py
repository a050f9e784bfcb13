"""`finegrain retrieval-eval`, `eval` and `predict` through the real entry point (exit codes, stdout, stderr)."""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import pytest

from tests.cli.conftest import run
from tests.evaluate.reference import exact_tie_data, reference_metrics

os.environ.setdefault("FINEGRAIN_DATA_DIR", os.path.join(tempfile.gettempdir(), "finegrain-test-data"))


@pytest.fixture
def arrays(tmp_path):
    x, y = exact_tie_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "y_short.npy", y[:-1])
    return tmp_path, x, y


def test_embeddings_json_matches_reference(arrays, capsys):
    tmp, x, y = arrays
    code, out, _ = run(capsys, "retrieval-eval", "--embeddings", str(tmp / "x.npy"), "--labels", str(tmp / "y.npy"),
                       "--k", "1,4", "--json")
    assert code == 0
    report = json.loads(out)
    ref = reference_metrics(x, y, [1, 4], "cosine")
    assert report["recall_at_k"] == pytest.approx({"1": ref["recall"][1], "4": ref["recall"][4]})
    assert report["map_at_r"] == pytest.approx(ref["map_at_r"])
    assert report["num_lone"] == 2 and report["num_distractors"] == 8
    assert "identity" in report["definitions"]["self_exclusion"]


def test_embeddings_table_default_ks(arrays, capsys):
    tmp, _, _ = arrays
    code, out, _ = run(capsys, "retrieval-eval", "--embeddings", str(tmp / "x.npy"), "--labels", str(tmp / "y.npy"),
                       "--metric", "euclidean")
    assert code == 0
    for text in ("Recall@1", "Recall@2", "Recall@4", "Recall@8", "MAP@R", "R-precision", "lone queries skipped 2"):
        assert text in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--labels", "y_short.npy"], "300 rows but labels have 299"),
        (["--labels", "missing.npy"], "does not exist"),
        (["--labels", "y.npy", "--k", "1,300"], "K=300 is larger than the gallery"),
        (["--labels", "y.npy", "--k", "one"], "comma-separated"),
        (["--labels", "y.npy", "--metric", "dot"], "unknown metric"),
        (["--labels", "y.npy", "--plot", "p.png"], "do not have"),
        ([], "go together"),
    ],
)
def test_bad_input_is_one_line_exit_2(arrays, capsys, args, message):
    tmp, _, _ = arrays
    argv = ["retrieval-eval", "--embeddings", str(tmp / "x.npy")]
    argv += [str(tmp / a) if a.endswith((".npy", ".png")) else a for a in args]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_help_prints_definitions(capsys):
    code, out, _ = run(capsys, "retrieval-eval", "--help")
    assert code == 0
    for text in ("by identity", "lower gallery index", "MAP@R", "distractors", "skipped"):
        assert text in out


# ------------------------------------------------------------------------------------------------
# End to end: a real (tiny) run directory trained by finegrain.train on the synthetic set.


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from finegrain.train import engine
    from finegrain.train.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "eval-test",
        "model": {"arch": "tiny_test_net", "init": None},
        "data": {"source": "synthetic", "image_size": 32},
        "train": {"epochs": 1, "batch_size": 16, "steps_per_epoch": 3, "base_lr": 0.05, "warmup_epochs": 0.0},
        "eval": {"every_epochs": 1, "keep_best": 1},
    })
    path = tmp_path_factory.mktemp("runs") / "run"
    engine.tune(recipe, path)
    return path


def test_retrieval_eval_on_a_run(run_dir, tmp_path, capsys):
    plot = tmp_path / "grid.png"
    code, out, err = run(capsys, "retrieval-eval", "--model", str(run_dir), "--dataset", "synthetic", "--json",
                         "--plot", str(plot), "--save-embeddings", str(tmp_path / "emb.npy"))
    assert code == 0, err
    report = json.loads(out)
    assert report["num_gallery"] == 700 and report["num_classes"] == 5 and report["num_lone"] == 0
    assert set(report["recall_at_k"]) == {"1", "2", "4", "8"}  # the synthetic set's default Ks
    assert 0.0 <= report["map_at_r"] <= report["recall_at_k"]["8"] <= 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The saved embeddings are L2-normalised and give the same figures through --embeddings.
    emb = np.load(tmp_path / "emb.npy")
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    code, out2, _ = run(capsys, "retrieval-eval", "--embeddings", str(tmp_path / "emb.npy"), "--labels",
                        str(tmp_path / "emb.labels.npy"), "--json")
    assert json.loads(out2)["recall_at_k"] == report["recall_at_k"]


def test_saved_model_export_gives_the_same_outputs(run_dir, capsys):
    from finegrain.evaluate.classify import softmax
    from finegrain.models import load_model

    run_source, saved = load_model(run_dir), load_model(run_dir / "export")
    assert saved.description.startswith("SavedModel") and saved.card.class_names == run_source.card.class_names
    # Integer-valued images: the export's uint8 input loses nothing, so outputs must agree.
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    a, b = run_source.forward(images), saved.forward(images)
    np.testing.assert_allclose(np.asarray(b["embedding"]), np.asarray(a["embedding"]), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(softmax(np.asarray(b["logits"])),
                               softmax(run_source.card.logit_scale * np.asarray(a["logits"])), atol=1e-5)
    code, out, err = run(capsys, "eval", "--model", str(run_dir / "export"), "--dataset", "synthetic", "--json")
    assert code == 0, err
    assert json.loads(out)["num_examples"] == 200


def test_eval_on_a_run(run_dir, capsys):
    code, out, err = run(capsys, "eval", "--model", str(run_dir), "--json")  # the run knows its data and split
    assert code == 0, err
    report = json.loads(out)
    assert report["num_examples"] == 200 and report["num_classes"] == 10
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0 and 0.0 <= report["ece"] <= 1.0
    assert len(report["per_class_accuracy"]) == 10 and len(report["class_names"]) == 10
    code, out, _ = run(capsys, "eval", "--model", str(run_dir), "--dataset", "synthetic")
    assert code == 0 and "top-1 accuracy" in out and "ECE (15 bins)" in out


def test_predict_keeps_going_past_bad_images(run_dir, tmp_path, capsys):
    from finegrain.data.synthetic import ensure_synthetic

    root, _ = ensure_synthetic()
    good = sorted((root / "test").glob("*/*.jpg"))[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = run(capsys, "predict", str(good[0]), str(tmp_path / "missing.jpg"), str(broken), str(good[1]),
                         "--model", str(run_dir), "--json")
    assert code == 1
    results = json.loads(out)
    assert [r["image"] for r in results] == [str(good[0]), str(good[1])]
    assert all(len(r["top"]) == 5 for r in results)
    assert sum(t["probability"] for t in results[0]["top"]) <= 1.0 + 1e-6
    assert "missing.jpg: cannot read" in err and "broken.jpg: not a decodable image" in err
    assert "Traceback" not in err


def test_model_source_errors_are_one_line(run_dir, tmp_path, capsys):
    code, _, err = run(capsys, "retrieval-eval", "--model", str(run_dir), "--dataset", "nope")
    assert code == 2 and "unknown data set 'nope'" in err
    code, _, err = run(capsys, "eval", "--model", str(tmp_path / "nothing"), "--dataset", "synthetic")
    assert code == 2 and "does not exist" in err


def test_k_reciprocal_re_ranking_is_reachable_and_recorded(tmp_path, capsys):
    from tests.evaluate.test_rerank import _hub_case

    query, gallery, labels, _ = _hub_case()
    np.save(tmp_path / "q.npy", query)
    np.save(tmp_path / "q.labels.npy", np.array([0]))
    np.save(tmp_path / "g.npy", gallery)
    np.save(tmp_path / "g.labels.npy", labels)
    for args in (["--query", str(tmp_path / "q.npy"), "--gallery", str(tmp_path / "g.npy")],
                 ["--embeddings", str(tmp_path / "g.npy"), "--labels", str(tmp_path / "g.labels.npy")]):
        code, out, err = run(capsys, "retrieval-eval", *args, "--k", "1", "--rerank", "kreciprocal", "--json")
        assert code == 0, err
        rerank = json.loads(out)["protocol"]["rerank"]
        assert rerank["method"] == "kreciprocal" and {"k1", "k2", "lambda", "depth"} <= set(rerank)
