"""What the CLI prints: a pretty view for people and a stable one for scripts.

Both render the HTTP API's JSON (GET /v1/status, /v1/overrides, /v1/policy), never the daemon's
objects, so the CLI shows exactly what any other client would get.

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
import math
import os
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

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

NAME_WIDTH = 32
"""Longest peer name shown in the pretty view; longer ones end in an ellipsis."""

JsonObj = Mapping[str, Any]


# ---------------------------------------------------------------------------
# Colour


class Palette:
    """ANSI colours, or nothing at all when disabled."""

    _CODES = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, style: str, text: str) -> str:
        if not self.enabled or not text:
            return text
        codes = ";".join(self._CODES[s] for s in style.split())
        return f"\x1b[{codes}m{text}\x1b[0m"


def wants_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set to anything (no-color.org)."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# ---------------------------------------------------------------------------
# Units


def format_bps(bps: float) -> str:
    """A rate in bits/s with SI prefixes and three significant digits: "1.23 Gbit/s"."""
    if not math.isfinite(bps) or bps < 0:
        return "-"
    if bps < 999.5:
        return f"{bps:.0f} bit/s"
    for exp, prefix in ((1, "k"), (2, "M"), (3, "G"), (4, "T"), (5, "P")):
        value = bps / 1000**exp
        if value < 999.5 or prefix == "P":
            digits = 2 if value < 9.995 else 1 if value < 99.95 else 0
            return f"{value:.{digits}f} {prefix}bit/s"
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """A compact span: "45s", "3m12s", "2h05m", "3d04h"."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_expiry(expires: float | None, now: float) -> str:
    if expires is None:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(expires))
    left = expires - now
    return f"{stamp} (in {format_duration(left)})" if left >= 0 else f"{stamp} (expired)"


def printable(text: str) -> str:
    """`text` without control, format or line/paragraph separator characters (a name must
    not move the cursor, clear a line, reverse the text or start a new line)."""
    return "".join(
        "?" if (cat := unicodedata.category(c))[0] == "C" or cat in ("Zl", "Zp") else c
        for c in text
    )


