"""The HTTP API (aiohttp), versioned under /v1; `openapi.json` beside this file describes it.

Handlers never await the data plane: they read the daemon's last status snapshot and its
overrides, so the tick loop keeps its cadence however busy the API is. Every request is
validated before anything is touched; a bad one gets a 4xx with
`{"error": "<what is wrong>", "field": "<name>" | null}`. An unexpected exception becomes
a logged 500 with the same shape; it never reaches the event loop.

Access has two roles: read (every GET: status, peers, overrides, policy, health, metrics)
and admin (what changes things: setting and clearing overrides, reloading the policy). On
the unix socket, whoever the socket's mode (0660) lets connect may read; the admin role
goes by the client's credentials (SO_PEERCRED): root, the daemon's own user, or a member
of an admin group. Over TCP every request must carry `Authorization: Bearer <token>`, the
admin token or the read-only one.
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import json
import logging
import math
import pwd
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from wghybrid import events as ev
from wghybrid.core.status import PeerColumns, columns, has_peer, marks_of
from wghybrid.explain import explain_peer
from wghybrid.model import (
    BadKeyError,
    InterfaceStatus,
    Mode,
    Override,
    PeerClass,
    PeerStatus,
    control_character,
    decode_key,
    encode_key,
    format_cores,
)
from wghybrid.policy.load import policy_to_dict
from wghybrid.state import override_to_dict

if TYPE_CHECKING:
    from wghybrid.daemon import Daemon

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
EVENTS_LIMIT = 100
"""GET /v1/events: events per answer unless `limit` says otherwise."""
EVENTS_MAX_LIMIT = 1000
"""... and at most this many."""
EVENTS_PARAMS = frozenset({"since", "limit", "interface", "peer", "follow"})
MAX_FILTER = 256
"""Characters of an `interface` or `peer` filter."""
FOLLOW_FOR = 3600.0
"""Seconds an event stream (follow=1) stays open; the client reconnects with since=."""
KEEPALIVE = 15.0
"""Seconds of quiet after which a stream sends an empty line (under aiohttp's and
proxies' idle timeouts; it also finds out a client that went away)."""
WRITE_TIMEOUT = 30.0
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


@dataclass(slots=True)
class BodyCache:
    """Encoded answers of the big GETs (status, peers, metrics), built at most once per
    tick or override change: under load the API serves bytes, not fresh JSON."""

    key: object = None
    bodies: dict[str, bytes] = field(default_factory=dict)
    metrics: bytes = b""
    metrics_serial: object = None
    metrics_pending: tuple[object, asyncio.Future[bytes]] | None = None
    fragments: Fragments | None = None
    health_key: object = None
    health: bytes = b""


@dataclass(frozen=True, slots=True)
class Fragments:
    """One snapshot pre-encoded: per interface its JSON head, per peer its JSON minus the
    two fields an override changes ("pinned", "override"). A new override costs a join of
    strings, not a re-encoding of every peer."""

    serial: int
    interfaces: tuple[tuple[str, str, PeerColumns, list[str]], ...]
    """(name, head without its closing brace, the peers' columns, each peer without its
    closing brace, row for row)"""

    @staticmethod
    def build(serial: int, snapshot: tuple[InterfaceStatus, ...]) -> Fragments:
        out = []
        for i in snapshot:
            head = _encode(interface_json(i, {}, with_peers=False))[:-1]
            cols = columns(i)
            out.append((i.name, head, cols, _peer_fragments(cols)))
        return Fragments(serial, tuple(out))

    def peers(self, name: str | None, live: dict[tuple[str, bytes], Override]) -> str:
        return ", ".join(
            _join_peers(cols, bases, live)
            for iname, _, cols, bases in self.interfaces
            if (name is None or iname == name) and bases
        )

    def interfaces_json(self, live: dict[tuple[str, bytes], Override]) -> str:
        return ", ".join(
            f'{head}, "peers": [{self.peers(name, live)}]}}' for name, head, _, _ in self.interfaces
        )


_UNPINNED = ', "pinned": false, "override": null}'


def _peer_fragments(cols: PeerColumns) -> list[str]:
    """`_encode(_peer_fields(p))[:-1]` for every peer of `cols`, column by column: the same
    bytes (json.dumps' separators, ASCII escapes and float reprs)."""
    n = len(cols)
    if not n:
        return []
    head = '{"interface": ' + _encode(cols.interface) + ', "public_key": "'
    names = list(map(_json_string, cols.names()))
    kinds = np.array([f'"mode": "{m}", "class": "{c}"' for m in Mode for c in PeerClass],
                     dtype=object)
    kind = kinds[cols.mode.astype(np.intp) * len(PeerClass) + cols.pclass].tolist()

    def numbers(x: np.ndarray) -> list[str]:
        return list(map(float.__repr__, np.where(np.isfinite(x), x, 0.0).tolist()))

    reasons = np.array([*map(_json_string, cols.reasons), "null"], dtype=object)
    why = reasons[cols.unmanaged].tolist()
    return [
        f'{head}{key}", "name": {name}, {k}, "rx_bps": {rx}, "tx_bps": {tx}, "cpu": {cpu}, '
        f'"core": {core}, "time_in_mode": {t}, "unmanaged": {u}'
        for key, name, k, rx, tx, cpu, core, t, u in zip(
            cols.public_keys(), names, kind, numbers(cols.rx_bps), numbers(cols.tx_bps),
            numbers(cols.cpu), map(str, cols.core.tolist()), numbers(cols.time_in_mode), why,
            strict=True,
        )
    ]


def _join_peers(
    cols: PeerColumns, bases: list[str], live: dict[tuple[str, bytes], Override]
) -> str:
    """The peers of one interface, each closed by its live override (or none)."""
    sep = _UNPINNED + ", "
    mine = [(k, o) for (iface, k), o in live.items() if iface == cols.interface]
    if not mine:
        return sep.join(bases) + _UNPINNED
    at = marks_of(cols, [k for k, _ in mine])
    pieces = []
    start = 0
    for row in np.flatnonzero(at >= 0).tolist():
        if row > start:
            pieces.append(sep.join(bases[start:row]) + _UNPINNED)
        pieces.append(_peer_tail(bases[row], mine[int(at[row])][1]))
        start = row + 1
    if start < len(bases):
        pieces.append(sep.join(bases[start:]) + _UNPINNED)
    return ", ".join(pieces)


def _encode(data: object) -> str:
    return json.dumps(data, allow_nan=False)


_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # json.dumps(str)


def _peer_tail(base: str, override: Override | None) -> str:
    if override is None:
        return base + ', "pinned": false, "override": null}'
    return f'{base}, "pinned": true, "override": {_encode(override_to_dict(override))}}}'


DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
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


def _offered_token(header: str | None) -> bytes | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip().encode("utf-8", "backslashreplace")  # any bytes a client sent


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    offered = _offered_token(header)
    return offered is not None and hmac.compare_digest(offered, expected.encode())


def token_role(access: Access, header: str | None) -> Role | None:
    """The role a TCP request's bearer token gives, or None (401). Both tokens are
    compared, in constant time, whichever matches."""
    offered = _offered_token(header)
    if offered is None:
        return None
    admin = access.admin_token is not None and hmac.compare_digest(
        offered, access.admin_token.encode()
    )
    read = access.read_token is not None and hmac.compare_digest(
        offered, access.read_token.encode()
    )
    return Role.ADMIN if admin else Role.READ if read else None


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
"""Linux >= 4.13: the supplementary groups of the process that connected."""
_CRED = struct.Struct("3i")


def unix_role(request: web.BaseRequest, access: Access) -> Role:
    """Admin when the connecting process's uid, gid or a supplementary group is one of
    `access`'s; read otherwise (the socket's mode already decided who may connect)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return Role.READ
    try:
        _pid, uid, gid = _CRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
    except OSError:
        return Role.READ
    if uid in access.admin_uids or gid in access.admin_gids:
        return Role.ADMIN
    if access.admin_gids:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        except OSError:  # ERANGE: more than 256 groups; ENOPROTOOPT: an old kernel
            return Role.READ
        groups = struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])
        if access.admin_gids.intersection(groups):
            return Role.ADMIN
    return Role.READ


def requester(request: web.Request) -> str:
    """Who sent a request, as the event log records it: "uid 1000 (alice)" on the unix
    socket (SO_PEERCRED), "admin token (192.0.2.7)" on TCP."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        try:
            _pid, uid, _gid = _CRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
            )
        except OSError:
            return "unix socket"
        try:
            return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
        except KeyError:
            return f"uid {uid}"
    peer = request.remote or "?"
    config = request.app[CONFIG]
    access = config.access
    if access is not None and token_role(access, request.headers.get("Authorization")) \
            is Role.ADMIN:
        return f"admin token ({peer})"
    return f"TCP {peer}"


