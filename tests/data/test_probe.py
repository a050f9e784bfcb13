"""The download-host probe: bounded in time, offline-safe (only this machine's ports are contacted)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from finegrain.data import probe
from finegrain.errors import UserError
from tests.data.conftest import closed_local_port, point_downloads_at


def test_closed_port_is_reported_and_a_listening_one_is_not():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        open_port = server.getsockname()[1]
        down = probe.unreachable([f"http://127.0.0.1:{closed_local_port()}/a.tgz", f"http://127.0.0.1:{open_port}/b.tgz",
                                  "file:///not/probed.tgz"])
    assert [(t.port, reason) for t, reason in down.items()] == [(t.port, "Connection refused (2 tries)") for t in down]
    assert open_port not in {t.port for t in down} and len(down) == 1


def test_a_hanging_name_lookup_is_bounded(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "late")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    try:
        reason = probe.probe(probe.Target("mirror.example", 443), timeout=0.2, attempts=2)
    finally:
        release.set()
    assert time.monotonic() - started < 30  # loose: the point is seconds, not a resolver's minutes
    assert reason == "name lookup took over 0.2 s (2 tries)"


def test_the_proxy_named_by_the_environment_is_probed(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:3128")
    monkeypatch.setenv("no_proxy", "")
    assert probe.target_of("https://www.robots.ox.ac.uk/x.tgz") == probe.Target("127.0.0.1", 3128, via_proxy=True)
    monkeypatch.setenv("no_proxy", "robots.ox.ac.uk")
    assert probe.target_of("https://www.robots.ox.ac.uk/x.tgz") == probe.Target("www.robots.ox.ac.uk", 443)
    assert probe.target_of("ftp://cs.stanford.edu/x.zip").port == 21 and probe.target_of("gs://bucket/x") is None


def test_exception_text_is_quoted_whole_or_not_at_all():
    assert probe.describe(ValueError("first line\nsecond line")) == "first line"
    assert probe.describe(ValueError("word " * 70)) == "ValueError"  # too long for one line: name only, never cut
    assert probe.describe(ValueError("")) == "ValueError"


def test_fetch_with_an_unreachable_host_fails_before_tfds_in_one_line(tmp_path, monkeypatch):
    from tensorflow_datasets.core.download import downloader

    from finegrain.data.tfds_source import fetch_tfds

    def never(*args, **kwargs):
        raise AssertionError("download started")

    monkeypatch.setattr(downloader._Downloader, "_sync_download", never)
    point_downloads_at(monkeypatch, "cars196", f"http://127.0.0.1:{closed_local_port()}")
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "car_devkit.tgz").write_bytes(b"x")  # present (if wrong): not needed from the network
    with pytest.raises(UserError) as info:
        fetch_tfds("cars196", data_dir=tmp_path / "data", manual_dir=manual, progress=False)
    message = str(info.value)
    assert "\n" not in message and "unreachable" in message and "Connection refused" in message
    put = message.split("Put these files into")[1].split("Replace these files")[0]
    assert all(name in put for name in ("cars_train.tgz", "cars_test.tgz", "cars_test_annos_withlabels.mat"))
    assert "car_devkit.tgz" not in put and f"--manual-dir {manual}" in message


def test_no_probe_when_every_archive_is_in_the_manual_dir(tmp_path, monkeypatch):
    from finegrain.data import tfds_source
    from tests.data.conftest import register_fake_checksums
    from tests.data.fake_archives import make_sop

    def forbidden(*args, **kwargs):
        raise AssertionError("probed although nothing is downloaded")

    monkeypatch.setattr(probe, "unreachable", forbidden)
    manual = tmp_path / "manual"
    manual.mkdir()
    make_sop(manual)
    register_fake_checksums(monkeypatch, "sop", manual)
    tfds_source._check_hosts(tfds_source.get_record("sop"), tmp_path / "data", manual)  # returns quietly


def test_no_probe_for_an_archive_an_earlier_run_downloaded(tmp_path, monkeypatch):
    from tensorflow_datasets.core.download import resource as resource_lib

    from finegrain.data import tfds_source

    def forbidden(*args, **kwargs):
        raise AssertionError("probed although tfds has the archive in its download cache")

    monkeypatch.setattr(probe, "unreachable", forbidden)
    record = tfds_source.get_record("sop")
    (archive,) = tfds_source.manual_files(record)
    cache = tmp_path / "data" / "downloads" / record.tfds_name
    cache.mkdir(parents=True)
    cached = cache / resource_lib.get_dl_fname(archive.url, archive.checksum)
    cached.write_bytes(b"zip")
    cached.with_name(cached.name + ".INFO").write_text("{}")
    tfds_source._check_hosts(record, tmp_path / "data", tmp_path / "manual")  # returns quietly
