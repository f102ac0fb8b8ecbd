"""A cap on each listener's concurrent connections, for the aiohttp server.

aiohttp bounds what one connection may do (header sizes, keepalive_timeout, which also
closes a connection that never completes a request head, client_max_size) but not how
many connections there are: every accepted socket is a file descriptor, and past the
process's limit accept() fails (EMFILE), the loop logs it, state writes fail, and nobody
is answered. Neither aiohttp nor asyncio has a connection limit for servers, so this
module wraps the protocol factory of one listener:

- below the cap, a connection is served as usual;
- at the cap, the oldest idle connection (no request in a handler: it sent nothing, or
  half a request head, or sits in keep-alive) is closed to make room, so that a flood of
  idle connections cannot lock out a client that sends its request at once; a
  connection younger than MIN_AGE is never chosen (it has had no time to send);
- when every connection is in the middle of a request, the new one is refused at once
  with a canned `503` (no parsing, no handler) and closed.

`GuardedSite` is a `web.BaseSite` (so AppRunner starts and stops it like its own sites)
that serves a unix socket or a TCP address through the guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import ssl
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("wghybrid.clients")

MAX_CONNECTIONS = 1024
"""Per listener, when the descriptor limit allows (see `limits_for`)."""
MAX_BACKLOG = 1024
MIN_AGE = 0.5
"""Seconds a connection is safe from eviction after it was accepted."""
LOG_EVERY = 10.0
"""Seconds between two log lines about the cap on one listener."""

_BODY = json.dumps(
    {"error": "too many connections; try again shortly", "field": None}
).encode()
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def limits_for(listeners: int, nofile: int | None = None) -> tuple[int, int]:
    """(connection cap, listen backlog) per listener, from RLIMIT_NOFILE's soft limit.

    Worst case a listener holds `cap` connections plus one accept() batch, which asyncio
    sizes to the backlog, before the guard sees them: so each gets an eighth of the limit
    per listener, and the daemon keeps well over half of its descriptors for itself.
    """
    if nofile is None:
        try:
            soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        except OSError:  # a seccomp filter refusing prlimit64: assume the usual default
            soft = 1024
        nofile = soft if soft != resource.RLIM_INFINITY else 1 << 20
    share = max(8, nofile // (8 * max(1, listeners)))
    return min(MAX_CONNECTIONS, share), min(MAX_BACKLOG, share)


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(REFUSAL)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass


class _Conn(asyncio.Protocol):
    """One served connection: the aiohttp protocol inside, every callback passed on."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.accepted = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """The cap of one listener. `busy` holds the aiohttp protocols with a request in a
    handler (the API's errors middleware keeps it); only the others may be evicted."""

    def __init__(self, name: str, cap: int, busy: set[object]) -> None:
        self.name = name
        self.cap = cap
        self.busy = busy
        self.conns: dict[_Conn, None] = {}
        """Oldest first (dicts keep insertion order)."""
        self.evicted = 0
        self.refused = 0
        self._last_log = -LOG_EVERY

    def factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        def protocol() -> asyncio.Protocol:
            if len(self.conns) >= self.cap and not self._evict_one():
                self.refused += 1
                self._log()
                return _Refuse()
            conn = _Conn(self, make())
            self.conns[conn] = None
            return conn

        return protocol

    def _evict_one(self) -> bool:
        old = time.monotonic() - MIN_AGE
        for conn in self.conns:
            if conn.accepted > old:
                return False  # the rest are younger still
            if conn.transport is not None and conn.inner not in self.busy:
                self.forget(conn)
                if conn.transport is not None:
                    conn.transport.close()
                self.evicted += 1
                self._log()
                return True
        return False

    def forget(self, conn: _Conn) -> None:
        self.conns.pop(conn, None)

    def _log(self) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            log.warning(
                "%s: %d connections, the cap: %d idle one(s) closed to make room, "
                "%d refused so far",
                self.name,
                self.cap,
                self.evicted,
                self.refused,
            )


class GuardedSite(web.BaseSite):
    """A unix-socket (`path`) or TCP (`host`, `port`) listener behind a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        *,
        path: str | None = None,
        host: str | None = None,
        port: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self.guard = guard
        self.path = path
        self.host = host
        self.port = port
        self._tls = ssl_context
        self._queue = backlog

    @property
    def name(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"{'https' if self._tls else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory = self.guard.factory(server)
        created: Any
        if self.path is not None:
            created = await loop.create_unix_server(
                factory, self.path, ssl=self._tls, backlog=self._queue
            )
        else:
            assert self.port is not None
            created = await loop.create_server(
                factory, self.host, self.port, ssl=self._tls, backlog=self._queue,
                reuse_address=True,
            )
        self._server = created
