"""The handlers: health, status, peers, overrides, policy, OpenAPI, metrics."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from wghybrid.core.status import has_peer
from wghybrid.daemon.api.access import requester
from wghybrid.daemon.api.base import (
    BODY_TIMEOUT,
    CACHE,
    CONFIG,
    DAEMON,
    MAX_CORE,
    MAX_EXPIRY,
    MAX_NUMBER,
    MAX_REASON,
    OVERRIDE_FIELDS,
    ApiError,
    ClientGone,
)
from wghybrid.daemon.api.fragments import Fragments, _cpulist, _encode, _live, _override_listing
from wghybrid.daemon.metrics import accepts_gzip
from wghybrid.daemon.state import override_to_dict
from wghybrid.model import (
    BadKeyError,
    InterfaceStatus,
    Mode,
    Override,
    PeerId,
    control_character,
    decode_key,
)
from wghybrid.policy.load import policy_to_dict


def _shown(text: str) -> str:
    """`text` quoted for an error message, cut short."""
    return repr(text if len(text) <= 64 else text[:61] + "...")


# ---------------------------------------------------------------------------------------
# Handlers


async def get_health(request: web.Request) -> web.Response:
    only_params(request)
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


Build = Callable[[Fragments, dict[PeerId, Override]], str]


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
    only_params(request)
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[PeerId, Override]) -> str:
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


def only_params(request: web.Request, *allowed: str) -> None:
    """400 naming the first query parameter `request` has that its endpoint does not take:
    a misspelt filter silently ignored would answer a different question than was asked."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        takes = f"({', '.join(allowed)})" if allowed else "(it takes none)"
        raise ApiError(400, f"unknown parameter {_shown(unknown[0])} {takes}", unknown[0])


IFNAMSIZ = 16
"""Linux's interface name size, the NUL included (include/uapi/linux/if.h)."""


def check_ifname(name: str, field: str = "interface") -> None:
    """400 unless `name` could be the name of an interface the daemon manages: 1 to 15
    characters (IFNAMSIZ - 1), printable ASCII without '/', ':' or a space, not '.' or '..'.
    The kernel's own rule (dev_valid_name()) also lets other bytes through; WireGuard
    interfaces are named wg0, site-b and the like, and one rule shared with the OpenAPI
    document (`Ifname`) keeps a name the schema allows from being refused here. Anything
    else could never be found, and a 404 would hide that the request itself is malformed."""
    if not 0 < len(name) < IFNAMSIZ:
        raise ApiError(400, f"{field} must be an interface name of 1 to {IFNAMSIZ - 1} "
                            f"characters, not {len(name)} ({_shown(name)})", field)
    if name in (".", "..") or any(not "!" <= c <= "~" or c in "/:" for c in name):
        raise ApiError(400, f"{field} {_shown(name)} is not an interface name (printable "
                            "ASCII without '/', ':' or spaces; not '.' or '..')", field)


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
    only_params(request, "interface")
    name = _query_one(request, "interface", required=False)
    if name is not None:
        check_ifname(name)
        _find_interface(d.snapshot, name)  # 404 for an unknown one

    def build(fragments: Fragments, live: dict[PeerId, Override]) -> str:
        return f'{{"peers": [{fragments.peers(name, live)}]}}'

    return _cached(request, "peers" if name is None else "peers/" + name, build)


async def get_overrides(request: web.Request) -> web.Response:
    only_params(request)
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[PeerId, Override]) -> str:
        listing = _override_listing(d, list(live.values()))
        # By interface, then name (the unnamed last), then key: the order people look.
        listing.sort(key=lambda o: (o["interface"], not o["name"], o["name"], o["public_key"]))
        return _encode({"overrides": listing})

    return _cached(request, "overrides", build)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different: with a key given twice, which one
    counts is the parser's choice (the last, in Python), not the client's intent."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ApiError(400, f"field {_shown(k)} given twice", k)
        out[k] = v
    return out


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
        body = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_keys
        )
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
    check_ifname(iface)
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
    only_params(request)
    override = parse_override(await _json_body(request), d.snapshot, d.wall(), d.policy.names)
    try:
        await d.set_override(override, by=requester(request))
    except OSError as exc:
        raise ApiError(503, f"cannot save the state: {exc}") from None
    return web.json_response({"override": override_to_dict(override)}, status=201)


async def delete_override(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    only_params(request, "interface", "public_key")
    iface = _query_one(request, "interface", required=True)
    key_text = _query_one(request, "public_key", required=True)
    assert iface is not None and key_text is not None
    check_ifname(iface)
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
    only_params(request)
    d = request.app[DAEMON]

    def build(fragments: Fragments, live: dict[PeerId, Override]) -> str:
        # policy_to_dict encodes every name's key: once per tick, not once per request
        return _encode({"policy": policy_to_dict(d.policy), "error": d.policy_error})

    return _cached(request, "policy", build)


async def post_policy_reload(request: web.Request) -> web.Response:
    d = request.app[DAEMON]
    only_params(request)
    if request.body_exists:
        # Nothing to say but "reload": no body, or an empty JSON object (clients that
        # always send one). Anything else was meant for another endpoint.
        body = await _json_body(request)
        if body:
            raise ApiError(400, "POST /v1/policy/reload takes no body (it reloads the policy "
                                f"file); got field {_shown(sorted(body)[0])}", sorted(body)[0])
    try:
        policy = await d.reload_policy(by=requester(request))
    except Exception as exc:
        raise ApiError(422, str(exc)) from None
    return web.json_response({"policy": policy_to_dict(policy)})


async def get_openapi(request: web.Request) -> web.Response:
    only_params(request)
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
            pending = (serial, asyncio.ensure_future(asyncio.to_thread(d.metrics.exposition)))
            cache.metrics_pending = pending
        body = await asyncio.shield(pending[1])
        if cache.metrics_pending is pending:
            cache.metrics, cache.metrics_serial, cache.metrics_pending = body, serial, None
    else:
        body = cache.metrics
    # Prometheus always asks for gzip: the per-peer series repeat each 44-character key,
    # which the compression takes back (docs/api.md, "Metrics": bytes per peer).
    headers = {"Content-Type": CONTENT_TYPE_LATEST, "Vary": "Accept-Encoding"}
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=body.gzip, headers=headers)
    return web.Response(body=body.plain, headers=headers)


# ---------------------------------------------------------------------------------------
# The event log and explanations


