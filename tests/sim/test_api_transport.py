"""The API's listeners and its answers to bad requests, against a real daemon subprocess.

Unix socket permissions, refusing a second daemon on a live socket, TCP only with a
token (and TLS when a certificate is given), and a JSON 4xx for every malformed request.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import stat
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from test_daemon import SCENARIO, DaemonProcess

pytestmark = pytest.mark.sim

TOKEN = "transport-test-token-0123456789"
# The same tunnels, named so that mouse-0's key has a '+' (query-string encoding tests).
PLUS_SCENARIO = SCENARIO.replace('name = "daemon-test"', 'name = "transport-1"')


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    d = DaemonProcess(tmp_path, scenario=PLUS_SCENARIO)
    d.start()
    await d.wait_ticks(1)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


async def test_socket_and_directory_modes(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    assert stat.S_IMODE(daemon.socket.parent.stat().st_mode) == 0o750
    assert daemon.stop() == 0
    assert not daemon.socket.exists()  # removed on a clean stop


async def test_a_second_daemon_does_not_steal_a_live_socket(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    (tmp_path / "other").mkdir()
    other = DaemonProcess(tmp_path / "other")
    other.socket = daemon.socket
    other.start()
    assert other.proc is not None
    assert other.proc.wait(30) == 2
    assert f"another daemon is listening on {daemon.socket}" in other.log
    assert (await daemon.get("/v1/health"))["ticks"] >= 1  # the first one is untouched


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--listen", "127.0.0.1:1"), "--listen needs --token-file"),
        (("--listen", "nonsense"), "expected HOST:PORT"),
        (("--tls-cert", "/nonexistent"), "--tls-cert and --tls-key go together"),
    ],
)
def test_bad_listener_configuration_is_refused(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    d = DaemonProcess(tmp_path, extra=extra)
    d.start()
    assert d.proc is not None
    assert d.proc.wait(30) == 2
    assert message in d.log
    assert "Traceback" not in d.log


def _make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tcp_with_tls_and_token(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cert, key = _make_cert(tmp_path)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    d = DaemonProcess(tmp_path, extra=(
        "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
        "--tls-cert", str(cert), "--tls-key", str(key),
    ))
    d.start()
    try:
        await d.wait_ticks(1)
        ctx = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}/v1/health"
        async with aiohttp.ClientSession() as s:
            async with s.get(url, ssl=ctx) as r:
                assert r.status == 401
            async with s.get(url, ssl=ctx, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200 and (await r.json())["ticks"] >= 1
            with pytest.raises(aiohttp.ClientError):
                async with s.get(f"http://127.0.0.1:{port}/v1/health",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                    await r.read()
        # the unix socket needs no token
        assert (await d.get("/v1/health"))["ticks"] >= 1
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


async def _request(
    d: DaemonProcess, method: str, path: str, **kwargs: object
) -> tuple[int, dict[str, object]]:
    async with d.session() as s, s.request(method, path, **kwargs) as r:  # type: ignore[arg-type]
        assert r.content_type == "application/json", (path, r.content_type)
        return r.status, await r.json()


async def test_bad_requests_get_a_json_4xx(daemon: DaemonProcess) -> None:
    keys = [p["public_key"] for p in (await daemon.get("/v1/peers"))["peers"]]
    key = keys[0]
    assert "+" in key
    good = {"interface": "wg0", "public_key": key, "mode": "vanilla"}
    cases: list[tuple[str, str, dict[str, object], int, str | None]] = [
        ("POST", "/v1/overrides", {"data": b"x" * (65 * 1024),
                                   "headers": {"Content-Type": "application/json"}}, 413, None),
        ("POST", "/v1/overrides", {"data": b"{}", "headers": {"Content-Type": "text/plain"}},
         415, None),
        ("POST", "/v1/overrides", {"data": b"{not json",
                                   "headers": {"Content-Type": "application/json"}}, 400, None),
        ("POST", "/v1/overrides", {"data": b"\xff\xfe",
                                   "headers": {"Content-Type": "application/json"}}, 400, None),
        ("POST", "/v1/overrides", {"data": b"[" * 50000 + b"]" * 50000,
                                   "headers": {"Content-Type": "application/json"}}, 413, None),
        ("POST", "/v1/overrides", {"data": b"[" * 30000,
                                   "headers": {"Content-Type": "application/json"}}, 400, None),
        ("POST", "/v1/overrides", {"data": b'{"core": NaN}',
                                   "headers": {"Content-Type": "application/json"}}, 400, None),
        ("POST", "/v1/overrides", {"json": {**good, "interface": "wg7"}}, 404, "interface"),
        ("POST", "/v1/overrides", {"json": {**good, "public_key": "A" * 43 + "="}}, 404,
         "public_key"),
        ("POST", "/v1/overrides", {"json": {**good, "public_key": "short"}}, 400, "public_key"),
        ("POST", "/v1/overrides", {"json": {**good, "mode": "turbo"}}, 400, "mode"),
        ("POST", "/v1/overrides", {"json": {**good, "core": 64}}, 422, "core"),
        ("POST", "/v1/overrides", {"json": {**good, "expires_in": -1}}, 400, "expires_in"),
        ("POST", "/v1/overrides", {"json": {**good, "expires": 1.0}}, 422, "expires"),
        ("DELETE", "/v1/overrides", {}, 400, "interface"),
        ("DELETE", "/v1/overrides", {"params": {"interface": "wg0", "public_key": "x"}}, 400,
         "public_key"),
        ("DELETE", "/v1/overrides", {"params": {"interface": "wg0", "public_key": key}}, 404,
         "public_key"),
        ("GET", "/v1/peers", {"params": {"interface": "wg9"}}, 404, "interface"),
        ("GET", "/v1/nothing", {}, 404, None),
        ("PUT", "/v1/status", {}, 405, None),
    ]
    for method, path, kwargs, status, field in cases:
        got, body = await _request(daemon, method, path, **kwargs)
        assert (got, body.get("field")) == (status, field), (method, path, kwargs.keys(), body)
        assert isinstance(body["error"], str) and body["error"]
    # a '+' left unencoded in the query (read as a space) still finds the override
    got, _ = await _request(daemon, "POST", "/v1/overrides", json=good)
    assert got == 201
    raw_query = f"/v1/overrides?interface=wg0&public_key={key}"
    got, body = await _request(daemon, "DELETE", raw_query)
    assert got == 200 and body["cleared"]["public_key"] == key  # type: ignore[index]
    health = await daemon.get("/v1/health")
    await asyncio.wait_for(daemon.wait_ticks(health["ticks"] + 2), 30)
    assert "Traceback" not in daemon.log