def is_unix_request(request: web.BaseRequest) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


# ---------------------------------------------------------------------------------------
# Middlewares: errors (outermost), limits, then access


class ClientGone(Exception):
    """The client hung up (or reset) before its request was read: not our error."""


clients_log = logging.getLogger("wghybrid.clients")
"""Misbehaving clients (hang-ups, malformed HTTP, the connection cap); rate-limited by the
daemon's logging set-up, one line each, never a traceback."""


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    busy = request.app[BUSY]
    busy.add(request.protocol)
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.message, exc.field)
        if exc.status in (408, 413):
            response.force_close()  # the rest of the body is not worth waiting for
        return response
    except (ClientGone, ConnectionError) as exc:
        clients_log.info(
            "client hung up during %s %s: %s", request.method, request.rel_url.path, exc or "EOF"
        )
        response = error_response(400, "the client hung up")
        response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = error_response(exc.status, message or exc.reason, None, headers)
        if exc.status == 413:
            response.force_close()
        return response
    except Exception:
        request.app[DAEMON].metrics.internal_errors.inc()
        request.app[DAEMON].serial += 1
        log.exception("internal error answering %s %s", request.method, request.rel_url)
        return error_response(500, "internal error (logged by the daemon)")
    finally:
        busy.discard(request.protocol)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body announced larger than MAX_BODY is refused from its Content-Length, before a
    byte of it is read (client_max_size alone would wait for the body to arrive)."""
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError(413, f"the body ({length} bytes) is larger than {MAX_BODY} bytes")
    return await handler(request)


def _access_middleware(
    access: Access,
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_unix_request(request):
            if request.method in SAFE_METHODS:
                return await handler(request)  # anyone who may connect may read
            role = unix_role(request, access)
        else:
            found = token_role(access, request.headers.get("Authorization"))
            if found is None:
                raise ApiError(401, "a bearer token is required (Authorization: Bearer <token>)")
            role = found
        if (
            role is not Role.ADMIN
            and request.method not in SAFE_METHODS
            and request.match_info.http_exception is None  # 404 and 405 stay what they are
        ):
            raise ApiError(
                403,
                "this credential is read-only: setting or clearing overrides and reloading "
                "the policy need the admin role (docs/api.md, Access)",
            )
        return await handler(request)

    return check


# ---------------------------------------------------------------------------------------
# JSON shapes


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _peer_fields(p: PeerStatus) -> dict[str, Any]:
    """A peer's JSON fields but "pinned" and "override" (which follow the live overrides)."""
    return {
        "interface": p.interface,
        "public_key": encode_key(p.public_key),
        "name": p.name,
        "mode": str(p.mode),
        "class": str(p.pclass),
        "rx_bps": _finite(p.rx_bps),
        "tx_bps": _finite(p.tx_bps),
        "cpu": _finite(p.cpu),
        "core": int(p.core),
        "time_in_mode": _finite(p.time_in_mode),
        "unmanaged": p.unmanaged,
    }


