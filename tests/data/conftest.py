"""Shared fixtures: the tfds builders prepared offline from fake archives, the synthetic set, no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.data.fake_archives import MAKERS


LOCAL_HOSTS = (None, "localhost", "127.0.0.1", "::1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the internet: name lookups of anything but this machine fail at once."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host in LOCAL_HOSTS:
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"network blocked in tests ({host})")

    monkeypatch.setattr(socket, "getaddrinfo", local_only)


def closed_local_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def point_downloads_at(monkeypatch: pytest.MonkeyPatch, name: str, base_url: str) -> None:
    """Test-only: the builder's registered URLs moved under `base_url` (sizes, checksums, file names kept)."""
    from finegrain.data.catalog import get_record
    from finegrain.data.tfds_source import builder_cls

    cls = builder_cls(get_record(name))
    moved = {f"{base_url}/{k}/{info.filename}": info for k, (url, info) in enumerate(cls.url_infos.items())}
    monkeypatch.setattr(cls, "url_infos", moved)


def register_fake_checksums(monkeypatch: pytest.MonkeyPatch, name: str, manual: Path) -> None:
    """Test-only: make the builder accept the fake archives in `manual` (real code keeps the real checksums)."""
    from tensorflow_datasets.core.download import checksums

    from finegrain.data.catalog import get_record
    from finegrain.data.tfds_source import archive_name, builder_cls

    cls = builder_cls(get_record(name))
    fake = {
        url: checksums.compute_url_info(manual / archive_name(url, info))  # size, sha256, file name of the fake
        for url, info in cls.url_infos.items()
        if (manual / archive_name(url, info)).exists()
    }
    monkeypatch.setattr(cls, "url_infos", fake)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, list[int]]]]:
    """A data dir with every tfds data set prepared by the real download_and_prepare from fake archives."""
    from finegrain.data.tfds_source import fetch_tfds

    data_dir = tmp_path_factory.mktemp("data")
    expected = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, make in MAKERS.items():
            manual = tmp_path_factory.mktemp(f"manual_{name}")
            expected[name] = make(manual)
            register_fake_checksums(mp, name, manual)
            assert fetch_tfds(name, data_dir=data_dir, manual_dir=manual, progress=False) is True
    return data_dir, expected


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the synthetic set (generated once per test session)."""
    from finegrain.data.synthetic import ensure_synthetic

    data_dir = tmp_path_factory.mktemp("synthetic_data")
    ensure_synthetic(data_dir)
    return data_dir
