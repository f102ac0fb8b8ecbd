"""`wghybrid status` (once, `--watch`, `IFACE FIELD`) and `wghybrid dump`."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import replace
from typing import Any

from wghybrid.cli import _dump, _render
from wghybrid.cli._http import (
    Api,
    ClientError,
    QuickClient,
    run_sync,
)
from wghybrid.cli.context import (
    PROG,
    Context,
    _api,
    _interface_arg,
)


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
        return _dump.render_field(status, iface, field, status_view(args, default_sort=""),
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
    ctx.out.write(_dump.render_dump(status, iface))
    return 0



def run_status(ctx: Context) -> int:
    """`status` (and plain `wghybrid`): once, or again and again with --watch."""
    if getattr(ctx.args, "watch", None) is not None:
        return watch_status(ctx)
    return _api(cmd_status)(ctx)


def check_status_args(args: argparse.Namespace) -> None:
    """The combinations argparse cannot check; a usage error (status 2) for each."""
    parser: argparse.ArgumentParser = args.parser
    field = getattr(args, "field", None)
    if field is not None and field not in _dump.FIELDS:
        parser.error(f"unknown field {field!r}; the fields are: {', '.join(_dump.FIELDS)}")
    watching = getattr(args, "watch", None) is not None
    if watching and getattr(args, "json", False):
        parser.error("--watch is for people; --json takes one snapshot")
    if watching and field is not None:
        parser.error("--watch shows the view, not a FIELD")
    if field is not None and getattr(args, "json", False):
        parser.error("a FIELD is tab-separated text; --json is the whole status")


# ---------------------------------------------------------------------------
# The command table