def peer_json(p: PeerStatus, override: Override | None) -> dict[str, Any]:
    """A peer as the API shows it (components/schemas/Peer)."""
    return {
        **_peer_fields(p),
        "pinned": override is not None,
        "override": override_to_dict(override) if override is not None else None,
    }


def _cpulist(cores: frozenset[int]) -> str:
    return format_cores(cores) if cores else ""


def interface_json(
    i: InterfaceStatus, overrides: dict[tuple[str, bytes], Override], with_peers: bool = True
) -> dict[str, Any]:
    """An interface as the API shows it (components/schemas/Interface)."""
    out: dict[str, Any] = {
        "name": i.name,
        "cores": _cpulist(i.cores),
        "crypt_cores": _cpulist(i.crypt_cores),
        "inline_cores": _cpulist(i.inline_cores),
        "threaded_napi": i.threaded_napi,
        "unsupported": list(i.unsupported),
        "summary": columns(i).summary_json(),
    }
    if with_peers:
        out["peers"] = [peer_json(p, overrides.get((p.interface, p.public_key))) for p in i.peers]
    return out


def _live(daemon: Daemon) -> dict[tuple[str, bytes], Override]:
    return {(o.interface, o.public_key): o for o in daemon.live_overrides()}


def override_json(o: Override, present: bool, name: str) -> dict[str, Any]:
    """An override as GET /v1/overrides and status's absent_overrides show it: the state
    file's fields, the peer's friendly name, and whether the peer is there at all."""
    return {**override_to_dict(o), "name": name, "present": present}


