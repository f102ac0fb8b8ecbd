"""The HTTP API (aiohttp), versioned under /v1; `openapi.json` beside this file describes it.

Handlers never await the data plane: they read the daemon's last status snapshot and its
overrides, so the tick loop keeps its cadence however busy the API is. Every request is
validated before anything is touched; a bad one gets a 4xx with
`{"error": "<what is wrong>", "field": "<name>" | null}`. An unexpected exception becomes
a logged 500 with the same shape; it never reaches the event loop.

Over a unix socket, access is the socket's file mode (0660). Over TCP every request must
carry `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from wghybrid.model import (
    BadKeyError,
    InterfaceStatus,
    Mode,
    Override,
    PeerStatus,
    decode_key,
    encode_key,
    format_cores,
)
from wghybrid.policy import policy_to_dict
from wghybrid.state import override_to_dict

if TYPE_CHECKING:
    from wghybrid.daemon import Daemon

log = logging.getLogger("wghybrid.api")

MAX_BODY = 64 * 1024
MAX_REASON = 1024
MAX_EXPIRY = 10 * 365 * 24 * 3600.0
"""Ten years: a longer expiry is a mistake; omit it to pin until cleared."""
MAX_CORE = 1 << 20
OVERRIDE_FIELDS = frozenset(
    {"interface", "public_key", "mode", "core", "expires_in", "expires", "reason"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ApiConfig:
    token: str | None
    """Bearer token TCP requests must present; None when the API is only on a unix socket."""
    openapi: bytes


@dataclass(slots=True)
class BodyCache:
    """Encoded answers of the big GETs (status, peers, metrics), built at most once per
    tick or override change: under load the API serves bytes, not fresh JSON."""

    key: object = None
    bodies: dict[str, bytes] = field(default_factory=dict)
    metrics: bytes = b""
    metrics_serial: int = -1
    metrics_pending: tuple[int, asyncio.Future[bytes]] | None = None
    fragments: Fragments | None = None


@dataclass(frozen=True, slots=True)
class Fragments:
    """One snapshot pre-encoded: per interface its JSON head, per peer its JSON minus the
    two fields an override changes ("pinned", "override"). A new override costs a join of
    strings, not a re-encoding of every peer."""

    serial: int
    interfaces: tuple[tuple[str, str, tuple[tuple[tuple[str, bytes], str], ...]], ...]
    """(name, head without its closing brace, ((interface, key), peer without its closing
    brace) ...)"""

    @staticmethod
    def build(serial: int, snapshot: tuple[InterfaceStatus, ...]) -> Fragments:
        out = []
        for i in snapshot:
            head = _encode(interface_json(i, {}, with_peers=False))[:-1]
            peers = tuple(
                ((p.interface, p.public_key), _encode(_peer_fields(p))[:-1]) for p in i.peers
            )
            out.append((i.name, head, peers))
        return Fragments(serial, tuple(out))

    def peers(self, name: str | None, live: dict[tuple[str, bytes], Override]) -> str:
        return ", ".join(
            _peer_tail(base, live.get(key))
            for iname, _, peers in self.interfaces
            if name is None or iname == name
            for key, base in peers
        )

    def interfaces_json(self, live: dict[tuple[str, bytes], Override]) -> str:
        return ", ".join(
            f'{head}, "peers": [{self.peers(name, live)}]}}' for name, head, _ in self.interfaces
        )


def _encode(data: object) -> str:
    return json.dumps(data, allow_nan=False)


def _peer_tail(base: str, override: Override | None) -> str:
    if override is None:
        return base + ', "pinned": false, "override": null}'
    return f'{base}, "pinned": true, "override": {_encode(override_to_dict(override))}}}'


DAEMON: web.AppKey[Daemon] = web.AppKey("daemon")
CONFIG = web.AppKey("config", ApiConfig)
CACHE = web.AppKey("cache", BodyCache)


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


def token_matches(expected: str, header: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    offered = value.strip().encode("utf-8", "backslashreplace")  # any bytes a client sent
    return hmac.compare_digest(offered, expected.encode())


def is_unix_request(request: web.BaseRequest) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


# ---------------------------------------------------------------------------------------
# Middlewares: errors (outermost), then authentication


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")
        }
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return error_response(exc.status, message or exc.reason, None, headers)
    except Exception:
        request.app[DAEMON].metrics.internal_errors.inc()
        request.app[DAEMON].serial += 1
        log.exception("internal error answering %s %s", request.method, request.rel_url)
        return error_response(500, "internal error (logged by the daemon)")


def _auth_middleware(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_unix_request(request) and not token_matches(
            token, request.headers.get("Authorization")
        ):
            raise ApiError(401, "a bearer token is required (Authorization: Bearer <token>)")
        return await handler(request)

    return auth


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
    }
    if with_peers:
        out["peers"] = [peer_json(p, overrides.get((p.interface, p.public_key))) for p in i.peers]
    return out


def _live(daemon: Daemon) -> dict[tuple[str, bytes], Override]:
    return {(o.interface, o.public_key): o for o in daemon.live_overrides()}


# ---------------------------------------------------------------------------------------
# Handlers


async def get_health(request: web.Request) -> web.Response:
    h = request.app[DAEMON].health()
    return web.json_response(
        {"status": h.status, "ticks": h.ticks, "last_tick": h.last_tick, "last_error": h.last_error}
    )


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
        head = _encode(
            {
                "version": d.version,
                "backend": d.backend,
                "dry_run": d.dry_run,
                "policy": {"name": pol.name, "source": pol.source, "error": d.policy_error},
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
    raise ApiError(404, f"unknown interface {name!r}", "interface")


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
    return web.json_response({"overrides": [override_to_dict(o) for o in d.live_overrides()]})


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, f"content type must be application/json, not {request.content_type!r}")
    raw = await request.read()  # client_max_size turns an oversized body into a 413
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
    out = float(value)
    if not math.isfinite(out):
        raise ApiError(400, f"{name} must be finite", name)
    return out


def parse_override(
    body: dict[str, Any], snapshot: tuple[InterfaceStatus, ...], now: float
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
    if any(c < " " or c == "\x7f" for c in reason):
        raise ApiError(400, "reason must not contain control characters", "reason")
    expires_in = _number(body, "expires_in")
    expires = _number(body, "expires")
    if "expires_in" in body and "expires" in body:
        raise ApiError(400, "give expires_in or expires, not both", "expires")
    if expires_in is not None and not 0 < expires_in <= MAX_EXPIRY:
        raise ApiError(400, f"expires_in must be > 0 and at most {MAX_EXPIRY:g} s", "expires_in")
    # Well-formed: now the peer must exist (404) before the values are weighed (422).
    found = _find_interface(snapshot, iface)
    if not any(p.public_key == key for p in found.peers):
        raise ApiError(404, f"unknown peer {key_text} on {iface}", "public_key")
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
    override = parse_override(await _json_body(request), d.snapshot, d.wall())
    try:
        await d.set_override(override)
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
        cleared = await d.clear_override(iface, key)
    except OSError as exc:
        raise ApiError(503, f"cannot save the state: {exc}") from None
    if cleared is None:
        raise ApiError(404, f"no override for {key_text} on {iface}", "public_key")
    return web.json_response({"cleared": override_to_dict(cleared)})


async def get_policy(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    return web.json_response({"policy": policy_to_dict(d.policy), "error": d.policy_error})


async def post_policy_reload(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    try:
        policy = await d.reload_policy()
    except Exception as exc:
        raise ApiError(422, str(exc)) from None
    return web.json_response({"policy": policy_to_dict(policy)})


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[CONFIG].openapi, content_type="application/json")


async def get_metrics(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    cache = request.app[CACHE]
    serial = d.serial
    # Metrics come from the tick's snapshot and counters only (overrides do not change
    # them): render once per tick, in a worker thread so that a large gateway's exposition
    # never holds the event loop, and let concurrent scrapes share that one rendering.
    if cache.metrics_serial != serial:
        pending = cache.metrics_pending
        if pending is None or pending[0] != serial:
            pending = (serial, asyncio.ensure_future(asyncio.to_thread(d.metrics.render)))
            cache.metrics_pending = pending
        body = await asyncio.shield(pending[1])
        if cache.metrics_pending is pending:
            cache.metrics, cache.metrics_serial, cache.metrics_pending = body, serial, None
    else:
        body = cache.metrics
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(daemon: Daemon, *, token: str | None = None) -> web.Application:
    """The API application; the caller adds the tick loop to its cleanup_ctx."""
    middlewares: list[Any] = [errors_middleware]
    if token is not None:
        middlewares.append(_auth_middleware(token))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[DAEMON] = daemon
    app[CONFIG] = ApiConfig(token, openapi_document())
    app[CACHE] = BodyCache()
    app.router.add_get("/v1/health", get_health)
    app.router.add_get("/v1/status", get_status)
    app.router.add_get("/v1/peers", get_peers)
    app.router.add_get("/v1/overrides", get_overrides)
    app.router.add_post("/v1/overrides", post_override)
    app.router.add_delete("/v1/overrides", delete_override)
    app.router.add_get("/v1/policy", get_policy)
    app.router.add_post("/v1/policy/reload", post_policy_reload)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/metrics", get_metrics)
    return app
