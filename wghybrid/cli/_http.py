"""A small client for the daemon's API on the standard library alone (the CLI's fast path).

Importing aiohttp costs about a third of a second, more than a read-only CLI call may take
in all (150 ms): the CLI's commands talk to the daemon with `QuickClient`, blocking
HTTP/1.1 over the unix socket or TCP (TLS when https), one keep-alive connection per
command. Its interface is asyncio's (`async with`, `get`, `post`, `delete`, `request`),
but its coroutines never suspend, and `run_sync` runs one without an event loop (nor the
import of asyncio). `wghybrid.cli.client` is its public name (`Client`), with the errors
and the token and URL checks that live here.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import ssl

DEFAULT_SOCKET = "/run/wghybrid/wghybrid.sock"
DEFAULT_TIMEOUT = 10.0
MAX_SMALL_FILE = 1 << 20
"""A token file or CA certificate larger than this is refused."""
MAX_ANSWER = 256 << 20
"""An answer longer than this is refused (the status of 100,000 peers is about 40 MB)."""


class ClientError(Exception):
    """Base of the client's errors; str() is the one line to show the operator."""


class UnreachableError(ClientError):
    """Nothing answered at the socket or URL."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the daemon at {where}: {reason} (is wghybrid.service running?)"
        )
        self.where = where
        self.reason = reason


class ApiError(ClientError):
    """The daemon answered 4xx/5xx; `message` is its {"error": ...} text."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


class Api(Protocol):
    """What a CLI command needs of a client (Client and QuickClient both are one)."""

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        ...

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        ...

    async def delete(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        ...


def _os_reason(exc: OSError) -> str:
    """The one-line reason of a failed connect or exchange (TLS included)."""
    ssl = sys.modules.get("ssl")  # imported only for https
    if ssl is not None and isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message or exc}"
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    return os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))


