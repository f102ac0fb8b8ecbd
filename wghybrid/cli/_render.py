"""What the CLI prints: a pretty view for people and a stable one for scripts.

Both render the HTTP API's JSON (GET /v1/status, /v1/overrides, /v1/policy), never the daemon's
objects, so the CLI shows exactly what any other client would get.

The renderings for scripts (`dump`, `status IFACE FIELD`) and the override and policy
listings are in _dump.
"""

from __future__ import annotations

import fnmatch
import math
import os
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

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

WIDTH = 80
"""The pretty view's default width: every line fits in it."""
SORTS = ("load", "name", "cpu", "mode")
"""`--sort`: load (rx + tx, highest first), name, cpu (highest first), mode (inline first,
then by load)."""


@dataclass(frozen=True)
class View:
    """Which peers `render_status` shows, in which order, in how many columns."""

    sort: str = "load"
    mode: str | None = None
    """Only peers in this mode."""
    match: str | None = None
    """A glob (fnmatch) on the peer's name or base64 key."""
    top: int | None = None
    """At most this many peers per interface (after sorting)."""
    width: int = WIDTH


def load_of(peer: JsonObj) -> float:
    return _num(peer.get("rx_bps")) + _num(peer.get("tx_bps"))


def _num(value: Any) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def select_peers(peers: Sequence[JsonObj], view: View) -> list[JsonObj]:
    """The peers `view` keeps, in its order (stable: ties keep the API's order)."""
    out = list(peers)
    if view.mode is not None:
        out = [p for p in out if p.get("mode") == view.mode]
    if view.match is not None:
        glob = view.match
        folded = glob.casefold()
        out = [
            p for p in out
            if fnmatch.fnmatchcase(str(p.get("public_key", "")), glob)
            or fnmatch.fnmatchcase(str(p.get("name") or "").casefold(), folded)
        ]
    if view.sort == "load":
        out.sort(key=lambda p: -load_of(p))
    elif view.sort == "cpu":
        out.sort(key=lambda p: -_num(p.get("cpu")))
    elif view.sort == "name":
        out.sort(key=lambda p: (not p.get("name"), str(p.get("name") or p.get("public_key"))))
    elif view.sort == "mode":
        out.sort(key=lambda p: (p.get("mode") != "inline", -load_of(p)))
    if view.top is not None:
        out = out[: view.top]
    return out


