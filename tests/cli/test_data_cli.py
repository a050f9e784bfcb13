"""`finegrain fetch` and `finegrain datasets` through the real CLI entry point."""

from __future__ import annotations

import pytest

from finegrain.cli.app import main


def run_cli(args, capsys):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_fetch_synthetic_then_ready(tmp_path, capsys):
    code, text = run_cli(["fetch", "synthetic", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "generated" in text
    code, text = run_cli(["fetch", "synthetic", "--data-dir", str(tmp_path)], capsys)
    assert code == 0 and "ready" in text and "nothing to do" in text


def test_fetch_tfds_second_run_says_ready(tmp_path, capsys, monkeypatch):
    from tests.data.conftest import register_fake_checksums
    from tests.data.fake_archives import make_flowers102

    manual = tmp_path / "manual"
    manual.mkdir()
    make_flowers102(manual)
    register_fake_checksums(monkeypatch, "flowers102", manual)
    args = ["fetch", "flowers102", "--data-dir", str(tmp_path / "data"), "--manual-dir", str(manual)]
    code, text = run_cli(args, capsys)
    assert code == 0 and "prepared" in text and "train 3" in text and "test 3" in text  # train = train + validation
    code, text = run_cli(args, capsys)
    assert code == 0 and "ready" in text and "nothing to do" in text
    code, text = run_cli(["datasets", "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0 and "flowers102" in text and "sop" in text and "yes" in text and "train 3" in text


def test_fetch_failure_is_one_line_naming_files(tmp_path, capsys, monkeypatch):
    from tensorflow_datasets.core.download import downloader

    def offline(*args, **kwargs):
        raise downloader.util.DownloadError("network is unreachable")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", offline)
    code, text = run_cli(["fetch", "sop", "--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "Stanford_Online_Products.zip" in text and "--manual-dir" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("args", [["fetch", "imagenet21k"], ["fetch", "cars196", "--manual-dir", "/no/such/dir"]])
def test_bad_input_exits_2(args, capsys, tmp_path):
    code, text = run_cli(args + ["--data-dir", str(tmp_path)], capsys)
    assert code == 2 and "error" in text
