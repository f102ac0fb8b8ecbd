"""`wghybrid`: the command line, in the manner of wireguard-tools.

Subcommands come from one table (`COMMANDS`); plain `wghybrid` does what `wghybrid status`
does. Every command but `run`, `validate` and `version` talks to the daemon over its HTTP
API (unix socket by default, TCP with a bearer token when --url is given). Output is
either for people (`status`, colour as wg's: `--color`, `WG_COLOR_MODE`) or for scripts
(`--json`, `dump`, `status IFACE FIELD`); every change the CLI makes is printed as one
`[#] ...` line, as wg-quick does.

Start-up time is part of the interface (a read-only call answers in under 150 ms,
bench/cli_latency.py): this module imports the standard library and `_render` only; the
table's commands talk to the daemon with `wghybrid._http.QuickClient` (no aiohttp, no
asyncio), and what else a command needs is imported inside it.

Exit codes: 0 success, 1 failure (daemon unreachable, request refused, bad policy),
2 bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TextIO

from wghybrid import __version__, _render
from wghybrid._http import (
    DEFAULT_SOCKET,
    Api,
    ApiError,
    ClientError,
    QuickClient,
    read_token,
    run_sync,
)

PROG = "wghybrid"

# ---------------------------------------------------------------------------
# Argument types


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """"90", "90s", "10m", "1h30m", "2d" -> seconds (> 0)."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text) or total <= 0:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r} (examples: 90s, 10m, 1h30m, 2d)"
        )
    return total


