"""A client for the daemon's HTTP API, over its unix socket or over TCP with a bearer token.

    async with Client.unix("/run/wghybrid/wghybrid.sock") as api:
        status = await api.get("/v1/status")

Every failure is one of two exceptions carrying a one-line message: `UnreachableError`
(no daemon behind the socket or URL) and `ApiError` (the daemon answered with an error).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

DEFAULT_SOCKET = "/run/wghybrid/wghybrid.sock"
DEFAULT_TIMEOUT = 10.0
MAX_SMALL_FILE = 1 << 20
"""A token file or CA certificate larger than this is refused."""


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


def _read_small(path: str | Path, what: str) -> str:
    from wghybrid._files import read_regular  # (the CLI imports lazily: start-up time)

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
    pem = _read_small(cafile, "the --cacert file")
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        why = getattr(exc, "reason", None) or str(exc)
        raise ClientError(f"--cacert {cafile}: not a PEM CA certificate ({why})") from None


class Client:
    """One session with the daemon. Use `Client.unix(...)` or `Client.tcp(...)`."""

    def __init__(
        self,
        base_url: str,
        where: str,
        connector_factory: Any,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.where = where
        self._connector_factory = connector_factory
        self._headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def unix(cls, path: str, timeout: float = DEFAULT_TIMEOUT) -> Client:
        return cls(
            "http://wghybrid", path, lambda: aiohttp.UnixConnector(path=path), timeout=timeout
        )

    @classmethod
    def tcp(
        cls,
        url: str,
        token: str | None = None,
        cafile: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Client:
        """`url` is http://host:port or https://host:port; `cafile` verifies a private CA."""
        check_url(url)
        context = tls_context(cafile) if cafile else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return cls(
            url,
            url,
            lambda: aiohttp.TCPConnector(ssl=context if context is not None else True),
            headers,
            timeout,
        )

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(
            connector=self._connector_factory(), headers=self._headers, timeout=self._timeout
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self.request("POST", path, body=body if body is not None else {})

    async def delete(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self.request("DELETE", path, params=params)

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request; the decoded JSON object on 2xx, ApiError/UnreachableError otherwise."""
        if self._session is None:
            raise RuntimeError("Client used outside 'async with'")
        try:
            async with self._session.request(
                method, self.base_url + path, params=params, json=body
            ) as resp:
                text = await resp.text()
                status = resp.status
                reason = resp.reason or ""
        except aiohttp.ClientConnectorCertificateError as exc:
            cert = exc.certificate_error
            why = getattr(cert, "verify_message", None) or str(cert)
            raise UnreachableError(self.where, f"TLS certificate not accepted: {why}") from None
        except aiohttp.ClientConnectorError as exc:
            err = exc.os_error
            if isinstance(err, ssl.SSLError):
                reason = f"TLS: {err.reason or err}"
            elif err.errno:
                reason = os.strerror(err.errno)
            else:
                reason = err.strerror or str(err)
            raise UnreachableError(self.where, reason) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise UnreachableError(self.where, str(exc) or type(exc).__name__) from None
        except TimeoutError:
            raise UnreachableError(
                self.where, f"no answer within {self._timeout.total:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise UnreachableError(self.where, str(exc) or type(exc).__name__) from None
        try:
            data = json.loads(text) if text else {}
        except json.JSONDecodeError:
            data = None
        if status >= 400:
            if isinstance(data, dict) and isinstance(data.get("error"), str):
                field = data.get("field")
                raise ApiError(status, data["error"], field if isinstance(field, str) else None)
            raise ApiError(status, f"{method} {path}: HTTP {status} {reason}".rstrip())
        if not isinstance(data, dict):
            raise ApiError(status, f"{method} {path}: the daemon's answer is not a JSON object")
        return data