def _override_listing(d: Daemon, overrides: list[Override]) -> list[dict[str, Any]]:
    keys = [(o.interface, o.public_key) for o in overrides]
    return [
        override_json(o, here, name)
        for o, here, name in zip(overrides, d.present(keys), d.peer_names(keys), strict=True)
    ]


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut short."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


# ---------------------------------------------------------------------------------------
# Handlers


async def get_health(request: web.Request) -> web.Response:
    # The most frequent request (probes, the benchmark's poll): its bytes are kept until
    # a tick or the passing of time changes them.
    h = request.app[DAEMON].health()
    cache = request.app[CACHE]
    if cache.health_key != h:
        cache.health_key = h
        cache.health = _encode(
            {"status": h.status, "ticks": h.ticks, "last_tick": h.last_tick,
             "last_error": h.last_error}
        ).encode()
    return web.Response(body=cache.health, content_type="application/json")


Build = Callable[[Fragments, dict[tuple[str, bytes], Override]], str]


def _cached(request: web.Request, name: str, build: Build) -> web.Response:
    """The answer `build` makes, from a cache valid for one snapshot and one override set."""
    d = request.app[DAEMON]
    live = _live(d)
    key = (d.serial, d.overrides_serial, tuple(live))
    cache = request.app[CACHE]
    if cache.key != key:
        cache.key = key
        cache.bodies.clear()
    body = cache.bodies.get(name)
    if body is None:
        if cache.fragments is None or cache.fragments.serial != d.serial:
            cache.fragments = Fragments.build(d.serial, d.snapshot)
        body = cache.bodies[name] = build(cache.fragments, live).encode()
    return web.Response(body=body, content_type="application/json")


async def get_status(request: web.Request) -> web.Response:
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[tuple[str, bytes], Override]) -> str:
        pol = d.policy
        absent = [o for o, here in zip(live.values(), d.present(list(live)), strict=True)
                  if not here]
        head = _encode(
            {
                "version": d.version,
                "backend": d.backend,
                "dry_run": d.dry_run,
                "policy": {"name": pol.name, "source": pol.source, "error": d.policy_error},
                "absent_overrides": _override_listing(d, absent),
            }
        )
        return f'{head[:-1]}, "interfaces": [{fragments.interfaces_json(live)}]}}'

    return _cached(request, "status", build)


def _query_one(request: web.Request, name: str, required: bool) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError(400, f"{name} given {len(values)} times", name)
    if not values:
        if required:
            raise ApiError(400, f"{name} is required", name)
        return None
    return values[0]


def _find_interface(snapshot: tuple[InterfaceStatus, ...], name: str) -> InterfaceStatus:
    for i in snapshot:
        if i.name == name:
            return i
    raise ApiError(404, f"unknown interface {_shown(name)}", "interface")


async def get_peers(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    name = _query_one(request, "interface", required=False)
    if name is not None:
        _find_interface(d.snapshot, name)  # 404 for an unknown one

    def build(fragments: Fragments, live: dict[tuple[str, bytes], Override]) -> str:
        return f'{{"peers": [{fragments.peers(name, live)}]}}'

    return _cached(request, "peers" if name is None else "peers/" + name, build)


async def get_overrides(request: web.Request) -> web.Response:
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[tuple[str, bytes], Override]) -> str:
        listing = _override_listing(d, list(live.values()))
        # By interface, then name (the unnamed last), then key: the order people look.
        listing.sort(key=lambda o: (o["interface"], not o["name"], o["name"], o["public_key"]))
        return _encode({"overrides": listing})

    return _cached(request, "overrides", build)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, f"content type must be application/json, not {request.content_type!r}")
    try:
        # client_max_size turns an oversized body into a 413 (limits_middleware refused an
        # oversized Content-Length already); a body that trickles in gets BODY_TIMEOUT.
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, f"the body did not arrive within {BODY_TIMEOUT:g} s") from None
    except web.HTTPException:
        raise
    except (ConnectionError, asyncio.IncompleteReadError) as exc:
        raise ClientGone(str(exc)) from None
    except Exception as exc:
        # aiohttp's payload errors (a hang-up mid-body, a broken chunked encoding) derive
        # from its ClientError hierarchy or are plain ValueErrors of the parser.
        if type(exc).__module__.startswith("aiohttp"):
            raise ClientGone(str(exc)) from None
        raise
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"{name} must be a number of seconds", name)
    if isinstance(value, int) and abs(value) > MAX_NUMBER:
        raise ApiError(400, f"{name} is out of range", name)  # float() of it would overflow
    out = float(value)
    if not math.isfinite(out):
        raise ApiError(400, f"{name} must be finite", name)
    return out