def parse_time(text: str) -> float:
    """An ISO 8601 date-time (local time unless it names a zone) -> unix time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r} (ISO 8601, e.g. 2026-11-24T22:30 or 2026-11-24T22:30:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: the operator's local time
    return when.timestamp()


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"bad number of seconds {text!r}")
    return value


def parse_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"bad number {text!r} (1 or more)")
    return n


def parse_width(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 40:
        raise argparse.ArgumentTypeError(f"bad width {text!r} (40 columns or more)")
    return n


def parse_core(text: str) -> int:
    try:
        core = int(text)
    except ValueError:
        core = -1
    if core < 0:
        raise argparse.ArgumentTypeError(f"bad core {text!r} (a core number, 0 or more)")
    return core


# ---------------------------------------------------------------------------
# The context a command runs in


@dataclass
class Context:
    args: argparse.Namespace
    out: TextIO
    err: TextIO

    @property
    def paint(self) -> _render.Palette:
        return _render.Palette(wants_colour(self.args, self.out))

    def change(self, text: str) -> None:
        """Print one change made to the system, wg-quick style."""
        print(f"[#] {text}", file=self.out)

    def json(self, data: Any) -> None:
        json.dump(data, self.out, indent=2)
        self.out.write("\n")

    def quick(self) -> QuickClient:
        """The standard library's client: what the command table's commands use."""
        args = self.args
        if args.url:
            token = read_token(args.token_file) if args.token_file else None
            return QuickClient.tcp(args.url, token, cafile=args.cacert, timeout=args.timeout)
        return QuickClient.unix(args.socket, timeout=args.timeout)


COLOR_MODES = ("auto", "always", "never")


def colour_mode(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """--color, else WG_COLOR_MODE as wg(8) reads it (always, never; anything else or
    unset: auto)."""
    flag = getattr(args, "color", None)
    if flag in COLOR_MODES:
        return str(flag)
    env = os.environ if environ is None else environ
    mode = env.get("WG_COLOR_MODE", "")
    return mode if mode in ("always", "never") else "auto"


def wants_colour(
    args: argparse.Namespace, stream: TextIO, environ: Mapping[str, str] | None = None
) -> bool:
    """always / never, or auto: only on a terminal, and not with NO_COLOR set."""
    mode = colour_mode(args, environ)
    if mode != "auto":
        return mode == "always"
    return _render.wants_colour(stream, environ)


def _api(command: Callable[[Context, Any], Awaitable[int]]) -> Callable[[Context], int]:
    """Run a command with a connected client: the standard library's, without aiohttp or
    an event loop (a command only awaits its client), so that a call starts fast.
    `wghybrid.client.Client` is the asyncio client for programs."""

    def run(ctx: Context) -> int:
        with ctx.quick() as api:
            return run_sync(command(ctx, api))

    return run


# ---------------------------------------------------------------------------
# Peers: a base64 key or a friendly name


async def resolve_peer(api: Api, interface: str, text: str) -> tuple[str, str]:
    """(base64 key, label) of `text` on `interface`: a key, a name, or a unique key prefix."""
    from wghybrid.model import BadKeyError, decode_key  # numpy: only when needed (startup)

    try:
        decode_key(text)
    except BadKeyError:
        pass
    else:
        return text, text[:8]
    peers = (await api.get("/v1/peers", {"interface": interface}))["peers"]
    for match in (
        lambda p: p.get("name") == text,
        lambda p: str(p.get("name") or "").casefold() == text.casefold(),
        lambda p: len(text) >= 4 and str(p["public_key"]).startswith(text),
    ):
        found = [p for p in peers if match(p)]
        if len(found) == 1:
            return str(found[0]["public_key"]), _render.peer_label(found[0])
        if len(found) > 1:
            labels = ", ".join(str(p["public_key"])[:8] for p in found)
            raise ClientError(f"{text!r} matches several peers on {interface}: {labels}")
    raise ClientError(
        f"{interface} has no peer {text!r} (a base64 key, a name, or the start of a key)"
    )


async def peer_names(api: Api) -> dict[tuple[str, str], str]:
    peers = (await api.get("/v1/peers"))["peers"]
    return {(str(p["interface"]), str(p["public_key"])): str(p.get("name") or "") for p in peers}


# ---------------------------------------------------------------------------
# Commands


def _interface_arg(args: argparse.Namespace) -> str | None:
    iface = getattr(args, "interface", None)
    return None if iface in (None, "all") else str(iface)


def status_view(args: argparse.Namespace, default_sort: str = "load") -> _render.View:
    return _render.View(
        sort=getattr(args, "sort", None) or default_sort,
        mode=getattr(args, "only_mode", None),
        match=getattr(args, "match", None),
        top=getattr(args, "top", None),
        width=getattr(args, "width", None) or _render.WIDTH,
    )


def _filtered_json(status: dict[str, Any], iface: str | None,
                   view: _render.View) -> dict[str, Any]:
    only = [
        {**i, "peers": _render.select_peers(i.get("peers") or [], view)}
        for i in status["interfaces"] if iface in (None, i.get("name"))
    ]
    return {**status, "interfaces": only}


async def _status_text(ctx: Context, api: Api) -> str:
    """One screen of `status` (or of one FIELD), as the flags ask."""
    args = ctx.args
    status = await api.get("/v1/status")
    iface = _interface_arg(args)
    if iface is not None and not any(i.get("name") == iface for i in status["interfaces"]):
        raise ClientError(f"{iface} is not an interface the daemon manages")
    field = getattr(args, "field", None)
    if field is not None:
        transfer = await _transfer(api, status) if field == "transfer" else None
        return _render.render_field(status, iface, field, status_view(args, default_sort=""),
                                    transfer=transfer)
    if getattr(args, "json", False):  # the API's order unless --sort says otherwise
        view = status_view(args, default_sort="")
        return json.dumps(_filtered_json(status, iface, view), indent=2) + "\n"
    view = status_view(args)
    if getattr(args, "width", None) is None and getattr(ctx.out, "isatty", bool)():
        import shutil  # a terminal narrower than 80 columns: its width

        view = replace(view, width=max(40, min(view.width, shutil.get_terminal_size().columns)))
    health = await api.get("/v1/health")
    return _render.render_status(status, ctx.paint, interface=iface, health=health, view=view)


_PEER_BYTES = re.compile(
    r'^wghybrid_peer_(receive|transmit)_bytes_total\{interface="([^"]*)",'
    r'public_key="([^"]*)"\} ([0-9.e+]+)$', re.MULTILINE)


def parse_transfer(metrics: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(interface, key) -> (bytes received, bytes sent), from /metrics' per-peer counters."""
    out: dict[tuple[str, str], list[int]] = {}
    for m in _PEER_BYTES.finditer(metrics):
        try:
            value = int(float(m[4]))
        except (ValueError, OverflowError):
            continue
        out.setdefault((m[2], m[3]), [0, 0])[0 if m[1] == "receive" else 1] = value
    return {k: (v[0], v[1]) for k, v in out.items()}


