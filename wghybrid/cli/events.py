"""`wghybrid log` and `wghybrid explain`: the daemon's event log and its explanation of a peer.

    wghybrid log [-f] [--json] [--since N] [--limit N] [IFACE [PEER]]
    wghybrid explain IFACE PEER [--json]

`log` prints the daemon's last events (`GET /v1/events`), one line each as the daemon
logged it, with its sequence id and time; `-f` keeps following (`follow=1`, reconnecting
from the last id it saw when the daemon ends a stream); `--json` prints each event as one
line of JSON (NDJSON). `explain` prints what the controller measured, estimated and
compared for one peer, and what it did or why it did nothing (`GET
/v1/peers/IFACE/PEER/explain`). PEER is a friendly name or a base64 key.

`add_event_commands(parser)` adds both to the CLI's parser (wghybrid/cli/table.py calls it).
Only the standard library is imported here (the CLI's start-up time).
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import http.client

EVENTS_MAX_LIMIT = 1000
"""The daemon's limit on events per answer (wghybrid/daemon/api/events.py)."""
STREAM_READ_TIMEOUT = 45.0
"""Seconds `log -f` waits for a line: the daemon sends an empty one every 15 s of quiet."""


def _since(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"bad event id {text!r} (a whole number, 0 or more)")
    return int(text)


def _limit(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 4 \
            or not 1 <= int(text) <= EVENTS_MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"bad limit {text!r} (a whole number from 1 to {EVENTS_MAX_LIMIT})")
    return int(text)