def parse_override(
    body: dict[str, Any], snapshot: tuple[InterfaceStatus, ...], now: float,
    names: dict[bytes, str] | None = None,
) -> Override:
    """Validate a POST /v1/overrides body against the last snapshot; raise ApiError."""
    unknown = sorted(set(body) - OVERRIDE_FIELDS)
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}", unknown[0])
    iface = body.get("interface")
    if not isinstance(iface, str) or not iface:
        raise ApiError(400, "interface must be a non-empty string", "interface")
    key_text = body.get("public_key")
    if not isinstance(key_text, str):
        raise ApiError(400, "public_key must be a base64 string", "public_key")
    try:
        key = decode_key(key_text)
    except BadKeyError as exc:
        raise ApiError(400, str(exc), "public_key") from None
    mode_text = body.get("mode")
    mode: Mode | None = None
    if mode_text is not None:
        if mode_text not in ("vanilla", "inline"):
            raise ApiError(400, f"mode must be 'vanilla' or 'inline', not {mode_text!r}", "mode")
        mode = Mode.VANILLA if mode_text == "vanilla" else Mode.INLINE
    core = body.get("core")
    if core is not None and (
        isinstance(core, bool) or not isinstance(core, int) or not 0 <= core < MAX_CORE
    ):
        raise ApiError(400, f"core must be a core number, not {core!r}", "core")
    reason = body.get("reason", "")
    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise ApiError(400, f"reason must be a string of at most {MAX_REASON} characters", "reason")
    bad = control_character(reason)
    if bad is not None:
        raise ApiError(
            400, f"reason must not contain control or format characters (found {bad})", "reason"
        )
    expires_in = _number(body, "expires_in")
    expires = _number(body, "expires")
    if expires_in is not None and expires is not None:  # null counts as absent
        raise ApiError(400, "give expires_in or expires, not both", "expires")
    if expires_in is not None and not 0 < expires_in <= MAX_EXPIRY:
        raise ApiError(400, f"expires_in must be > 0 and at most {MAX_EXPIRY:g} s", "expires_in")
    # Well-formed: now the peer must exist (404) before the values are weighed (422).
    found = _find_interface(snapshot, iface)
    if not has_peer(found, key):
        known = f" ({names[key]})" if names is not None and key in names else ""
        raise ApiError(404, f"unknown peer {key_text}{known} on {_shown(iface)}", "public_key")
    if mode is None and core is None:
        raise ApiError(422, "an override needs a mode, a core, or both", "mode")
    if expires_in is not None:
        expires = now + expires_in
    elif expires is not None:
        if expires <= now:
            raise ApiError(422, "expires is in the past", "expires")
        if expires > now + MAX_EXPIRY:
            raise ApiError(422, "expires is more than ten years away", "expires")
    if core is not None and core not in found.cores:
        raise ApiError(
            422, f"core {core} is not among the managed cores ({_cpulist(found.cores)})", "core"
        )
    return Override(iface, key, mode, core, expires, reason, now)