async def _transfer(api: Api, status: dict[str, Any]) -> dict[tuple[str, str], tuple[int, int]]:
    """The peers' byte counters (`status IFACE transfer`): the API's JSON has rates, the
    cumulative counters are the metrics' (per peer up to `[metrics] per_peer_max` peers)."""
    if not isinstance(api, QuickClient):
        raise ClientError("transfer needs the standard-library client")
    found = parse_transfer(api.text("/metrics"))
    peers = sum(len(i.get("peers") or ()) for i in status.get("interfaces", []))
    if peers and not found:
        raise ClientError(
            f"no per-peer byte counters in /metrics: the daemon exports them for at most "
            f"[metrics] per_peer_max peers, and it has {peers} (docs/api.md, Metrics)")
    return found


async def cmd_status(ctx: Context, api: Api) -> int:
    ctx.out.write(await _status_text(ctx, api))
    return 0


def watch_status(ctx: Context) -> int:
    """`status --watch [SECONDS]`: the view again every SECONDS, top-like (the screen
    cleared, cut to the terminal's height on a terminal); Ctrl-C ends it, status 0."""
    import shutil

    interval: float = ctx.args.watch
    tty = bool(getattr(ctx.out, "isatty", None) and ctx.out.isatty())
    first = True
    try:
        with ctx.quick() as api:
            while True:
                try:
                    text = run_sync(_status_text(ctx, api))
                except ClientError as exc:
                    if first:
                        raise
                    text = ctx.paint("red", f"{PROG}: {exc}") + "\n"  # and try again
                first = False
                stamp = time.strftime("%H:%M:%S")
                head = f"every {interval:g} s, {stamp} (Ctrl-C to quit)\n"
                if tty:
                    lines = (head + text).splitlines()
                    rows = shutil.get_terminal_size().lines
                    ctx.out.write("\x1b[H\x1b[2J" + "\n".join(lines[: max(rows - 1, 1)]))
                else:
                    ctx.out.write(head + text + "\n")
                ctx.out.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        if tty:
            ctx.out.write("\n")
        ctx.out.flush()
        return 0


async def cmd_dump(ctx: Context, api: Api) -> int:
    status = await api.get("/v1/status")
    iface = ctx.args.interface
    if iface is not None and not any(i.get("name") == iface for i in status["interfaces"]):
        raise ClientError(f"{iface} is not an interface the daemon manages")
    ctx.out.write(_render.render_dump(status, iface))
    return 0


async def cmd_override_set(ctx: Context, api: Api) -> int:
    args = ctx.args
    key, label = await resolve_peer(api, args.interface, args.peer)
    body: dict[str, Any] = {"interface": args.interface, "public_key": key}
    if args.mode is not None:
        body["mode"] = args.mode
    if args.core is not None:
        body["core"] = args.core
    if args.duration is not None:
        body["expires_in"] = args.duration
    if args.until is not None:
        body["expires"] = args.until
    if args.reason is not None:
        body["reason"] = args.reason
    ov = (await api.post("/v1/overrides", body))["override"]
    if args.json:
        ctx.json({"override": ov})
        return 0
    what = [f"mode {ov['mode']}"] if ov.get("mode") is not None else []
    if ov.get("core") is not None:
        what.append(f"core {ov['core']}")
    line = f"override {args.interface}/{label} {' '.join(what)}"
    line += f" until {_render.format_expiry(ov.get('expires'), time.time())}"
    if ov.get("reason"):
        line += f": {_render.printable(str(ov['reason']))}"
    ctx.change(line)
    return 0