def add_event_commands(parser: argparse.ArgumentParser) -> None:
    """Add `log` and `explain` to the CLI's subcommands."""
    from wghybrid.cli import table

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser(
        "log", help="the daemon's event log: every change and refusal (-f: follow)",
        description="The daemon's last events (every change it made and every refusal, "
        "with its reason), one line each as the daemon logged it, with its id and time. "
        "-f keeps following; --json prints one JSON object per event and line. "
        "Event fields and the journal's: docs/api.md, Events.",
    )
    p.add_argument("interface", nargs="?", metavar="IFACE", help="only this interface")
    p.add_argument("peer", nargs="?", metavar="PEER", help="only this peer (name or key)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p.add_argument("--since", type=_since, metavar="N", help="the events after id N")
    p.add_argument("--limit", type=_limit, metavar="N", default=None,
                   help=f"at most N events (1-{EVENTS_MAX_LIMIT}; default: the daemon's, 100)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="one JSON object per event and line (NDJSON)")
    table._add_connection_options(p, top=False)
    p.set_defaults(handler=cmd_log, parser=p)

    p = sub.add_parser(
        "explain", help="why a peer is where it is: measured, estimated, compared, done",
        description="What the controller measured, estimated and compared for one peer, "
        "and what it did or why it did nothing, as of the last tick.",
    )
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("peer", metavar="PEER", help="friendly name or base64 public key")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print the API's JSON")
    table._add_connection_options(p, top=False)
    p.set_defaults(handler=cmd_explain, parser=p)


# ---------------------------------------------------------------------------------------
# Talking to the daemon (blocking, standard library)


def _unix(path: str, timeout: float) -> http.client.HTTPConnection:
    """An HTTP connection over the unix socket `path` (http.client is imported only by
    the commands that talk to the daemon: it costs 25 ms of every CLI call's start)."""
    import http.client
    import socket

    class Unix(http.client.HTTPConnection):
        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    return Unix("wghybrid", timeout=timeout)


class _Daemon:
    """One connection to the daemon, from the CLI's connection options."""

    def __init__(self, args: argparse.Namespace, timeout: float) -> None:
        import http.client

        from wghybrid.cli._http import check_url, read_token, tls_context

        self.headers = {"Accept": "application/json"}
        self.url = getattr(args, "url", None)
        if self.url:
            check_url(self.url)
            token_file = getattr(args, "token_file", None)
            if token_file:
                self.headers["Authorization"] = f"Bearer {read_token(token_file)}"
            parts = urllib.parse.urlsplit(self.url)
            host = parts.hostname or ""
            if parts.scheme == "https":
                cafile = getattr(args, "cacert", None)
                context = tls_context(cafile) if cafile else None
                self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, parts.port or 443, timeout=timeout, context=context)
            else:
                self.conn = http.client.HTTPConnection(host, parts.port or 80, timeout=timeout)
            self.where = self.url
        else:
            self.where = str(args.socket)
            self.conn = _unix(self.where, timeout)

    def open(self, path: str, params: dict[str, str]) -> http.client.HTTPResponse:
        """GET `path`; the response (2xx) or ApiError/UnreachableError."""
        import http.client

        from wghybrid.cli._http import ApiError, UnreachableError

        target = path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            self.conn.request("GET", target, headers=self.headers)
            resp = self.conn.getresponse()
        except TimeoutError:
            raise UnreachableError(self.where, "no answer in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise UnreachableError(self.where, getattr(exc, "strerror", None) or str(exc)
                                   or type(exc).__name__) from None
        if resp.status >= 400:
            raw = resp.read(1 << 20)
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = f"GET {path}: HTTP {resp.status} {resp.reason}"
            raise ApiError(resp.status, str(message))
        return resp

    def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        from wghybrid.cli._http import ApiError

        resp = self.open(path, params)
        try:
            data = json.loads(resp.read())
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ApiError(resp.status, f"GET {path}: the daemon's answer is not a JSON object")
        return data

    def close(self) -> None:
        self.conn.close()


def _lines(resp: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    """The events of an NDJSON stream (empty lines are keep-alives)."""
    while True:
        raw = resp.readline(1 << 20)
        if not raw:
            return
        raw = raw.strip()
        if raw:
            item = json.loads(raw)
            if isinstance(item, dict):
                yield item


# ---------------------------------------------------------------------------------------
# Rendering


def _clock(t: Any) -> str:
    try:
        return time.strftime("%F %T", time.localtime(float(t)))
    except (TypeError, ValueError, OverflowError):
        return "?"


def render_event(event: dict[str, Any]) -> str:
    """One event for people: id, local time, the daemon's log line."""
    text = str(event.get("text") or "")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return f"{event.get('seq', '?'):>6} {_clock(event.get('time'))} {text}"


def render_explain(data: dict[str, Any]) -> str:
    lines = [str(x) for x in data.get("text") or []]
    return "".join("".join(c if c.isprintable() else "?" for c in s) + "\n" for s in lines)


# ---------------------------------------------------------------------------------------
# Commands


def _print(out: TextIO, event: dict[str, Any], as_json: bool) -> None:
    out.write((json.dumps(event) if as_json else render_event(event)) + "\n")
    out.flush()


def cmd_log(ctx: Any) -> int:
    args = ctx.args
    if args.peer is not None and args.interface is None:
        args.parser.error("PEER needs IFACE")
    as_json = bool(getattr(args, "json", False))
    params: dict[str, str] = {}
    if args.interface is not None:
        params["interface"] = args.interface
    if args.peer is not None:
        params["peer"] = args.peer
    if args.limit is not None:
        params["limit"] = str(args.limit)
    if args.since is not None:
        params["since"] = str(args.since)
    out: TextIO = ctx.out
    api = _Daemon(args, float(getattr(args, "timeout", 10.0)))
    try:
        data = api.get("/v1/events", params)
    finally:
        api.close()
    if data.get("missed"):
        print(f"({data['missed']} event(s) after {args.since} are no longer kept)",
              file=ctx.err)
    for event in data.get("events") or []:
        _print(out, event, as_json)
    if not args.follow:
        return 0
    params.pop("limit", None)
    params["since"] = str(data.get("next_since", 0))
    return _follow(ctx, params, as_json)


def _follow(ctx: Any, params: dict[str, str], as_json: bool) -> int:
    """Stream from `since`, and when the daemon ends a stream (its time limit), go on from
    the last id seen; a daemon that went away ends the command."""
    import http.client

    args = ctx.args
    params = {**params, "follow": "1"}
    while True:
        api = _Daemon(args, max(float(getattr(args, "timeout", 10.0)), STREAM_READ_TIMEOUT))
        started = time.monotonic()
        try:
            resp = api.open("/v1/events", params)
            for event in _lines(resp):
                _print(ctx.out, event, as_json)
                if isinstance(event.get("seq"), int):
                    params["since"] = str(event["seq"])
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            from wghybrid.cli._http import UnreachableError

            raise UnreachableError(api.where, f"the event stream broke: {exc or 'EOF'}") \
                from None
        finally:
            api.close()
        if time.monotonic() - started < 1.0:
            return 0  # ended at once: the daemon is stopping


def cmd_explain(ctx: Any) -> int:
    args = ctx.args
    api = _Daemon(args, float(getattr(args, "timeout", 10.0)))
    path = "/v1/peers/{}/{}/explain".format(
        urllib.parse.quote(args.interface, safe=""), urllib.parse.quote(args.peer, safe=""))
    try:
        data = api.get(path, {})
    finally:
        api.close()
    if getattr(args, "json", False):
        json.dump(data, ctx.out, indent=2)
        ctx.out.write("\n")
    else:
        ctx.out.write(render_explain(data))
    return 0