def ellipsize(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def short_key(public_key: str) -> str:
    return public_key[:8]


def peer_label(peer: JsonObj) -> str:
    name = printable(str(peer.get("name") or ""))
    return ellipsize(name, NAME_WIDTH) if name else short_key(str(peer["public_key"]))


# ---------------------------------------------------------------------------
# status


_MODE_STYLE = {"inline": "green", "vanilla": "cyan"}
_CLASS_STYLE = {"elephant": "magenta", "mouse": ""}


def _table(
    rows: Sequence[Sequence[tuple[str, str]]], paint: Palette, indent: str = "  "
) -> list[str]:
    """Left-aligned columns of (text, style) cells, padded on the plain text, then painted."""
    if not rows:
        return []
    widths = [max(len(row[i][0]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for i, (text, style) in enumerate(row):
            pad = "" if i == len(row) - 1 else " " * (widths[i] - len(text))
            cells.append(paint(style, text) + pad if style else text + pad)
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def render_status(
    status: JsonObj,
    paint: Palette,
    now: float | None = None,
    interface: str | None = None,
    health: JsonObj | None = None,
) -> str:
    """The `wg show`-like view: the daemon, then each interface's summary and peers.

    `health` (GET /v1/health) adds a warning line when the loop is degraded."""
    now = time.time() if now is None else now
    out: list[str] = []
    policy = status.get("policy") or {}
    head = [
        f"{paint('bold', 'wghybrid')} {status.get('version', '?')}",
        f"backend {status.get('backend', '?')}",
        "policy {} ({})".format(
            printable(str(policy.get("name", "?"))), printable(str(policy.get("source", "?")))
        ),
    ]
    if status.get("dry_run"):
        head.append(paint("yellow bold", "dry run: changing nothing"))
    if interface is None:
        out.append(", ".join(head))
        if policy.get("error"):
            out.append(paint("red", f"  last policy reload failed: {printable(policy['error'])}"))
    if health is not None and health.get("status") not in (None, "ok"):
        text = f"  {health['status']}: {printable(str(health.get('last_error') or '?'))}"
        if health.get("last_tick") is not None:
            text += f" (last tick {format_duration(now - float(health['last_tick']))} ago)"
        out.insert(1, paint("red bold", text))
    ifaces = [i for i in status.get("interfaces", []) if interface in (None, i.get("name"))]
    for iface in ifaces:
        if out:
            out.append("")
        out.extend(_render_interface(iface, paint, now))
    if not ifaces and interface is None:
        out.append("")
        out.append("no WireGuard interfaces")
    absent = [
        ov for ov in status.get("absent_overrides") or []
        if interface in (None, ov.get("interface"))
    ]
    if absent:
        out.append("")
        out.append(paint("yellow bold", "overrides waiting for a peer that is not present:"))
        for ov in absent:
            label = f"{printable(str(ov.get('interface')))}/{peer_label(ov)}"
            out.append(paint("yellow", f"  {label}: {_describe_override(ov, now)}"))
    return "\n".join(out) + "\n"


def _render_interface(iface: JsonObj, paint: Palette, now: float) -> list[str]:
    def field(label: str, value: str) -> str:
        return f"  {paint('bold', label)}: {value}"

    out = [f"{paint('bold', 'interface')}: {paint('green bold', printable(str(iface['name'])))}"]
    out.append(field("cores", str(iface.get("cores") or "-")))
    out.append(field("vanilla pool", str(iface.get("crypt_cores") or "-")))
    out.append(field("inline cores", str(iface.get("inline_cores") or "-")))
    out.append(field("threaded napi", "on" if iface.get("threaded_napi") else "off"))
    for what in iface.get("unsupported") or ():
        out.append(paint("red", f"  unsupported: {printable(str(what))}"))
    peers = iface.get("peers") or []
    if not peers:
        out.append("  (no peers)")
        return out
    out.append("")
    rows: list[list[tuple[str, str]]] = [
        [(h, "bold") for h in ("peer", "mode", "class", "rx", "tx", "cpu", "core", "in mode")]
    ]
    notes: dict[int, list[tuple[str, str]]] = {}
    for n, peer in enumerate(peers, start=1):
        mode = str(peer.get("mode", "?"))
        control = "pinned" if peer.get("pinned") else "auto"
        pclass = str(peer.get("class", "?"))
        core = int(peer.get("core", -1))
        rows.append(
            [
                (peer_label(peer), "yellow"),
                (f"{mode} ({control})", _MODE_STYLE.get(mode, "")),
                (pclass, _CLASS_STYLE.get(pclass, "")),
                (format_bps(float(peer.get("rx_bps", 0.0))), ""),
                (format_bps(float(peer.get("tx_bps", 0.0))), ""),
                (f"{float(peer.get('cpu', 0.0)):.2f}", ""),
                (str(core) if core >= 0 else "-", ""),
                (format_duration(peer.get("time_in_mode")), ""),
            ]
        )
        ov = peer.get("override")
        if ov:
            notes.setdefault(n, []).append((_describe_override(ov, now), "yellow"))
        if peer.get("unmanaged"):
            notes.setdefault(n, []).append(
                (f"unmanaged: {printable(str(peer['unmanaged']))}", "red")
            )
    for n, line in enumerate(_table(rows, paint)):
        out.append(line)
        for text, style in notes.get(n, []):
            out.append("      " + paint(style, text))
    return out


def _describe_override(ov: JsonObj, now: float) -> str:
    what = []
    if ov.get("mode") is not None:
        what.append(f"mode {ov['mode']}")
    if ov.get("core") is not None:
        what.append(f"core {ov['core']}")
    text = "override: " + (", ".join(what) or "nothing")
    text += f", until {format_expiry(ov.get('expires'), now)}"
    if ov.get("reason"):
        text += f": {printable(str(ov['reason']))}"
    return text


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
    if source is not None:
        lines.append(paint("dim", f"# loaded from {printable(str(source))}"))
    _toml_table(body, [], lines, paint)
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
