"""GET /v1/events (answers and streams) and GET /v1/peers/{iface}/{peer}/explain."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from wghybrid.core.status import PeerColumns, columns
from wghybrid.daemon import events as ev
from wghybrid.daemon.api.base import CONFIG, DAEMON, MAX_NUMBER, STREAMS, ApiError, clients_log
from wghybrid.daemon.api.fragments import _encode, _live
from wghybrid.daemon.api.routes import (
    _find_interface,
    _query_one,
    _shown,
    check_ifname,
    only_params,
)
from wghybrid.daemon.explain import explain_peer
from wghybrid.model import (
    BadKeyError,
    PeerId,
    decode_key,
    encode_key,
)

EVENTS_LIMIT = 100
"""GET /v1/events: events per answer unless `limit` says otherwise."""
EVENTS_MAX_LIMIT = 1000
"""... and at most this many."""
EVENTS_PARAMS = ("since", "limit", "interface", "peer", "follow")
MAX_FILTER = 256
"""Characters of an `interface` or `peer` filter."""
FOLLOW_FOR = 3600.0
"""Seconds an event stream (follow=1) stays open; the client reconnects with since=."""
KEEPALIVE = 15.0
"""Seconds of quiet after which a stream sends an empty line (under aiohttp's and
proxies' idle timeouts; it also finds out a client that went away)."""
WRITE_TIMEOUT = 30.0


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
    only_params(request, *EVENTS_PARAMS)
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
    only_params(request)
    iface = request.match_info["interface"]
    text = request.match_info["peer"]
    check_ifname(iface)
    if not 0 < len(text) <= MAX_FILTER:
        raise ApiError(400, f"peer must be 1 to {MAX_FILTER} characters", "peer")
    found = _find_interface(d.snapshot, iface)
    cols = columns(found)
    row = _find_peer(cols, text, d.policy.names)
    key = cols.raw_keys()[row]
    override = _live(d).get(PeerId(iface, key))
    mine = d.events.last(10, ev.matcher(iface, encode_key(key)))
    data = explain_peer(d.controller, cols, row, override, mine, d.last_tick)
    return web.json_response(data, dumps=_encode)

