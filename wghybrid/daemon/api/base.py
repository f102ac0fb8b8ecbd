"""The API's shared parts: its limits, app keys, errors, and the Protocol it asks of the
daemon (DaemonView) instead of importing the Daemon class."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from aiohttp import web

from wghybrid.core.controller import Controller
from wghybrid.daemon.api.fragments import BodyCache
from wghybrid.daemon.events import EventLog
from wghybrid.daemon.metrics import DaemonMetrics
from wghybrid.model import (
    InterfaceStatus,
    Override,
    PeerId,
)
from wghybrid.policy import Policy

log = logging.getLogger("wghybrid.api")

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0
"""Seconds a client has to send a request's body once its head has arrived (408 after)."""
MAX_REASON = 1024
MAX_EXPIRY = 10 * 365 * 24 * 3600.0
"""Ten years: a longer expiry is a mistake; omit it to pin until cleared."""
MAX_CORE = 1 << 20
MAX_NUMBER = 1 << 62
"""Integers beyond this are refused before float() (a 401-digit one overflows it)."""
OVERRIDE_FIELDS = frozenset(
    {"interface", "public_key", "mode", "core", "expires_in", "expires", "reason"}
)

"""Seconds a stream waits for a client to take a line before closing."""
MAX_STREAMS = 16
"""Concurrent event streams when `build_app` is not told (the daemon derives it from the
connection cap: a quarter of it, at most 64)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Role(enum.Enum):
    READ = "read"
    ADMIN = "admin"


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Access:
    """Who gets which role. TCP requests need a token; a unix-socket client always reads,
    and is admin when its uid or one of its groups (SO_PEERCRED, SO_PEERGROUPS) is here."""

    admin_token: str | None = None
    read_token: str | None = None
    admin_uids: frozenset[int] = frozenset({0})
    admin_gids: frozenset[int] = frozenset()



@dataclass(frozen=True, slots=True)
class ApiConfig:
    access: Access | None
    """None: no access checks at all (an in-process test server)."""
    openapi: bytes
    max_streams: int = MAX_STREAMS



@dataclass(frozen=True, slots=True)
class Health:
    status: str
    ticks: int
    last_tick: float | None
    last_error: str | None


class DaemonView(Protocol):
    """What the API needs of the daemon (wghybrid.daemon.service.Daemon is one): it reads
    the last tick's snapshot and the overrides, and asks for changes; it never sees the
    data plane, the controller's inputs or the tick loop."""

    serial: int
    """Bumped whenever an answer may change; the API's caches are keyed on it (the API
    bumps it too, after an internal error, so that health shows the count)."""

    @property
    def backend(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def controller(self) -> Controller: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def policy_error(self) -> str | None: ...
    @property
    def snapshot(self) -> tuple[InterfaceStatus, ...]: ...
    @property
    def overrides_serial(self) -> int: ...
    @property
    def last_tick(self) -> float | None: ...
    @property
    def events(self) -> EventLog: ...
    @property
    def metrics(self) -> DaemonMetrics: ...
    @property
    def stopping(self) -> asyncio.Event: ...
    @property
    def wall(self) -> Callable[[], float]: ...

    def health(self) -> Health: ...
    def live_overrides(self) -> list[Override]: ...
    def override_presence(self) -> list[tuple[Override, bool]]: ...
    def present(self, keys: list[PeerId]) -> list[bool]: ...
    def peer_names(self, keys: list[PeerId]) -> list[str]: ...
    def name_of(self, interface: str, public_key: bytes) -> str: ...
    async def set_override(self, override: Override, by: str = "") -> Override: ...
    async def clear_override(
        self, interface: str, public_key: bytes, by: str = ""
    ) -> Override | None: ...
    async def reload_policy(self, by: str = "") -> Policy: ...


DAEMON: web.AppKey[DaemonView] = web.AppKey("daemon")
CONFIG = web.AppKey("config", ApiConfig)
CACHE = web.AppKey("cache", BodyCache)
STREAMS: web.AppKey[set[object]] = web.AppKey("streams")
"""The requests streaming events right now (at most `ApiConfig.max_streams`)."""
BUSY: web.AppKey[set[object]] = web.AppKey("busy")
"""The connections (aiohttp protocol objects) with a request in a handler right now: the
connection guard (wghybrid/_conns.py) never evicts those."""


class ApiError(Exception):
    """A request the API refuses: status, message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status, headers=headers)


def openapi_document() -> bytes:
    return resources.files("wghybrid").joinpath("openapi.json").read_bytes()



class ClientGone(Exception):
    """The client hung up (or reset) before its request was read: not our error."""


clients_log = logging.getLogger("wghybrid.clients")
"""Misbehaving clients (hang-ups, malformed HTTP, the connection cap); rate-limited by the
daemon's logging set-up, one line each, never a traceback."""