def columns_of(text: str) -> int:
    """The terminal columns `text` takes: East Asian wide and full-width characters two,
    combining marks none, the rest one (after `printable`, no control is left)."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else
               2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def _take(text: str, width: int, from_end: bool = False) -> str:
    """The longest start (or end) of `text` that fits in `width` columns."""
    out, used = [], 0
    for c in reversed(text) if from_end else text:
        w = columns_of(c)
        if used + w > width:
            break
        out.append(c)
        used += w
    return "".join(reversed(out) if from_end else out)


def shorten(text: str, width: int) -> str:
    """`text` in at most `width` columns: the start and the end kept around an ellipsis
    (peer names often differ only at the end: branch-office-north-1, -2...)."""
    if columns_of(text) <= width:
        return text
    if width <= 1:
        return _take(text, width)
    head = (width - 1) // 2
    tail = width - 1 - head
    return _take(text, head) + "…" + (_take(text, tail, from_end=True) if tail else "")


def format_rate(bps: float) -> str:
    """A compact rate in bits/s, at most 5 characters: "950", "12.3k", "1.20G"."""
    if not math.isfinite(bps) or bps < 0:
        return "-"
    if bps < 999.5:
        return f"{bps:.0f}"
    for exp, prefix in ((1, "k"), (2, "M"), (3, "G"), (4, "T"), (5, "P")):
        value = bps / 1000**exp
        if value < 999.5 or prefix == "P":
            digits = 2 if value < 9.995 else 1 if value < 99.95 else 0
            return f"{value:.{digits}f}{prefix}"
    raise AssertionError("unreachable")


def format_cores(cpu: float) -> str:
    """CPU in cores, at most 5 characters: "0.42", "12.5", "123", "1.23k"."""
    if not math.isfinite(cpu) or cpu < 0:
        return "-"
    if cpu < 9.995:
        return f"{cpu:.2f}"
    if cpu < 99.95:
        return f"{cpu:.1f}"
    if cpu < 9999.5:
        return f"{cpu:.0f}"
    return format_rate(cpu)


def _short_duration(seconds: Any) -> str:
    """format_duration, at most 7 characters (a century and more: ">99y")."""
    s = _num(seconds) if seconds is not None else -1.0
    if s >= 100 * 86400:
        years = s / (365.25 * 86400)
        return f"{s // 86400:.0f}d" if years < 1 else f"{years:.0f}y" if years < 99.5 \
            else ">99y"
    return format_duration(s if seconds is not None else None)


def format_count(n: float) -> str:
    """An integer with SI prefixes past 10,000: "9999", "12.3k", "4.56M"."""
    if not math.isfinite(n) or n < 0:
        return "-"
    if n < 10_000:
        return f"{n:.0f}"
    return format_rate(n)


def _table(
    rows: Sequence[Sequence[tuple[str, str]]], paint: Palette, indent: str = "  ",
    right: frozenset[int] = frozenset(),
) -> list[str]:
    """Columns of (text, style) cells, padded on the plain text, then painted; the columns
    in `right` are right-aligned."""
    if not rows:
        return []
    widths = [max(columns_of(row[i][0]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = []
        for i, (text, style) in enumerate(row):
            pad = " " * (widths[i] - columns_of(text))
            shown = paint(style, text) if style else text
            if i in right:
                cells.append(pad + shown)
            else:
                cells.append(shown + ("" if i == len(row) - 1 else pad))
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def render_status(
    status: JsonObj,
    paint: Palette,
    now: float | None = None,
    interface: str | None = None,
    health: JsonObj | None = None,
    view: View | None = None,
) -> str:
    """The `wg show`-like view: the daemon, then each interface's summary and its peers
    (by `view`: sorted by load unless it says otherwise), every line at most `view.width`
    columns.

    `health` (GET /v1/health) adds a warning line when the loop is degraded."""
    now = time.time() if now is None else now
    view = view or View()
    width = view.width
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
        out.append(_fit(", ".join(head), width))
        if policy.get("error"):
            out.append(paint("red", _fit(
                f"  last policy reload failed: {printable(policy['error'])}", width)))
    if health is not None and health.get("status") not in (None, "ok"):
        text = f"  {health['status']}: {printable(str(health.get('last_error') or '?'))}"
        if health.get("last_tick") is not None:
            text += f" (last tick {format_duration(now - float(health['last_tick']))} ago)"
        out.insert(1, paint("red bold", _fit(text, width)))
    ifaces = [i for i in status.get("interfaces", []) if interface in (None, i.get("name"))]
    for iface in ifaces:
        if out:
            out.append("")
        out.extend(_render_interface(iface, paint, now, view))
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
            out.append(paint("yellow", _fit(f"  {label}: {_describe_override(ov, now)}", width)))
    return "\n".join(out) + "\n"


def _fit(text: str, width: int) -> str:
    """One line of plain text cut to `width` columns (an ellipsis says so)."""
    return text if columns_of(text) <= width else _take(text, max(width - 1, 0)) + "…"


def _summary_lines(iface: JsonObj, peers: Sequence[JsonObj], paint: Palette,
                   width: int) -> list[str]:
    def field(label: str, value: str) -> str:
        return f"  {paint('bold', label)}: {value}" if len(label) + columns_of(value) + 4 <= width \
            else f"  {paint('bold', label)}: {_fit(value, width - len(label) - 4)}"

    n = len(peers)
    inline = sum(1 for p in peers if p.get("mode") == "inline")
    pinned = sum(1 for p in peers if p.get("pinned"))
    unmanaged = sum(1 for p in peers if p.get("unmanaged"))
    counts = f"{n} ({inline} inline, {n - inline} vanilla; {pinned} pinned"
    counts += f", {unmanaged} unmanaged)" if unmanaged else ")"
    out = [field("peers", counts)]
    summ = iface.get("summary")
    if isinstance(summ, Mapping):
        rx, tx = _num(summ.get("rx_bps")), _num(summ.get("tx_bps"))
        delivered = f"{format_bps(rx + tx)} (rx {format_bps(rx)}, tx {format_bps(tx)})"
        out.append(field("delivered", delivered))
        demand = summ.get("demand_bps")
        out.append(field("estimated demand",
                         "-" if demand is None else format_bps(_num(demand))))
        cpu = summ.get("cpu") or {}
        ci, cv = _num(cpu.get("inline")), _num(cpu.get("vanilla"))
        out.append(field("cpu", f"{ci + cv:.2f} cores (inline {ci:.2f}, vanilla {cv:.2f})"))
        out.append(field("drops", f"{format_count(_num(summ.get('drop_pps')))}/s "
                                  f"({format_count(_num(summ.get('drops')))} in all)"))
    out.append(field("cores", str(iface.get("cores") or "-")))
    out.append(field("vanilla pool", str(iface.get("crypt_cores") or "-")))
    out.append(field("inline cores", str(iface.get("inline_cores") or "-")))
    out.append(field("threaded napi", "on" if iface.get("threaded_napi") else "off"))
    cores = summ.get("cores") if isinstance(summ, Mapping) else None
    if cores:
        out.extend(_core_lines(cores, paint, width))
    return out


def _core_lines(cores: Sequence[JsonObj], paint: Palette, width: int) -> list[str]:
    """Per-core load as a grid of cells "NN BBB viK": the core, its busy %, v when it is in
    the vanilla pool, iK when K inline tunnels are on it."""
    out = [f"  {paint('bold', 'core load')}: busy %, v = vanilla pool, iN = N inline tunnels"]
    numbers = [int(_num(c.get("core"))) for c in cores]
    cw = len(str(max(numbers, default=0)))
    cell = cw + 10
    per_line = max(1, (width - 2) // (cell + 1))
    cells = []
    for c, number in zip(cores, numbers, strict=True):
        busy = c.get("busy")
        pct = "-" if busy is None else f"{min(max(_num(busy), 0.0), 9.99) * 100:.0f}"
        inline = int(_num(c.get("inline")))
        tag = ("v" if c.get("pool") else " ") + (f"i{min(inline, 999)}" if inline else "")
        text = f"{number:>{cw}} {pct:>3} {tag}".rstrip()
        hot = None if busy is None else _num(busy)
        style = "" if hot is None else "red" if hot >= 0.95 else "yellow" if hot >= 0.8 else ""
        cells.append((paint(style, text) if style else text) + " " * (cell - len(text)))
    for i in range(0, len(cells), per_line):
        out.append(("  " + " ".join(cells[i:i + per_line])).rstrip())
    return out


def _render_interface(iface: JsonObj, paint: Palette, now: float, view: View) -> list[str]:
    width = view.width
    name = printable(str(iface["name"]))
    out = [f"{paint('bold', 'interface')}: {paint('green bold', _fit(name, width - 11))}"]
    peers = iface.get("peers") or []
    out.extend(_summary_lines(iface, peers, paint, width))
    for what in iface.get("unsupported") or ():
        out.append(paint("red", _fit(f"  unsupported: {printable(str(what))}", width)))
    if not peers:
        out.append("  (no peers)")
        return out
    shown = select_peers(peers, view)
    out.append("")
    if not shown:
        out.append("  (no peer matches)")
        return out
    heads = ("peer", "mode", "class", "rx", "tx", "cpu", "core", "in mode")
    cells: list[list[tuple[str, str]]] = []
    notes: dict[int, list[tuple[str, str]]] = {}
    for n, peer in enumerate(shown, start=1):
        mode = str(peer.get("mode", "?"))
        pclass = str(peer.get("class", "?"))
        core = int(_num(peer.get("core", -1))) if peer.get("core") is not None else -1
        cells.append(
            [
                (_peer_name(peer), "yellow"),
                (mode + ("*" if peer.get("pinned") else ""), _MODE_STYLE.get(mode, "")),
                (pclass, _CLASS_STYLE.get(pclass, "")),
                (format_rate(_num(peer.get("rx_bps"))), ""),
                (format_rate(_num(peer.get("tx_bps"))), ""),
                (format_cores(_num(peer.get("cpu"))), ""),
                (str(core) if core >= 0 else "-", ""),
                (_short_duration(peer.get("time_in_mode")), ""),
            ]
        )
        ov = peer.get("override")
        if ov:
            notes.setdefault(n, []).append((_describe_override(ov, now), "yellow"))
        if peer.get("unmanaged"):
            notes.setdefault(n, []).append(
                (f"unmanaged: {printable(str(peer['unmanaged']))}", "red")
            )
    # The name column gets what the others leave of the width.
    fixed = [max(len(h), *(columns_of(row[i][0]) for row in cells)) for i, h in
             enumerate(heads) if i]
    room = width - 2 - sum(fixed) - 2 * (len(heads) - 1)
    longest = max(len(heads[0]), *(columns_of(row[0][0]) for row in cells))
    name_width = max(8, min(longest, room))
    for row in cells:
        row[0] = (shorten(row[0][0], name_width), row[0][1])
    rows = [[(h, "bold") for h in heads], *cells]
    for n, line in enumerate(_table(rows, paint, right=frozenset({3, 4, 5, 6}))):
        out.append(line)
        for text, style in notes.get(n, []):
            out.append("      " + paint(style, _fit(text, width - 6)))
    hidden = len(peers) - len(shown)
    legend = "* pinned by an override; rx, tx in bit/s"
    if hidden:
        legend += f"; {hidden} more not shown"
    out.append(paint("dim", _fit("  " + legend, width)))
    return out


def _peer_name(peer: JsonObj) -> str:
    name = printable(str(peer.get("name") or ""))
    return name if name else short_key(str(peer["public_key"]))


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
