"""wghybrid.cli._http.QuickClient, the CLI's standard-library client (issue 13: start-up time),
against a raw socket server that answers exactly the bytes a test gives it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wghybrid.cli import _http
from wghybrid.cli._http import ApiError, QuickClient, UnreachableError, run_sync

pytestmark = pytest.mark.unit


class RawServer:
    """Accepts connections on a unix socket; for each request read, sends the next answer
    (bytes), or closes the connection when the answer is None."""

    def __init__(self, path: Path, answers: list[bytes | None]) -> None:
        self.path = str(path)
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data:
                        break
                    head, _, rest = data.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            want = int(line.split(b":")[1])
                            while len(rest) < want:
                                rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest)
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="wghq-", dir="/tmp"))
    yield d / "s.sock"
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


def answer(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def test_keep_alive_chunked_and_close(sock_path: Path) -> None:
    chunked = b"7\r\n{\"a\": 1\r\n1\r\n}\r\n0\r\n\r\n"
    server = RawServer(sock_path, [
        answer("200 OK", b'{"x": 1}'),
        answer("200 OK", chunked, "Transfer-Encoding: chunked"),
        answer("200 OK", b'{"y": 2}', "Connection: close"),
        answer("200 OK", b'{"z": 3}'),
    ])
    try:
        with QuickClient.unix(str(sock_path)) as api:
            assert run_sync(api.get("/v1/status", {"interface": "wg0"})) == {"x": 1}
            assert run_sync(api.post("/v1/overrides", {"mode": "inline"})) == {"a": 1}
            assert run_sync(api.delete("/v1/overrides")) == {"y": 2}
            assert run_sync(api.request("GET", "/v1/health")) == {"z": 3}
        assert server.connections == 2  # one kept alive for three, a new one after close
        first, post = server.requests[0], server.requests[1]
        assert first.startswith(b"GET /v1/status?interface=wg0 HTTP/1.1\r\nHost: wghybrid\r\n")
        assert b"Content-Type: application/json" in post and post.endswith(b'{"mode": "inline"}')
        assert server.requests[2].startswith(b"DELETE /v1/overrides HTTP/1.1")
        assert b"Content-Length: 0" in server.requests[2]
    finally:
        server.close()


def test_a_closed_keep_alive_connection_is_retried_once(sock_path: Path) -> None:
    server = RawServer(sock_path, [answer("200 OK", b"{}"), None, answer("200 OK", b'{"b": 1}')])
    try:
        with QuickClient.unix(str(sock_path)) as api:
            assert run_sync(api.get("/a")) == {}
            assert run_sync(api.get("/b")) == {"b": 1}  # the first connection was gone
        assert server.connections == 2
    finally:
        server.close()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (answer("404 Not Found", b'{"error": "no peer x", "field": "public_key"}'),
         ApiError(404, "no peer x", "public_key")),
        (answer("500 Internal Server Error", b"oops"),
         ApiError(500, "GET /x: HTTP 500 Internal Server Error")),
        (answer("200 OK", b"[1]"),
         ApiError(200, "GET /x: the daemon's answer is not a JSON object")),
        (b"SSH-2.0-OpenSSH\r\n\r\n", UnreachableError("W", "not an HTTP answer")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", UnreachableError(
            "W", "the answer was cut short")),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", UnreachableError(
            "W", "a bad chunk")),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", UnreachableError(
            "W", "too many headers")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n", UnreachableError(
            "W", "an answer of 99999999999 bytes")),
        (None, UnreachableError("W", "the daemon closed the connection")),
    ],
)
def test_bad_answers_are_one_line_errors(
    sock_path: Path, raw: bytes | None, error: Exception
) -> None:
    server = RawServer(sock_path, [raw])
    try:
        with QuickClient.unix(str(sock_path)) as api, pytest.raises(type(error)) as exc:
            api.call("GET", "/x")
        expected = str(error).replace("at W:", f"at {sock_path}:")
        assert str(exc.value) == expected and "\n" not in str(exc.value)
        if isinstance(error, ApiError):
            assert isinstance(exc.value, ApiError)
            assert (exc.value.status, exc.value.field) == (error.status, error.field)
    finally:
        server.close()


def test_no_answer_in_time(sock_path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    s.listen()  # accepts (the kernel does), never answers
    try:
        with QuickClient.unix(str(sock_path), timeout=0.2) as api, \
                pytest.raises(UnreachableError) as exc:
            api.call("GET", "/v1/status")
        assert str(exc.value).endswith(": no answer within 0.2 s (is wghybrid.service running?)")
    finally:
        s.close()


def test_tcp_connection_refused_names_the_url() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}"
    with QuickClient.tcp(url) as api, pytest.raises(UnreachableError) as exc:
        api.call("GET", "/v1/status")
    assert str(exc.value) == (f"cannot reach the daemon at {url}: Connection refused "
                              "(is wghybrid.service running?)")


def test_run_sync_refuses_a_coroutine_that_suspends() -> None:
    async def sleeps() -> int:
        await asyncio.sleep(0)
        return 1

    async def returns() -> int:
        return 2

    assert run_sync(returns()) == 2
    with pytest.raises(RuntimeError, match="suspended"):
        run_sync(sleeps())


def test_the_cli_path_imports_neither_aiohttp_nor_asyncio() -> None:
    code = ("import sys; from wghybrid import cli; cli.build_parser(); "
            "print(json.dumps(sorted(m for m in ('aiohttp', 'asyncio', 'numpy',"
            " 'wghybrid.cli.client', 'wghybrid.model') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert json.loads(out) == []
    # and the same client class behind every error the CLI catches
    from wghybrid.cli import client

    assert client.ClientError is _http.ClientError and client.ApiError is _http.ApiError