async def resolve_override(api: Api, interface: str, text: str) -> tuple[str, str]:
    """Like resolve_peer, but an override's peer may be absent from the data plane: then
    its key, name or key prefix is looked up among the overrides."""
    try:
        return await resolve_peer(api, interface, text)
    except ClientError as not_a_peer:
        overrides = [
            o for o in (await api.get("/v1/overrides"))["overrides"]
            if o.get("interface") == interface
        ]
        for match in (
            lambda o: o.get("name") == text,
            lambda o: str(o.get("name") or "").casefold() == text.casefold(),
            lambda o: len(text) >= 4 and str(o["public_key"]).startswith(text),
        ):
            found = [o for o in overrides if match(o)]
            if len(found) == 1:
                return str(found[0]["public_key"]), _render.peer_label(found[0])
            if len(found) > 1:
                labels = ", ".join(str(o["public_key"])[:8] for o in found)
                raise ClientError(
                    f"{text!r} matches several overrides on {interface}: {labels}"
                ) from None
        raise not_a_peer from None


async def cmd_override_clear(ctx: Context, api: Api) -> int:
    args = ctx.args
    key, label = await resolve_override(api, args.interface, args.peer)
    cleared = (await api.delete("/v1/overrides", {"interface": args.interface, "public_key": key}))
    if args.json:
        ctx.json(cleared)
        return 0
    ctx.change(f"override {args.interface}/{label} cleared")
    return 0


async def cmd_override_list(ctx: Context, api: Api) -> int:
    overrides = (await api.get("/v1/overrides"))["overrides"]
    if ctx.args.json:
        ctx.json({"overrides": overrides})
        return 0
    names = await peer_names(api) if overrides else {}
    ctx.out.write(_render.render_overrides(overrides, names, ctx.paint, time.time()))
    return 0


async def cmd_policy_show(ctx: Context, api: Api) -> int:
    data = await api.get("/v1/policy")
    if ctx.args.json:
        ctx.json(data)
        return 0
    ctx.out.write(_render.render_policy(data["policy"], data.get("error"), ctx.paint))
    return 0


async def cmd_policy_reload(ctx: Context, api: Api) -> int:
    try:
        data = await api.post("/v1/policy/reload")
    except ApiError as exc:
        if exc.status == 422:
            raise ClientError(
                f"policy rejected, the running one is unchanged: {exc.message}"
            ) from None
        raise
    if ctx.args.json:
        ctx.json(data)
        return 0
    policy = data.get("policy") or {}
    ctx.change(f"policy reloaded: {policy.get('name', '?')} from {policy.get('source', '?')}")
    return 0


def cmd_validate(ctx: Context) -> int:
    from wghybrid.policy.load import validate_command

    code, message = validate_command(ctx.args.file, ctx.args.cores)
    print(message, file=ctx.out if code == 0 else ctx.err)
    return code


def cmd_version(ctx: Context) -> int:
    print(f"{PROG} {__version__}", file=ctx.out)
    return 0


def cmd_run_misplaced(ctx: Context) -> int:
    print(f"{PROG}: 'run' takes its own options and must come first: {PROG} run --help",
          file=ctx.err)
    return 2


def run_daemon(argv: Sequence[str]) -> int:
    """`wghybrid run ...`: the daemon's own parser and entry point."""
    from wghybrid import daemon

    parser = argparse.ArgumentParser(
        prog=f"{PROG} run", description="Run the wghybrid daemon in the foreground."
    )
    daemon.add_run_arguments(parser)
    return daemon.run_command(parser.parse_args(argv))


def run_status(ctx: Context) -> int:
    """`status` (and plain `wghybrid`): once, or again and again with --watch."""
    if getattr(ctx.args, "watch", None) is not None:
        return watch_status(ctx)
    return _api(cmd_status)(ctx)


