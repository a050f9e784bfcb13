"""The index library: a killed build resumes to the same index, add appends, search ranks, types agree,
the card and the export parity are recorded (the CLI end to end: tests/cli/test_index_cli.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from finegrain.errors import UserError
from finegrain.evaluate import index_faiss
from finegrain.evaluate.index import add_to_index, build_index, search_index, settings_for
from finegrain.evaluate.index_store import read_index, work_directory

WORKER = Path(__file__).with_name("index_kill_worker.py")
CHUNK, BATCH = 32, 16  # batches never straddle chunks: a resumed build sees the same batches


def build(run_dir, data, out, **options):
    """The build the kill test runs in a subprocess and again in-process (same plan)."""
    from finegrain.data import load_split
    from finegrain.models import load_model

    loaded = load_model(run_dir)
    split = load_split(data, "all")
    settings = settings_for(loaded, split, tta=options.pop("tta", None))
    return build_index(out, loaded, str(run_dir), split, str(data), settings=settings, batch_size=BATCH,
                       chunk_size=CHUNK, **options)


def vectors(directory) -> np.ndarray:
    stored = read_index(directory)
    return stored.index.reconstruct_n(0, len(stored))


@pytest.fixture(scope="module")
def test_folder(synthetic_root) -> Path:
    return synthetic_root / "test"


@pytest.fixture(scope="module")
def reference_index(retrieval_run, test_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("index") / "flat"
    build(retrieval_run, test_folder, out, export=retrieval_run / "export")
    return out


def test_killed_build_resumes_to_the_same_index(retrieval_run, test_folder, reference_index, tmp_path):
    out = tmp_path / "index"
    done = subprocess.run([sys.executable, str(WORKER), str(retrieval_run), str(test_folder), str(out), "3"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    partial = work_directory(out)
    assert not out.exists() and len(list(partial.glob("chunk-*.npz"))) == 3
    build(retrieval_run, test_folder, out)  # the same plan: continues after chunk 3
    assert not partial.exists()
    np.testing.assert_array_equal(vectors(out), vectors(reference_index))
    mine, theirs = read_index(out), read_index(reference_index)
    assert mine.ids == theirs.ids and (mine.labels == theirs.labels).all()


def test_partial_build_of_another_plan_is_refused_then_discarded_with_force(retrieval_run, test_folder, tmp_path):
    out = tmp_path / "index"
    work_directory(out).mkdir()
    (work_directory(out) / "plan.json").write_text(json.dumps({"chunk_size": 1, "other": True}))
    with pytest.raises(UserError, match="partial build of another"):
        build(retrieval_run, test_folder, out)
    build(retrieval_run, test_folder, out, force=True)
    assert len(read_index(out)) == 200


def test_card_parity_and_every_image_finds_itself(reference_index):
    stored = read_index(reference_index)
    card = stored.card
    assert card["parity"]["images"] == 8 and card["parity"]["min_cosine"] >= 0.999
    assert card["model"]["arch"] == "tiny_test_net" and len(card["model"]["weights_sha256"]) == 64
    assert card["gallery"]["count"] == 200 and card["embedding"]["tta"] == "none"
    assert card["index"] == {"type": "flat", "faiss_factory": "Flat", "search_parameters": "", "dim": 16,
                             "count": 200, "recall_at_10_vs_exact": None}
    x = vectors(reference_index)
    _, rows = search_index(stored, x, 3)
    assert (rows[:, 0] == np.arange(200)).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)


def test_existing_index_is_kept_without_force(retrieval_run, test_folder, reference_index):
    before = (reference_index / "index.faiss").stat().st_mtime_ns
    with pytest.raises(UserError, match="--force"):
        build(retrieval_run, test_folder, reference_index)
    assert (reference_index / "index.faiss").stat().st_mtime_ns == before


def test_add_appends_new_images_only(retrieval_run, synthetic_root, test_folder, reference_index, tmp_path):
    from finegrain.data import load_split
    from finegrain.models import load_model

    out = tmp_path / "grown"
    build(retrieval_run, test_folder, out)
    loaded = load_model(retrieval_run)
    card, added, skipped = add_to_index(out, loaded, load_split(synthetic_root, "all"), str(synthetic_root),
                                        batch_size=BATCH, chunk_size=CHUNK)
    assert (added, skipped) == (1200, 200)
    stored = read_index(out)
    assert len(stored) == 1400 and card["gallery"]["count"] == 1400 and card["added"][0]["count"] == 1200
    assert stored.ids[:200] == read_index(reference_index).ids
    assert stored.class_names == read_index(reference_index).class_names  # same folders, same labels
    new = stored.index.reconstruct_n(200, 1200)
    _, rows = search_index(stored, new, 1)
    scores = (new * stored.index.reconstruct_n(0, 1400)[rows[:, 0]]).sum(1)
    assert np.allclose(scores, 1, atol=1e-5)  # each added image's nearest item is itself (or an exact twin)
    assert not work_directory(out, "add-partial").exists()


@pytest.mark.parametrize("kind", ["fp16", "ivf", "hnsw"])
def test_other_index_types_agree_with_exact(kind, retrieval_run, test_folder, reference_index, tmp_path):
    card = build(retrieval_run, test_folder, tmp_path / kind, index_type=kind)
    exact, other = read_index(reference_index), read_index(tmp_path / kind)
    x = vectors(reference_index)
    truth = search_index(exact, x, 10)[1]
    found = search_index(other, x, 10)[1]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    recall = card["index"]["recall_at_10_vs_exact"]
    if kind == "fp16":
        assert recall is None and overlap >= 0.95
    else:
        assert 0.5 <= recall <= 1.0 and overlap >= 0.5


def test_recall_against_exact_counts_shared_neighbours():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    flat = index_faiss.new_index("Flat", 8)
    flat.add(x)
    rows = index_faiss.sample_rows(300, 50)
    exact = index_faiss.exact_neighbours([x[:100], x[100:]], x[rows], 11)
    assert index_faiss.recall_against_exact(flat, x[rows], rows, exact) == 1.0
    coarse = index_faiss.new_index("IVF4,SQ8", 8, lambda: x)
    coarse.add(x)
    index_faiss.set_search_parameters(coarse, "nprobe=1")
    assert index_faiss.recall_against_exact(coarse, x[rows], rows, exact) < 1.0
    with pytest.raises(UserError, match="unknown index type"):
        index_faiss.check_type("annoy")


def test_protocol_item_hash_changes_with_the_gallery():
    from finegrain.evaluate.protocol import items_hash

    ids, labels = ["a.jpg", "b.jpg", "c.jpg"], np.array([0, 1, 1])
    base = items_hash(ids, labels)
    assert base == items_hash(list(ids), labels.copy())
    assert base != items_hash(ids[:2], labels[:2])
    assert base != items_hash(["a.jpg", "b.jpg", "d.jpg"], labels)
    assert base != items_hash(ids, np.array([0, 1, 0]))


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_second_build_or_add_stops_while_another_writes_the_index(retrieval_run, test_folder, reference_index, tmp_path):
    import fcntl

    from finegrain.data import load_split
    from finegrain.models import load_model

    out = tmp_path / "busy"
    before = sorted(p.name for p in tmp_path.iterdir())
    with open(work_directory(out, "lock"), "a") as held:  # as a running build holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another command is building or adding to the index .*busy"):
            build(retrieval_run, test_folder, out)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, ".busy.lock"})  # no chunks, no index
    build(retrieval_run, test_folder, out)  # released (as by the other command's exit): it builds
    np.testing.assert_array_equal(vectors(out), vectors(reference_index))
    with open(work_directory(out, "lock"), "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UserError, match="another command is building or adding to the index"):
            add_to_index(out, load_model(retrieval_run), load_split(test_folder, "all"), str(test_folder))
    with pytest.raises(UserError, match="is not an index"):
        add_to_index(tmp_path / "none", load_model(retrieval_run), load_split(test_folder, "all"), str(test_folder))
    assert not work_directory(tmp_path / "none", "lock").exists()
