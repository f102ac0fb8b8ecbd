"""A client for the daemon's HTTP API, over its unix socket or over TCP with a bearer token.

    async with Client.unix("/run/wghybrid/wghybrid.sock") as api:
        status = await api.get("/v1/status")

Every failure is one of two exceptions carrying a one-line message: `UnreachableError`
(no daemon behind the socket or URL) and `ApiError` (the daemon answered with an error).
They, and the token and URL checks, are `wghybrid.cli._http`'s, whose `QuickClient` (the
standard library only, no aiohttp) is what the CLI uses; this one is for asyncio programs.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import aiohttp

from wghybrid.cli._http import (  # noqa: F401  (re-exported: one ClientError for both clients)
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    MAX_SMALL_FILE,
    ApiError,
    ClientError,
    UnreachableError,
    check_url,
    read_token,
    tls_context,
)


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
