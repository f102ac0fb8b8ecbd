"""`wghybrid run`'s options and what they make: RunConfig, the listeners' settings, the
token files, the policy loader."""

from __future__ import annotations

import argparse
import dataclasses
import grp
import logging
import math
import os
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wghybrid._files import read_regular
from wghybrid.policy import Policy
from wghybrid.policy.load import load_policy, shipped_policy_path

log = logging.getLogger("wghybrid.daemon")

DEFAULT_SOCKET = "/run/wghybrid/wghybrid.sock"
DEFAULT_STATE_DIR = "/var/lib/wghybrid"
ETC_POLICY = "/etc/wghybrid/policy.toml"
STOP_GRACE = 10.0
"""Seconds a stop waits for the tick in progress before cancelling it."""
KERNEL_LOCK = "/run/wghybrid/kernel.lock"
"""One daemon drives the kernel module at a time, whatever its state directory."""
IDLE_TIMEOUT = 15.0
"""aiohttp's keepalive_timeout: a connection that has not completed a request head this
long after it opened, or after its last answer, is closed."""
LINGER = 2.0
"""aiohttp's lingering_time: how long the unread rest of a refused body is drained."""
MAX_TOKEN_FILE = 4096
FULL_GC_EVERY = 10.0


class ConfigError(Exception):
    """The daemon cannot start as configured; the message is the one line to show."""



# ---------------------------------------------------------------------------------------
# Starting and stopping: listeners, the data plane, the policy


@dataclass(frozen=True, slots=True)
class RunConfig:
    backend: str
    scenario: str
    policy: Path | None
    state_dir: Path
    socket: Path
    listen: tuple[str, int] | None
    token: str | None
    """The admin bearer token of the TCP listener."""
    tls: ssl.SSLContext | None
    dry_run: bool
    op_timeout: float
    sample_timeout: float
    sim_speed: float = 1.0
    read_token: str | None = None
    """The read-only bearer token of the TCP listener."""
    admin_gids: frozenset[int] = frozenset()
    """Groups whose members get the admin role on the unix socket."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `wghybrid run` (the CLI adds them to its `run` subcommand)."""
    parser.add_argument(
        "--backend",
        choices=("kernel", "sim"),
        default="kernel",
        help="data plane: the patched kernel module, or the simulated gateway (default: kernel)",
    )
    parser.add_argument(
        "--scenario",
        default="mixed",
        metavar="NAME|PATH",
        help="sim backend: a packaged scenario name or a scenario TOML file (default: mixed)",
    )
    parser.add_argument(
        "--sim-speed",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="sim backend: simulated seconds per real second (default: 1)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"policy TOML (default: {ETC_POLICY} if it exists, else the packaged default)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(DEFAULT_STATE_DIR),
        metavar="DIR",
        help=f"where overrides and unmanaged marks persist (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"unix socket of the API (default: $WGHYBRID_SOCKET or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve the API on TCP (requires --token-file or --read-token-file)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="admin bearer token for TCP requests (reads and changes)",
    )
    parser.add_argument(
        "--read-token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="read-only bearer token for TCP requests (status, peers, metrics...)",
    )
    parser.add_argument(
        "--admin-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="members of GROUP may change things through the unix socket (besides root and "
        "the daemon's own user; everyone else who can open the socket only reads); repeatable",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve TCP over TLS with this certificate (PEM)",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="private key of --tls-cert (PEM)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and report, change nothing (state is not written)",
    )
    parser.add_argument(
        "--op-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="time limit of one data-plane operation (default: 2)",
    )
    parser.add_argument(
        "--sample-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time limit of reading the data plane's counters (default: 5)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level (default: info)",
    )


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--listen {text!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"--listen {text!r}: port {number} is out of range")
    return host, number


def read_token_file(path: Path, option: str = "--token-file") -> str:
    try:
        raw = read_regular(path, MAX_TOKEN_FILE)
        token = raw.decode("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path}: not UTF-8 text") from None
    if len(token) < 16:
        raise ConfigError(f"{option} {path}: the token must be at least 16 characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{option} {path}: the token must be one word of printable characters")
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "anyone" if mode & stat.S_IROTH else "its group"
        log.warning(
            "%s %s is readable by %s (mode %04o): anyone who can read it controls the API; "
            "chmod 600 it",
            option,
            path,
            who,
            stat.S_IMODE(mode),
        )
    return token


def _admin_gids(names: list[str]) -> frozenset[int]:
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid if not name.isdigit() else int(name))
        except KeyError:
            raise ConfigError(f"--admin-group {name}: no such group") from None
    return frozenset(gids)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    socket_path = args.socket or Path(os.environ.get("WGHYBRID_SOCKET") or DEFAULT_SOCKET)
    listen = parse_listen(args.listen) if args.listen else None
    read_file = getattr(args, "read_token_file", None)
    if listen is None and (args.token_file is not None or read_file is not None):
        option = "--token-file" if args.token_file is not None else "--read-token-file"
        raise ConfigError(
            f"{option} only applies with --listen: the unix socket goes by file permissions "
            "and the client's credentials, not tokens"
        )
    token = read_token_file(args.token_file) if args.token_file else None
    read_token = read_token_file(read_file, "--read-token-file") if read_file else None
    if listen is not None and token is None and read_token is None:
        raise ConfigError("--listen needs --token-file: the API is never open on TCP without one")
    if token is not None and token == read_token:
        raise ConfigError("--token-file and --read-token-file must hold different tokens")
    admin_gids = _admin_gids(list(getattr(args, "admin_group", None) or []))
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        if listen is None:
            raise ConfigError("--tls-cert only applies with --listen")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-cert {args.tls_cert}: {exc}") from None
    if listen is not None and tls is None:
        log.warning(
            "--listen %s without --tls-cert: bearer tokens and answers cross the network in "
            "clear text; use TLS unless the path is trusted (loopback, a VPN)",
            args.listen,
        )
    for name in ("op_timeout", "sample_timeout", "sim_speed"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    return RunConfig(
        backend=args.backend,
        scenario=args.scenario,
        policy=args.policy,
        state_dir=args.state_dir,
        socket=socket_path,
        listen=listen,
        token=token,
        tls=tls,
        dry_run=args.dry_run,
        op_timeout=args.op_timeout,
        sample_timeout=args.sample_timeout,
        sim_speed=args.sim_speed,
        read_token=read_token,
        admin_gids=admin_gids,
    )


def _policy_loader(
    path: Path | None, online_cores: int, names: dict[bytes, str]
) -> Callable[[], Policy]:
    """A function that (re)loads the policy file: --policy, else /etc/wghybrid/policy.toml
    when it exists, else the packaged default. `names` (the sim's tunnel names) fill in
    peers the policy does not name."""
    if path is None:
        path = Path(ETC_POLICY) if Path(ETC_POLICY).exists() else shipped_policy_path()
    chosen = path

    def loader() -> Policy:
        policy = load_policy(chosen, online_cores=online_cores)
        if names:
            policy = dataclasses.replace(policy, names={**names, **policy.names})
        return policy

    return loader