def check_status_args(args: argparse.Namespace) -> None:
    """The combinations argparse cannot check; a usage error (status 2) for each."""
    parser: argparse.ArgumentParser = args.parser
    field = getattr(args, "field", None)
    if field is not None and field not in _render.FIELDS:
        parser.error(f"unknown field {field!r}; the fields are: {', '.join(_render.FIELDS)}")
    watching = getattr(args, "watch", None) is not None
    if watching and getattr(args, "json", False):
        parser.error("--watch is for people; --json takes one snapshot")
    if watching and field is not None:
        parser.error("--watch shows the view, not a FIELD")
    if field is not None and getattr(args, "json", False):
        parser.error("a FIELD is tab-separated text; --json is the whole status")


# ---------------------------------------------------------------------------
# The command table


def _args_interface(p: argparse.ArgumentParser) -> None:
    p.add_argument("interface", nargs="?", metavar="IFACE", help="only this interface")


def _args_status(p: argparse.ArgumentParser) -> None:
    p.add_argument("interface", nargs="?", metavar="IFACE",
                   help='only this interface ("all": every one)')
    p.add_argument("field", nargs="?", metavar="FIELD",
                   help="print only this field, tab-separated, one line per peer "
                        "(as `wg show wg0 transfer`; the list below)")
    _add_view_options(p, top=False)


def _add_view_options(p: argparse.ArgumentParser, top: bool) -> None:
    """The status view's options (plain `wghybrid` takes them too)."""
    d: Callable[[Any], Any] = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group("status view")
    g.add_argument("--mode", dest="only_mode", choices=("inline", "vanilla"), default=d(None),
                   help="only the peers in this mode")
    g.add_argument("--sort", choices=_render.SORTS, default=d(None),
                   help="order of the peers: load (rx + tx, the default), name, cpu, mode")
    g.add_argument("--top", type=parse_count, metavar="N", default=d(None),
                   help="at most N peers per interface")
    g.add_argument("--peer", dest="match", metavar="GLOB", default=d(None),
                   help="only the peers whose name or key matches GLOB ('branch-*', 'AbC*')")
    g.add_argument("--width", type=parse_width, metavar="COLUMNS", default=d(None),
                   help=f"width of the view (default {_render.WIDTH})")
    g.add_argument("--watch", nargs="?", type=parse_seconds, const=2.0, default=d(None),
                   metavar="SECONDS",
                   help="refresh every SECONDS (default 2), top-like, until Ctrl-C")


def _args_override_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("peer", metavar="PEER", help="base64 public key, friendly name or key prefix")
    p.add_argument("--mode", choices=("vanilla", "inline"), help="pin the mode")
    p.add_argument("--core", type=parse_core, metavar="N", help="pin the peer's core")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--for", dest="duration", type=parse_duration, metavar="DURATION",
        help="expire after this long (90s, 10m, 1h30m, 2d)",
    )
    when.add_argument(
        "--until", type=parse_time, metavar="TIME",
        help="expire at this ISO 8601 time (local unless it names a zone)",
    )
    p.add_argument("--reason", metavar="TEXT", help="why, shown in status")


def _args_peer(p: argparse.ArgumentParser) -> None:
    p.add_argument("interface", metavar="IFACE")
    p.add_argument("peer", metavar="PEER", help="base64 public key, friendly name or key prefix")


def _args_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="policy file (TOML)")
    p.add_argument(
        "--cores", type=int, metavar="N",
        help="check the policy's cores against N online cores (default: this machine's)",
    )


ApiCommand = Callable[[Context, Any], Awaitable[int]]


@dataclass(frozen=True)
class Command:
    """One row of the command table: either `run` (local) or `api` (talks to the daemon)."""

    name: str
    help: str
    run: Callable[[Context], int] | None = None
    api: ApiCommand | None = None
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    json: bool = False
    subcommands: tuple[Command, ...] = ()
    epilog: str | None = None


