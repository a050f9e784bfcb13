"""A short reachability probe for download hosts, so that an offline `fetch` fails in seconds.

tensorflow-datasets retries a failed HTTP download ten times with back-off (minutes offline), so
`fetch` first opens one TCP connection to each host (or to the proxy the environment names for it)
with a short timeout and a bounded number of tries. Name resolution runs in a daemon thread so a
hanging resolver is bounded by the same timeout. Nothing is sent over the connection.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}
TIMEOUT_S = 3.0
ATTEMPTS = 2
RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class Target:
    """Where a download of `url` first connects: its host, or the proxy configured for its scheme."""

    host: str
    port: int
    via_proxy: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (proxy)" if self.via_proxy else "")


def target_of(url: str) -> Target | None:
    """The (host, port) a download of `url` connects to first; None for schemes not probed (file, gs...)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            return Target(proxy_parts.hostname, proxy_parts.port or DEFAULT_PORTS.get(proxy_parts.scheme, 80), True)
    return Target(parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme])


def _resolve(target: Target, timeout: float) -> list[tuple]:
    """getaddrinfo with a deadline (the resolver has none of its own we can set)."""
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=run, name=f"probe-resolve-{target.host}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"name lookup took over {timeout:g} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["infos"]  # type: ignore[return-value]


def _connect_once(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    infos = _resolve(target, timeout)
    error: OSError = ConnectionError("no address")
    for family, kind, proto, _, address in infos:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g} s")
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left)
            try:
                sock.connect(address)
                return
            except socket.timeout:
                error = TimeoutError(f"no answer within {timeout:g} s")
            except OSError as e:
                error = e
    raise error


def describe(error: BaseException) -> str:
    """A short reason: the exception's whole first line (never cut), or only its class name if that is long."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    return first if first and len(first) <= 300 else type(error).__name__


def _socket_reason(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return f"name lookup failed: {error.strerror or describe(error)}"
    return error.strerror or describe(error)  # "Connection refused", not "[Errno 111] Connection refused"


def probe(target: Target, *, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> str | None:
    """None if `target` accepts a TCP connection within `attempts` tries of `timeout` seconds, else why not."""
    reason = "not tried"
    for attempt in range(max(attempts, 1)):
        if attempt:
            time.sleep(RETRY_PAUSE_S)
        try:
            _connect_once(target, timeout)
            return None
        except OSError as e:  # includes socket.gaierror, TimeoutError, ConnectionRefusedError
            reason = _socket_reason(e)
    return f"{reason} ({attempts} tries)" if attempts > 1 else reason


def unreachable(urls: list[str], *, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> dict[Target, str]:
    """{target: reason} for the distinct hosts of `urls` that do not answer (probed in parallel)."""
    targets = sorted({t for t in map(target_of, urls) if t is not None}, key=str)
    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        reasons = list(pool.map(lambda t: probe(t, timeout=timeout, attempts=attempts), targets))
    return {t: r for t, r in zip(targets, reasons) if r is not None}
