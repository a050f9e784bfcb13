"""`finegrain index build / add / info` and `finegrain search` through the installed console script, on
the SavedModel export of a tiny retrieval run (the script needs no test architecture for it); and the
protocol card of `retrieval-eval --json`."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from tests.cli.conftest import run
from tests.cli.test_model_refs_cli import finegrain_script
from tests.evaluate.conftest import retrieval_run, synthetic_root  # noqa: F401  (fixtures)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TERM": "xterm-256color"}
    return subprocess.run([finegrain_script(), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def built(retrieval_run, synthetic_root, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("cli-index") / "index"
    done = cli("index", "build", "--model", str(retrieval_run / "export"), "--data", str(synthetic_root / "test"),
               "--out", str(out), "--chunk-size", "64", "--json")
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


@pytest.mark.slow
def test_every_indexed_image_finds_itself_first(built, synthetic_root, tmp_path):  # noqa: F811
    out, card = built
    assert card["gallery"]["count"] == 200 and card["index"]["type"] == "flat"
    images = sorted(str(p) for p in (synthetic_root / "test").glob("*/*.jpg"))[::10]  # 2 of each class
    missing = str(tmp_path / "missing.jpg")
    done = cli("search", *images[:10], missing, *images[10:], "--index", str(out), "--k", "3", "--json",
               "--plot", str(tmp_path / "search.png"))
    assert done.returncode == 1, done.stderr  # the missing image fails; the others are searched
    assert f"skipped {missing}" in done.stderr and "Traceback" not in done.stderr
    results = json.loads(done.stdout)
    assert [r["query"] for r in results] == images
    assert all(r["results"][0]["item"] == os.path.realpath(r["query"]) for r in results)
    assert all(r["results"][0]["class"] == os.path.basename(os.path.dirname(r["query"])) for r in results)
    assert (tmp_path / "search.png").stat().st_size > 0


@pytest.mark.slow
def test_add_then_search_finds_the_added_images(built, synthetic_root, tmp_path, capsys):  # noqa: F811
    import shutil

    out = tmp_path / "index"
    shutil.copytree(built[0], out)
    # A folder of links: 2 indexed test images and 3 new train images per class (identity is the file
    # a link resolves to, so the test images are skipped and the train images added).
    new = tmp_path / "new"
    for folder in sorted((synthetic_root / "train").iterdir()):
        (new / folder.name).mkdir(parents=True)
        for image in sorted((synthetic_root / "test" / folder.name).glob("*.jpg"))[:2] + sorted(folder.glob("*.jpg"))[:3]:
            (new / folder.name / f"{image.parent.parent.name}-{image.name}").symlink_to(image)
    done = cli("index", "add", str(out), "--data", str(new), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["images_added"], report["images_skipped"], report["gallery"]["count"]) == (30, 20, 230)
    added = sorted(str(p) for p in new.glob("*/train-*.jpg"))[::3]
    done = cli("search", *added, "--index", str(out), "--k", "1", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["results"][0]["item"] for r in json.loads(done.stdout)] == [os.path.realpath(p) for p in added]
    code, info, _ = run(capsys, "index", "info", str(out), "--json")  # in-process: `info` needs no model
    assert code == 0 and json.loads(info)["index"]["count"] == 230
    code, table, _ = run(capsys, "index", "info", str(out))
    assert code == 0 and "230" in table and "parity" in table


def test_existing_index_needs_force(built, synthetic_root):  # noqa: F811
    out, _ = built
    done = cli("index", "build", "--model", str(out), "--data", str(synthetic_root / "test"), "--out", str(out))
    assert done.returncode == 2 and "--force" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_protocol_card_is_complete_and_its_gallery_hash_follows_the_gallery(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 8)).astype(np.float32), np.repeat(np.arange(8), 5)
    np.save(tmp_path / "g.npy", x)
    np.save(tmp_path / "g.labels.npy", y)
    np.save(tmp_path / "q.npy", x[:10])
    np.save(tmp_path / "q.labels.npy", y[:10])
    code, out, err = run(capsys, "retrieval-eval", "--query", str(tmp_path / "q.npy"), "--gallery",
                         str(tmp_path / "g.npy"), "--k", "1,2", "--per-class", "--json")
    assert code == 0, err
    report = json.loads(out)
    card = report["protocol"]
    for key in ("model", "embedding", "similarity", "recall_ks", "query", "gallery", "definitions",
                "finegrain_version", "rerank"):
        assert key in card
    assert card["recall_ks"] == [1, 2] and card["similarity"] == "cosine" and card["embedding"]["tta"] == "none"
    assert card["gallery"]["count"] == 40 and card["query"]["count"] == 10
    assert len(card["gallery"]["items_sha256"]) == 64 and report["num_evaluated"] == 10
    assert len(report["per_class"]) == 2
    np.save(tmp_path / "g.npy", x[:39])
    np.save(tmp_path / "g.labels.npy", y[:39])
    code, out, err = run(capsys, "retrieval-eval", "--query", str(tmp_path / "q.npy"), "--gallery",
                         str(tmp_path / "g.npy"), "--k", "1,2", "--json")
    assert code == 0, err
    assert json.loads(out)["protocol"]["gallery"]["items_sha256"] != card["gallery"]["items_sha256"]
