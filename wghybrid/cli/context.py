"""What every command gets (Context), colour, and finding a peer by name or key."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from wghybrid.cli import _render
from wghybrid.cli._http import (
    Api,
    ClientError,
    QuickClient,
    read_token,
    run_sync,
)

PROG = "wghybrid"


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
    `wghybrid.cli.client.Client` is the same client, for programs."""

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

