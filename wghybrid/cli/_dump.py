"""The CLI's other renderings: the stable ones for scripts (`dump`, `status IFACE FIELD`)
and the override and policy listings. Like _render, they render the API's JSON.

`dump` output, one line per peer, fields separated by one tab, in this order. Columns are
only ever appended, never removed, renamed or reordered; an empty field means "none".

     1 interface         device name
     2 public_key        base64
     3 name              friendly name from the policy, or empty
     4 mode              vanilla | inline
     5 control           auto | pinned  (pinned: an operator override decides)
     6 class             mouse | elephant
     7 rx_bps            received, bits/s, integer (smoothed)
     8 tx_bps            sent, bits/s, integer (smoothed)
     9 cpu               CPU used, in cores, 3 decimals (1.000 = one core busy)
    10 core              core of the peer's serial work; -1 = the data plane's default
    11 time_in_mode      seconds since its last mode change, integer
    12 override_mode     vanilla | inline, or empty
    13 override_core     integer, or empty
    14 override_expires  unix time, integer, or empty (no override, or no expiry)
    15 unmanaged         why the daemon stopped managing the peer, or empty
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wghybrid.cli._render import (
    _MODE_STYLE,
    NAME_WIDTH,
    JsonObj,
    Palette,
    View,
    _num,
    _table,
    ellipsize,
    format_expiry,
    printable,
    select_peers,
    short_key,
)

DUMP_HELP = __doc__.split("\n\n", 2)[2] if __doc__ else ""
"""The column list above, for `wghybrid dump --help`."""

DUMP_COLUMNS = (
    "interface",
    "public_key",
    "name",
    "mode",
    "control",
    "class",
    "rx_bps",
    "tx_bps",
    "cpu",
    "core",
    "time_in_mode",
    "override_mode",
    "override_core",
    "override_expires",
    "unmanaged",
)



# ---------------------------------------------------------------------------
# status IFACE FIELD: one field, tab-separated, as `wg show wg0 transfer`


def _peer_field(*columns: str) -> Any:
    def rows(peer: JsonObj) -> list[str]:
        return [str(peer.get("public_key", "")), *(_FORMAT[c](peer) for c in columns)]
    return rows


_FORMAT: dict[str, Any] = {
    "name": lambda p: _field(p.get("name") or None),
    "mode": lambda p: _field(p.get("mode")),
    "control": lambda p: "pinned" if p.get("pinned") else "auto",
    "class": lambda p: _field(p.get("class")),
    "core": lambda p: str(int(_num(p.get("core", -1)))),
    "rx_bps": lambda p: str(round(_num(p.get("rx_bps")))),
    "tx_bps": lambda p: str(round(_num(p.get("tx_bps")))),
    "cpu": lambda p: f"{_num(p.get('cpu')):.3f}",
    "time_in_mode": lambda p: str(int(_num(p.get("time_in_mode")))),
}

FIELDS: dict[str, tuple[str, Any]] = {
    "peers": ("the peers' public keys", _peer_field()),
    "names": ("key, friendly name (empty: none)", _peer_field("name")),
    "modes": ("key, vanilla | inline", _peer_field("mode")),
    "control": ("key, auto | pinned", _peer_field("control")),
    "classes": ("key, mouse | elephant", _peer_field("class")),
    "cores": ("key, core (-1: the data plane's default)", _peer_field("core")),
    "transfer": ("key, bytes received, bytes sent (cumulative: /metrics' counters)", None),
    "rates": ("key, rx bits/s, tx bits/s (smoothed)", _peer_field("rx_bps", "tx_bps")),
    "cpu": ("key, CPU in cores (3 decimals)", _peer_field("cpu")),
    "time-in-mode": ("key, seconds in the current mode", _peer_field("time_in_mode")),
    "pool": ("the interface's vanilla pool (cpulist; empty: none)", None),
    "inline-cores": ("the cores carrying an inline tunnel (cpulist)", None),
}
"""`wghybrid status IFACE FIELD`: name -> (help, per-peer row maker, None: one line per
interface)."""

FIELDS_HELP = "fields (tab-separated, one line per peer; with IFACE all, the interface " \
    "first):\n" + "\n".join(f"  {name:<13} {text}" for name, (text, _) in FIELDS.items())


def _transfer_rows(counters: Mapping[tuple[str, str], tuple[int, int]]) -> Any:
    """key, bytes received, bytes sent (0 for a peer the counters do not have yet)."""
    def rows(peer: JsonObj) -> list[str]:
        key = str(peer.get("public_key", ""))
        rx, tx = counters.get((str(peer.get("interface", "")), key), (0, 0))
        return [key, str(rx), str(tx)]
    return rows


def render_field(
    status: JsonObj, interface: str | None, name: str, view: View | None = None,
    transfer: Mapping[tuple[str, str], tuple[int, int]] | None = None,
) -> str:
    """`wg show wg0 transfer` for wghybrid: one tab-separated line per peer (or, for an
    interface field, per interface); `interface` None is every interface, each line
    starting with its name. The peers are those `view` keeps, in the API's order unless
    it sorts them. `transfer`: the byte counters by (interface, key), for "transfer"."""
    _, rows = FIELDS[name]
    if name == "transfer":
        rows = _transfer_rows(transfer or {})

    lines = []
    for iface in status.get("interfaces", []):
        iname = str(iface.get("name", ""))
        if interface not in (None, iname):
            continue
        prefix = [_field(iname)] if interface is None else []
        if name in ("pool", "inline-cores"):
            value = iface.get("crypt_cores" if name == "pool" else "inline_cores") or ""
            lines.append(prefix + [_field(value) or ""])
            continue
        peers = iface.get("peers") or []
        if view is not None:
            peers = select_peers(peers, view)
        lines.extend(prefix + rows(p) for p in peers)
    return "".join("\t".join(line) + "\n" for line in lines)




# ---------------------------------------------------------------------------
# dump


def _field(value: Any) -> str:
    if value is None:
        return ""
    return " ".join(str(value).replace("\t", " ").splitlines())


def dump_rows(status: JsonObj, interface: str | None = None) -> Iterable[list[str]]:
    for iface in status.get("interfaces", []):
        if interface not in (None, iface.get("name")):
            continue
        for peer in iface.get("peers") or []:
            ov = peer.get("override") or {}
            expires = ov.get("expires")
            yield [
                _field(peer.get("interface", iface.get("name"))),
                _field(peer["public_key"]),
                _field(peer.get("name") or None),
                _field(peer.get("mode")),
                "pinned" if peer.get("pinned") else "auto",
                _field(peer.get("class")),
                str(round(float(peer.get("rx_bps", 0.0)))),
                str(round(float(peer.get("tx_bps", 0.0)))),
                f"{float(peer.get('cpu', 0.0)):.3f}",
                str(int(peer.get("core", -1))),
                str(int(float(peer.get("time_in_mode", 0.0)))),
                _field(ov.get("mode")),
                _field(ov.get("core")),
                "" if expires is None else str(int(expires)),
                _field(peer.get("unmanaged")),
            ]


def render_dump(status: JsonObj, interface: str | None = None) -> str:
    return "".join("\t".join(row) + "\n" for row in dump_rows(status, interface))


# ---------------------------------------------------------------------------
# overrides, policy


def render_overrides(
    overrides: Sequence[JsonObj], names: Mapping[tuple[str, str], str], paint: Palette, now: float
) -> str:
    if not overrides:
        return "no overrides\n"
    rows: list[list[tuple[str, str]]] = [
        [(h, "bold") for h in ("interface", "peer", "mode", "core", "expires", "reason")]
    ]
    for ov in overrides:
        key = str(ov["public_key"])
        name = names.get((str(ov["interface"]), key), "")
        label = ellipsize(printable(name), NAME_WIDTH) if name else short_key(key)
        rows.append(
            [
                (printable(str(ov["interface"])), ""),
                (label, "yellow"),
                (str(ov.get("mode") or "-"), _MODE_STYLE.get(str(ov.get("mode")), "")),
                ("-" if ov.get("core") is None else str(ov["core"]), ""),
                (format_expiry(ov.get("expires"), now), ""),
                (printable(str(ov.get("reason") or "")), ""),
            ]
        )
    return "\n".join(_table(rows, paint, indent="")) + "\n"


def render_policy(policy: JsonObj, error: str | None, paint: Palette) -> str:
    """The policy as a TOML document (the file's layout); where it came from as a comment."""
    lines: list[str] = []
    if error:
        lines.append(paint("red", f"# last reload failed, this policy keeps running: {error}"))
    body = dict(policy)
    source = body.pop("source", None)
    sources = body.pop("name_sources", None) or {}
    warnings = body.pop("name_warnings", None) or []
    if source is not None:
        lines.append(paint("dim", f"# loaded from {printable(str(source))}"))
    for warning in warnings:
        lines.append(paint("yellow", f"# warning: names: {printable(str(warning))}"))
    _toml_table(body, [], lines, paint)
    if isinstance(sources, Mapping) and sources:
        lines.append("")
        lines.append(paint("dim", f"# {len(sources)} more name(s), not from this file (its "
                                  "[names] wins over them, then networkd over wg-quick):"))
        for key, entry in sources.items():
            entry = entry if isinstance(entry, Mapping) else {}
            name = json.dumps(printable(str(entry.get("name", ""))), ensure_ascii=False)
            where = printable(str(entry.get("from", "?")))
            lines.append(paint("dim", f"# {_toml_key(str(key))} = {name}  # from {where}"))
    return "\n".join(lines).strip("\n") + "\n"


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key)


def _toml_table(table: JsonObj, path: list[str], lines: list[str], paint: Palette) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines.append("")
        lines.append(paint("bold", "[" + ".".join(_toml_key(p) for p in path) + "]"))
    for key, value in scalars.items():
        if value is None:
            lines.append(paint("dim", f"# {_toml_key(key)} unset"))
        else:
            lines.append(f"{_toml_key(key)} = {json.dumps(value)}")
    for key, value in tables.items():
        _toml_table(value, [*path, key], lines, paint)