COMMANDS: tuple[Command, ...] = (
    Command(
        "status", "show interfaces and peers (the default)",
        run=run_status, add_arguments=_args_status, json=True, epilog=_render.FIELDS_HELP,
    ),
    Command(
        "dump", "tab-separated peers for scripts (columns only ever appended)",
        api=cmd_dump, add_arguments=_args_interface, epilog=_render.DUMP_HELP,
    ),
    Command("override", "pin a peer's mode or core", subcommands=(
        Command(
            "set", "pin a peer's mode and/or core",
            api=cmd_override_set, add_arguments=_args_override_set, json=True,
        ),
        Command(
            "clear", "remove a peer's override",
            api=cmd_override_clear, add_arguments=_args_peer, json=True,
        ),
        Command("list", "list overrides", api=cmd_override_list, json=True),
    )),
    Command("policy", "the running policy", subcommands=(
        Command("show", "print the running policy", api=cmd_policy_show, json=True),
        Command(
            "reload", "reload the policy file (as SIGHUP does)",
            api=cmd_policy_reload, json=True,
        ),
    )),
    Command(
        "validate", "check a policy file without running it",
        run=cmd_validate, add_arguments=_args_validate,
    ),
    Command("run", "run the daemon (see: wghybrid run --help)", run=cmd_run_misplaced),
    Command("version", "print the version", run=cmd_version),
)


def _add_connection_options(p: argparse.ArgumentParser, top: bool) -> None:
    """Options every API command takes, before or after the subcommand."""
    env = os.environ
    d: Callable[[Any], Any] = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group("connection")
    g.add_argument(
        "--socket", metavar="PATH", default=d(env.get("WGHYBRID_SOCKET") or DEFAULT_SOCKET),
        help=f"the daemon's unix socket (env WGHYBRID_SOCKET; default {DEFAULT_SOCKET})",
    )
    g.add_argument(
        "--url", metavar="URL", default=d(env.get("WGHYBRID_URL") or None),
        help="reach the daemon over TCP instead: http(s)://HOST:PORT (env WGHYBRID_URL)",
    )
    g.add_argument(
        "--token-file", metavar="FILE", default=d(env.get("WGHYBRID_TOKEN_FILE") or None),
        help="file holding the bearer token for --url (env WGHYBRID_TOKEN_FILE)",
    )
    g.add_argument(
        "--cacert", metavar="FILE", default=d(None),
        help="CA certificate to verify an https --url with",
    )
    g.add_argument(
        "--timeout", type=parse_seconds, metavar="SECONDS", default=d(10.0),
        help="give up on the daemon after this long (default 10)",
    )
    p.add_argument(
        "--color", choices=COLOR_MODES, default=d(None),
        help="colour: auto (on a terminal, the default), always, never "
             "(env WG_COLOR_MODE, as wg's)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run each WireGuard tunnel vanilla or inline: status and control.",
        epilog="Without a command, wghybrid shows status.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    _add_connection_options(parser, top=True)
    _add_view_options(parser, top=True)
    parser.set_defaults(handler=run_status, interface=None, field=None, parser=parser)
    _add_commands(parser, COMMANDS, "command")
    from wghybrid.cli_events import add_event_commands  # `log`, `explain` (issue 13)
    add_event_commands(parser)
    return parser


def _add_commands(
    parser: argparse.ArgumentParser, commands: Sequence[Command], dest: str
) -> None:
    sub = parser.add_subparsers(dest=dest, metavar="COMMAND", title="commands")
    for cmd in commands:
        p = sub.add_parser(
            cmd.name, help=cmd.help, description=cmd.help, epilog=cmd.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if cmd.subcommands:
            p.set_defaults(parser=p, handler=None)
            _add_commands(p, cmd.subcommands, f"{dest}_{cmd.name}")
            continue
        p.set_defaults(
            handler=_api(cmd.api) if cmd.api else cmd.run, parser=p
        )
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
        if cmd.json:
            p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                           help="print the API's JSON")
        if cmd.api is not None or cmd.name == "status":
            _add_connection_options(p, top=False)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        return run_daemon(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:
        args.parser.error("a subcommand is required")
    if getattr(args, "command_override", None) == "set" and args.mode is None \
            and args.core is None:
        args.parser.error("give --mode, --core or both")
    if args.handler is run_status:
        check_status_args(args)
    ctx = Context(args, sys.stdout, sys.stderr)
    try:
        code: int = args.handler(ctx)
        sys.stdout.flush()
    except ClientError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`wghybrid dump | head`): say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return code


