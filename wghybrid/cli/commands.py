"""The commands that change things or stand alone: override, policy, validate, version, run."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

from wghybrid import __version__
from wghybrid.cli import _dump, _render
from wghybrid.cli._http import (
    Api,
    ApiError,
    ClientError,
)
from wghybrid.cli.context import (
    PROG,
    Context,
    peer_names,
    resolve_peer,
)


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
    ctx.out.write(_dump.render_overrides(overrides, names, ctx.paint, time.time()))
    return 0


async def cmd_policy_show(ctx: Context, api: Api) -> int:
    data = await api.get("/v1/policy")
    if ctx.args.json:
        ctx.json(data)
        return 0
    ctx.out.write(_dump.render_policy(data["policy"], data.get("error"), ctx.paint))
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
    from wghybrid.daemon import config, serve

    parser = argparse.ArgumentParser(
        prog=f"{PROG} run", description="Run the wghybrid daemon in the foreground."
    )
    config.add_run_arguments(parser)
    return serve.run_command(parser.parse_args(argv))

