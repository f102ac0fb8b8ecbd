"""A client for the daemon's HTTP API, over its unix socket or over TCP with a bearer token.

    async with Client.unix("/run/wghybrid/wghybrid.sock") as api:
        status = await api.get("/v1/status")

Every failure is one of two exceptions carrying a one-line message: `UnreachableError`
(no daemon behind the socket or URL) and `ApiError` (the daemon answered with an error).
The client is `wghybrid.cli._http.QuickClient` (the standard library only: what the CLI
uses; its coroutines never suspend, so it serves asyncio programs and `run_sync` alike);
this module is its public name, with the errors and the token and URL checks.
"""

from __future__ import annotations

from wghybrid.cli._http import (
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    MAX_SMALL_FILE,
    ApiError,
    ClientError,
    QuickClient,
    UnreachableError,
    check_url,
    read_token,
    tls_context,
)

Client = QuickClient

__all__ = [
    "DEFAULT_SOCKET", "DEFAULT_TIMEOUT", "MAX_SMALL_FILE", "ApiError", "Client", "ClientError",
    "UnreachableError", "check_url", "read_token", "tls_context",
]