def _read_small(path: str | Path, what: str) -> str:
    from wghybrid._files import read_regular

    try:
        return read_regular(path, MAX_SMALL_FILE).decode("utf-8")
    except OSError as exc:
        raise ClientError(f"cannot read {what} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ClientError(f"{what} {path} is not UTF-8 text") from None


def read_token(path: str | Path) -> str:
    """The bearer token in `path` (surrounding whitespace stripped); raises ClientError."""
    token = _read_small(path, "the token file").strip()
    if not token:
        raise ClientError(f"the token file {path} is empty")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ClientError(f"the token file {path} must hold one word of printable characters")
    return token


def check_url(url: str) -> str:
    """`url` if it is http(s)://HOST[:PORT][/]; ClientError naming --url and what is wrong."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientError(f"--url {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https"):
        shown = f"unsupported scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ClientError(f"--url {url!r}: {shown}; expected http://HOST:PORT or https://...")
    if not parts.hostname:
        raise ClientError(f"--url {url!r}: no host; expected {parts.scheme}://HOST:PORT")
    if port == 0:
        raise ClientError(f"--url {url!r}: port 0 is not a port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ClientError(f"--url {url!r}: give only the scheme, host and port")
    return url


def tls_context(cafile: str) -> ssl.SSLContext:
    """A client TLS context trusting the PEM certificate(s) in `cafile`; ClientError."""
    import ssl

    pem = _read_small(cafile, "the --cacert file")
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "reason", None) or str(exc)
        raise ClientError(f"--cacert {cafile}: not a PEM CA certificate ({why})") from None


class _Connection:
    """One HTTP/1.1 connection (keep-alive), blocking, on a socket `connect` returns."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rfile = sock.makefile("rb")

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()

    def exchange(self, head: bytes, payload: bytes) -> tuple[int, str, bytes, bool]:
        """Send one request; (status, reason, body, whether the connection stays open)."""
        self.sock.sendall(head + payload)
        line = self.rfile.readline(_MAX_LINE + 1)
        if not line:
            raise _Closed("the daemon closed the connection")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _BadAnswer("not an HTTP answer")
        status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        else:
            raise _BadAnswer("too many headers")
        keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif headers.get("content-length", "").isdigit():
            length = int(headers["content-length"])
            if length > MAX_ANSWER:
                raise _BadAnswer(f"an answer of {length} bytes")
            body = self.rfile.read(length)
            if len(body) != length:
                raise _Closed("the answer was cut short")
        else:
            body, keep = self.rfile.read(MAX_ANSWER + 1), False
        if len(body) > MAX_ANSWER:
            raise _BadAnswer(f"an answer of more than {MAX_ANSWER} bytes")
        return status, reason, body, keep

    def _chunked(self) -> bytes:
        pieces: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(_MAX_LINE + 1).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BadAnswer("a bad chunk") from None
            if size == 0:
                while self.rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(pieces)
            total += size
            if total > MAX_ANSWER:
                raise _BadAnswer(f"an answer of more than {MAX_ANSWER} bytes")
            pieces.append(self.rfile.read(size))
            self.rfile.readline(_MAX_LINE + 1)


_MAX_LINE = 65536
_MAX_HEADERS = 100


class _Closed(ConnectionError):
    """The daemon closed the connection before a whole answer."""


class _BadAnswer(Exception):
    """What came back is not an answer we take."""


T = TypeVar("T")


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run a coroutine that never suspends (one on a QuickClient) to its end."""
    steps = awaitable.__await__()
    try:
        next(steps)
    except StopIteration as done:
        result: T = done.value
        return result
    close = getattr(steps, "close", None)
    if close is not None:
        close()
    raise RuntimeError("run_sync: the coroutine suspended (it needs an event loop)")


class QuickClient:
    """One session with the daemon on the standard library: `QuickClient.unix(path)` or
    `QuickClient.tcp(url, token, cafile)`."""

    def __init__(
        self,
        where: str,
        connect: Any,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        host: str = "wghybrid",
    ) -> None:
        self.where = where
        self._connect = connect
        self._headers = {"Host": host, "Accept": "application/json", **(headers or {})}
        self._timeout = timeout
        self._conn: _Connection | None = None

    @classmethod
    def unix(cls, path: str, timeout: float = DEFAULT_TIMEOUT) -> QuickClient:
        def connect() -> _Connection:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            return _Connection(sock)

        return cls(path, connect, timeout=timeout)

    @classmethod
    def tcp(
        cls,
        url: str,
        token: str | None = None,
        cafile: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> QuickClient:
        """`url` is http://host:port or https://host:port; `cafile` verifies a private CA."""
        check_url(url)
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        tls = parts.scheme == "https"
        context = None
        if tls:
            import ssl

            context = tls_context(cafile) if cafile else ssl.create_default_context()
        port = parts.port or (443 if tls else 80)

        def connect() -> _Connection:
            sock = socket.create_connection((host, port), timeout=timeout)
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_hostname=host)
                except BaseException:
                    sock.close()
                    raise
            return _Connection(sock)

        return cls(url, connect, headers, timeout, host=parts.netloc)

    # -- the session ----------------------------------------------------------------------
    def open(self) -> QuickClient:
        return self

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> QuickClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __enter__(self) -> QuickClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self.call("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", path, body=body if body is not None else {})

    async def delete(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self.call("DELETE", path, params=params)

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.call(method, path, params, body)

    def text(self, path: str) -> str:
        """GET `path` (/metrics): the body as text on 2xx; ApiError/UnreachableError."""
        status, reason, raw = self._send("GET", path, None, None)
        if status >= 400:
            self._refuse("GET", path, status, reason, raw)
        return raw.decode("utf-8", "replace")

    # -- one request ----------------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request, blocking; the decoded JSON object on 2xx, ApiError/UnreachableError
        otherwise."""
        status, reason, raw = self._send(method, path, params, body)
        if status >= 400:
            self._refuse(method, path, status, reason, raw)
        try:
            data = json.loads(raw) if raw else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if not isinstance(data, dict):
            raise ApiError(status, f"{method} {path}: the daemon's answer is not a JSON object")
        return data

    @staticmethod
    def _refuse(method: str, path: str, status: int, reason: str, raw: bytes) -> None:
        try:
            data = json.loads(raw) if raw else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            field = data.get("field")
            raise ApiError(status, data["error"], field if isinstance(field, str) else None)
        raise ApiError(status, f"{method} {path}: HTTP {status} {reason}".rstrip())

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Mapping[str, Any] | None,
    ) -> tuple[int, str, bytes]:
        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = dict(self._headers)
        payload = b""
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if body is not None or method != "GET":
            headers["Content-Length"] = str(len(payload))
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        for attempt in (0, 1):
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                status, reason, raw, keep = self._conn.exchange(head.encode(), payload)
                if not keep:
                    self.close()
                break
            except (_Closed, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if not fresh and attempt == 0:
                    continue  # the keep-alive connection was closed meanwhile: once more
                raise UnreachableError(self.where, str(exc) or type(exc).__name__) from None
            except TimeoutError:
                self.close()
                raise UnreachableError(
                    self.where, f"no answer within {self._timeout:g} s"
                ) from None
            except _BadAnswer as exc:
                self.close()
                raise UnreachableError(self.where, str(exc)) from None
            except OSError as exc:
                self.close()
                raise UnreachableError(self.where, _os_reason(exc)) from None
        return status, reason, raw