async def post_override(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    override = parse_override(await _json_body(request), d.snapshot, d.wall(), d.policy.names)
    try:
        await d.set_override(override, by=requester(request))
    except OSError as exc:
        raise ApiError(503, f"cannot save the state: {exc}") from None
    return web.json_response({"override": override_to_dict(override)}, status=201)


async def delete_override(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    iface = _query_one(request, "interface", required=True)
    key_text = _query_one(request, "public_key", required=True)
    assert iface is not None and key_text is not None
    # A '+' left unencoded in a query string reads as a space; base64 has no spaces.
    key_text = key_text.replace(" ", "+")
    try:
        key = decode_key(key_text)
    except BadKeyError as exc:
        raise ApiError(400, str(exc), "public_key") from None
    try:
        cleared = await d.clear_override(iface, key, by=requester(request))
    except OSError as exc:
        raise ApiError(503, f"cannot save the state: {exc}") from None
    if cleared is None:
        name = d.name_of(iface, key)
        shown = f"{name} ({key_text})" if name else key_text
        raise ApiError(404, f"no override for {shown} on {_shown(iface)}", "public_key")
    return web.json_response({"cleared": override_to_dict(cleared)})


async def get_policy(request: web.Request) -> web.Response:
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[tuple[str, bytes], Override]) -> str:
        # policy_to_dict encodes every name's key: once per tick, not once per request
        return _encode({"policy": policy_to_dict(d.policy), "error": d.policy_error})

    return _cached(request, "policy", build)


async def post_policy_reload(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    try:
        policy = await d.reload_policy(by=requester(request))
    except Exception as exc:
        raise ApiError(422, str(exc)) from None
    return web.json_response({"policy": policy_to_dict(policy)})


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONFIG].openapi, content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    cache = request.app[CACHE]
    serial = (d.serial, d.overrides_serial)
    # Metrics come from the tick's snapshot, its counters and the overrides: render once
    # per tick or override change, in a worker thread so that a large gateway's exposition
    # never holds the event loop, and let concurrent scrapes share that one rendering.
    if cache.metrics_serial != serial:
        pending = cache.metrics_pending
        if pending is None or pending[0] != serial:
            d.metrics.overrides = tuple(d.override_presence())
            pending = (serial, asyncio.ensure_future(asyncio.to_thread(d.metrics.render)))
            cache.metrics_pending = pending
        body = await asyncio.shield(pending[1])
        if cache.metrics_pending is pending:
            cache.metrics, cache.metrics_serial, cache.metrics_pending = body, serial, None
    else:
        body = cache.metrics
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------------------------
# The event log and explanations


def _count(request: web.Request, name: str, lo: int, hi: int, default: int | None) -> int | None:
    """A query parameter that is a whole number in [lo, hi] (ASCII digits only)."""
    text = _query_one(request, name, required=False)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise ApiError(400, f"{name} must be a whole number from {lo} to {hi}, "
                            f"not {_shown(text)}", name)
    value = int(text)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be from {lo} to {hi}, not {value}", name)
    return value


def _filter(request: web.Request, name: str) -> str | None:
    text = _query_one(request, name, required=False)
    if text is not None and not 0 < len(text) <= MAX_FILTER:
        raise ApiError(400, f"{name} must be 1 to {MAX_FILTER} characters", name)
    return text


def events_query(request: web.Request) -> tuple[int | None, int, ev.Match, bool]:
    """(since, limit, matcher, follow) of a GET /v1/events; ApiError (400) naming the
    parameter at fault."""
    unknown = sorted(set(request.query) - EVENTS_PARAMS)
    if unknown:
        raise ApiError(400, f"unknown parameter {_shown(unknown[0])} (since, limit, "
                            "interface, peer, follow)", unknown[0])
    since = _count(request, "since", 0, MAX_NUMBER, None)
    limit = _count(request, "limit", 1, EVENTS_MAX_LIMIT, EVENTS_LIMIT)
    assert limit is not None
    follow = _query_one(request, "follow", required=False)
    if follow not in (None, "0", "1", "true", "false"):
        raise ApiError(400, f"follow must be 0 or 1, not {_shown(follow)}", "follow")
    match = ev.matcher(_filter(request, "interface"), _filter(request, "peer"))
    return since, limit, match, follow in ("1", "true")


async def get_events(request: web.Request) -> web.StreamResponse:
    d = request.app[DAEMON]
    since, limit, match, follow = events_query(request)
    log_ = d.events
    # No since: the last `limit` events; since=N: the first `limit` after N (paging on).
    batch = log_.last(limit, match) if since is None else log_.after(since, limit, match)
    # Where the reader goes on from: after the last event returned when the limit cut the
    # answer short, else after the newest (every later one was looked at).
    nxt = batch[-1].seq if since is not None and len(batch) >= limit else log_.latest
    if not follow:
        return web.json_response({
            "events": [ev.event_json(e) for e in batch],
            "next_since": nxt,
            "latest": log_.latest,
            "oldest": log_.oldest,
            "missed": log_.missed(since) if since is not None else 0,
        }, dumps=_encode)
    return await _stream_events(request, batch, nxt, match)


async def _stream_events(
    request: web.Request, batch: list[ev.Event], since: int, match: ev.Match
) -> web.StreamResponse:
    """Newline-delimited JSON, one event a line, for at most FOLLOW_FOR seconds; an empty
    line after KEEPALIVE seconds of quiet."""
    d = request.app[DAEMON]
    streams = request.app[STREAMS]
    limit = request.app[CONFIG].max_streams
    if len(streams) >= limit:
        raise ApiError(503, f"too many event streams ({limit}); try again shortly, or "
                            "poll with since=")
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson",
                                       "Cache-Control": "no-store"})
    token = object()
    streams.add(token)
    try:
        await resp.prepare(request)
        end = time.monotonic() + FOLLOW_FOR
        seq = since

        async def send(data: bytes) -> None:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await resp.write(data)

        if batch:
            await send(b"".join(_encode(ev.event_json(e)).encode() + b"\n" for e in batch))
        while not d.stopping.is_set() and not d.events.closed:
            left = end - time.monotonic()
            if left <= 0:
                break
            if not await d.events.wait(seq, min(KEEPALIVE, left)):
                await send(b"\n")
                continue
            fresh = d.events.after(seq, EVENTS_MAX_LIMIT)
            if not fresh:
                continue
            seq = fresh[-1].seq
            lines = [_encode(ev.event_json(e)).encode() + b"\n" for e in fresh if match(e)]
            if lines:
                await send(b"".join(lines))
        await resp.write_eof()
    except (ConnectionError, TimeoutError) as exc:
        clients_log.info("event stream closed: %s", type(exc).__name__)
    finally:
        streams.discard(token)
    return resp


