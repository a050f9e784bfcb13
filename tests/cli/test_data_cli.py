"""`finegrain fetch` and `finegrain datasets` through the real CLI entry point.

Output must not depend on the terminal the tests run in: rich takes its width from the terminal
(even under pytest's capture, through stdin), from $COLUMNS, else 80, and its colour from
FORCE_COLOR / TTY_COMPATIBLE; `plain_console` pins all of them.
"""

from __future__ import annotations

import time

import pytest

from finegrain.cli.app import main
from tests.data.conftest import closed_local_port, no_network, point_downloads_at  # noqa: F401  (no_network: autouse)


@pytest.fixture(autouse=True)
def plain_console(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fetch_synthetic_then_ready(tmp_path, capsys):
    code, out, _ = run_cli(["fetch", "synthetic", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "generated" in out
    code, out, _ = run_cli(["fetch", "synthetic", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "ready" in out and "nothing to do" in out


def test_fetch_tfds_second_run_says_ready(tmp_path, capsys, monkeypatch):
    from tests.data.conftest import register_fake_checksums
    from tests.data.fake_archives import make_flowers102

    manual = tmp_path / "manual"
    manual.mkdir()
    make_flowers102(manual)
    register_fake_checksums(monkeypatch, "flowers102", manual)
    data = tmp_path / "data"
    monkeypatch.setenv("COLUMNS", "40")  # far narrower than the lines: results must still come out whole
    args = ["fetch", "flowers102", "--data-dir", str(data), "--manual-dir", str(manual)]
    code, out, err = run_cli(args, capsys)
    assert code == 0
    assert out.splitlines() == [f"flowers102: prepared under {data} (train 3, test 3)"]  # train = train + validation
    # tfds' messages and bars went to stderr; bars whose total tfds never learnt show a count, not "n/0"
    assert "Dl Completed" in err and "Extraction completed" in err and "/0 " not in err
    code, out, _ = run_cli(args, capsys)
    assert code == 0 and out.splitlines() == [f"flowers102: ready under {data} (train 3, test 3); nothing to do"]
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["datasets", "--data-dir", str(data)], capsys)
    assert code == 0 and "flowers102" in out and "sop" in out and "yes" in out and "train 3" in out
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for name, paper in (("aircraft", "train 6,667, test 3,333"), ("pets", "train 3,680, test 3,669")):
        assert " no " in rows[name] and paper in rows[name]  # listed, not prepared, the paper's sizes


@pytest.mark.parametrize("name, archive", [("sop", "Stanford_Online_Products.zip (2.9 GiB, from http://127.0.0.1:"),
                                           ("aircraft", "fgvc-aircraft-2013b.tar.gz (2.6 GiB, from http://127.0.0.1:")])
def test_fetch_offline_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, name, archive):
    """No archive in the manual dir and the host refuses: one error line naming the files, before tfds starts
    (the same for finegrain's own builder, aircraft, as for tfds' ones)."""
    from tensorflow_datasets.core.download import downloader

    def never(*args, **kwargs):
        raise AssertionError("tensorflow-datasets started a download although the host probe failed")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", never)
    point_downloads_at(monkeypatch, name, f"http://127.0.0.1:{closed_local_port()}/{name}")
    started = time.monotonic()
    code, out, err = run_cli(["fetch", name, "--data-dir", str(tmp_path)], capsys)
    assert time.monotonic() - started < 30  # seconds, not minutes of tfds retries (a loose bound)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and out == "" and len(errors) == 1 and len(err.splitlines()) == 2  # "fetching ..." + the error
    assert "Connection refused" in errors[0] and archive in errors[0]
    assert f"--manual-dir {tmp_path / 'downloads' / 'manual'}" in errors[0] and "Traceback" not in err


@pytest.mark.parametrize("args", [["fetch", "imagenet21k"], ["fetch", "cars196", "--manual-dir", "/no/such/dir"]])
def test_bad_input_exits_2(args, capsys, tmp_path):
    code, _, err = run_cli(args + ["--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "error" in err
