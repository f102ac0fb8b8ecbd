"""`wghybrid`: the command line, in the manner of wireguard-tools.

Subcommands come from one table (`COMMANDS`); plain `wghybrid` does what `wghybrid status`
does. Every command but `run`, `validate` and `version` talks to the daemon over its HTTP
API (unix socket by default, TCP with a bearer token when --url is given). Output is
either for people (`status`, colour as wg's: `--color`, `WG_COLOR_MODE`) or for scripts
(`--json`, `dump`, `status IFACE FIELD`); every change the CLI makes is printed as one
`[#] ...` line, as wg-quick does.

Start-up time is part of the interface (a read-only call answers in under 150 ms,
bench/cli_latency.py): this package imports the standard library and `_render` only; the
table's commands talk to the daemon with `wghybrid.cli._http.QuickClient` (no aiohttp, no
asyncio), and what else a command needs is imported inside it.

Exit codes: 0 success, 1 failure (daemon unreachable, request refused, bad policy),
2 bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wghybrid import __version__
from wghybrid.cli import _dump, _render
from wghybrid.cli._http import (
    DEFAULT_SOCKET,
    ClientError,
)
from wghybrid.cli.commands import (
    cmd_override_clear,
    cmd_override_list,
    cmd_override_set,
    cmd_policy_reload,
    cmd_policy_show,
    cmd_run_misplaced,
    cmd_validate,
    cmd_version,
    run_daemon,
)
from wghybrid.cli.context import (
    COLOR_MODES,
    PROG,
    Context,
    _api,
)
from wghybrid.cli.parse import (
    parse_core,
    parse_count,
    parse_duration,
    parse_interval,
    parse_seconds,
    parse_time,
    parse_width,
    watch_words_first,
)
from wghybrid.cli.status import (
    check_status_args,
    cmd_dump,
    run_status,
)


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
    g.add_argument("--watch", nargs="?", type=parse_interval, const=2.0, default=d(None),
                   metavar="SECONDS",
                   help="refresh every SECONDS (default 2; 0.1 to 3600), top-like, until "
                        "Ctrl-C; a word after it that is not a number is the IFACE "
                        "(`status --watch wg0`)")


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
        run=run_status, add_arguments=_args_status, json=True, epilog=_dump.FIELDS_HELP,
    ),
    Command(
        "dump", "tab-separated peers for scripts (columns only ever appended)",
        api=cmd_dump, add_arguments=_args_interface, epilog=_dump.DUMP_HELP,
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
    from wghybrid.cli.events import add_event_commands  # `log`, `explain` (issue 13)
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
    args = parser.parse_args(watch_words_first(argv))  # `--watch wg0`: the IFACE
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