def _find_peer(cols: PeerColumns, text: str, names: dict[bytes, str]) -> int:
    """The row of `text` (a base64 key, a name, a name in another case) on `cols`."""
    try:
        key = decode_key(text)
    except BadKeyError:
        pass
    else:
        row = int(cols.find([key])[0])
        if row >= 0:
            return row
    listed = cols.names()
    for same in (lambda n: n == text, lambda n: n.casefold() == text.casefold()):
        rows = [i for i, n in enumerate(listed) if n and same(n)]
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise ApiError(404, f"{_shown(text)} names {len(rows)} peers on "
                                f"{_shown(cols.interface)}: give the key", "peer")
    raise ApiError(404, f"unknown peer {_shown(text)} on {_shown(cols.interface)}", "peer")


async def get_explain(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    iface = request.match_info["interface"]
    text = request.match_info["peer"]
    found = _find_interface(d.snapshot, iface)
    cols = columns(found)
    row = _find_peer(cols, text, d.policy.names)
    key = cols.raw_keys()[row]
    override = _live(d).get((iface, key))
    mine = d.events.last(10, ev.matcher(iface, encode_key(key)))
    data = explain_peer(d.controller, cols, row, override, mine, d.last_tick)
    return web.json_response(data, dumps=_encode)


def build_app(
    daemon: Daemon, *, access: Access | None = None, token: str | None = None,
    max_streams: int = MAX_STREAMS,
) -> web.Application:
    """The API application; the caller adds the tick loop to its cleanup_ctx.

    `access` None (and no `token`): no access checks, for in-process test servers; the
    daemon always passes one. `token` alone is an admin token (the older signature)."""
    if access is None and token is not None:
        access = Access(admin_token=token)
    middlewares: list[Any] = [errors_middleware, limits_middleware]
    if access is not None:
        middlewares.append(_access_middleware(access))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[DAEMON] = daemon
    app[CONFIG] = ApiConfig(access, openapi_document(), max_streams)
    app[STREAMS] = set()
    app[CACHE] = BodyCache()
    app[BUSY] = set()
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/peers", get_peers)
    # A key has "/" in it, percent-encoded or not: the peer is the rest of the path.
    app.router.add_get("/v1/peers/{interface}/{peer:.+}/explain", get_explain)
    app.router.add_get("/v1/events", get_events)
    app.router.add_get("/v1/overrides", get_overrides)
    app.router.add_post("/v1/overrides", post_override)
    app.router.add_delete("/v1/overrides", delete_override)
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_post("/v1/policy/reload", post_policy_reload)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_metrics)
    return app
