"""The CLI's renderers: units, colour, column alignment, the stable dump format, policy."""

from __future__ import annotations

import io
import os
import pty
import re
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wghybrid.cli import _dump, _render
from wghybrid.policy import Policy
from wghybrid.policy.load import policy_to_dict

pytestmark = pytest.mark.unit

ANSI = re.compile(r"\x1b\[[0-9;]*m")
KEY = "A" * 42 + "E="


def status(peers: list[dict[str, object]]) -> dict[str, object]:
    return {
        "version": "0.1.0", "backend": "kernel", "dry_run": False,
        "policy": {"name": "p", "source": "/p.toml", "error": None},
        "interfaces": [{"name": "wg0", "cores": "0-3", "crypt_cores": "0-1",
                        "inline_cores": "2-3", "threaded_napi": False, "peers": peers}],
    }


def peer(name: str, key: str = KEY, **kw: object) -> dict[str, object]:
    p: dict[str, object] = {
        "interface": "wg0", "public_key": key, "name": name, "mode": "inline", "class": "mouse",
        "pinned": False, "rx_bps": 1e6, "tx_bps": 2e6, "cpu": 0.5, "core": 2,
        "time_in_mode": 61.0, "override": None, "unmanaged": None,
    }
    p.update(kw)
    return p


@pytest.mark.parametrize(
    ("bps", "text"),
    [
        (0, "0 bit/s"), (999, "999 bit/s"), (999.6, "1.00 kbit/s"), (1000, "1.00 kbit/s"),
        (12_345, "12.3 kbit/s"), (999_499, "999 kbit/s"), (999_500, "1.00 Mbit/s"),
        (2.35e10, "23.5 Gbit/s"), (1.234e12, "1.23 Tbit/s"), (5e18, "5000 Pbit/s"),
        (-1, "-"), (float("nan"), "-"),
    ],
)
def test_format_bps(bps: float, text: str) -> None:
    assert _render.format_bps(bps) == text


@given(st.floats(0, 1e17))
def test_format_bps_has_three_significant_digits(bps: float) -> None:
    number, unit = _render.format_bps(bps).split()
    assert unit.endswith("bit/s")
    assert float(number) < 1000
    if bps >= 1000:
        assert len(number.replace(".", "")) == 3


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (192, "3m12s"), (3600, "1h00m"),
     (7300, "2h01m"), (86400 * 3 + 3600 * 4, "3d04h"), (None, "-"), (-1, "-")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert _render.format_duration(seconds) == text


def test_palette_colours_only_when_enabled() -> None:
    assert _render.Palette(True)("green bold", "x") == "\x1b[32;1mx\x1b[0m"
    assert _render.Palette(False)("green bold", "x") == "x"
    assert _render.Palette(True)("red", "") == ""


def test_wants_colour_on_a_terminal_unless_no_color() -> None:
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert _render.wants_colour(tty, {})
            assert not _render.wants_colour(tty, {"NO_COLOR": "1"})
            assert _render.wants_colour(tty, {"NO_COLOR": ""})  # no-color.org: set and non-empty
        assert not _render.wants_colour(io.StringIO(), {})
    finally:
        os.close(master)
        os.close(slave)


def test_status_is_the_same_text_with_and_without_colour() -> None:
    doc = status([peer("alice"), peer("", key="B" * 43 + "=", mode="vanilla", pinned=True,
                                      unmanaged="gone")])
    plain = _render.render_status(doc, _render.Palette(False), now=0)
    coloured = _render.render_status(doc, _render.Palette(True), now=0)
    assert "\x1b[" not in plain
    assert coloured != plain and ANSI.sub("", coloured) == plain


def _columns(line: str) -> list[int]:
    """Start offsets of the cells of a table line (cells are split by 2+ spaces)."""
    return [m.start() for m in re.finditer(r"(?:(?<=^  )|(?<=  ))\S", line)]


def test_long_names_keep_the_columns_aligned() -> None:
    long = "x" * 40 + "y" * 40
    doc = status([peer("a"), peer(long, rx_bps=9.99e11, pinned=True, mode="vanilla"),
                  peer("mid-length-name")])
    for paint in (_render.Palette(False), _render.Palette(True)):
        text = ANSI.sub("", _render.render_status(doc, paint, now=0))
        table = text.split("\n\n")[-1].splitlines()[:-1]  # the legend last
        assert table[0].split()[:2] == ["peer", "mode"]
        modes = {line.index(" inline" if "inline" in line else " vanilla") for line in table[1:]}
        assert len(modes) == 1 and table[0].index(" mode") == modes.pop(), table
        cpu_end = {line.index("0.50") + 4 for line in table[1:]}  # right-aligned
        assert cpu_end == {table[0].index("cpu") + 3}
        assert all(len(line) <= _render.WIDTH for line in text.splitlines())
        shown = next(line.split()[0] for line in table if line.startswith("  x"))
        assert shown.startswith("x" * 5) and shown.endswith("y" * 5) and "…" in shown
        assert long not in text and table[1].split()[0] == shown  # by load: first


def test_names_cannot_carry_terminal_control_sequences() -> None:
    doc = status([peer("evil\x1b[2J\rname\n")])
    text = _render.render_status(doc, _render.Palette(False), now=0)
    assert "\x1b" not in text and "\r" not in text
    assert "evil?[2J?name?" in text


def test_status_shows_dry_run_and_a_failed_reload() -> None:
    doc = status([])
    doc["dry_run"] = True
    doc["policy"] = {"name": "p", "source": "/p.toml", "error": "/p.toml: interval: must be > 0"}
    text = _render.render_status(doc, _render.Palette(False), now=0)
    assert "dry run: changing nothing" in text.splitlines()[0]
    assert "  last policy reload failed: /p.toml: interval: must be > 0" in text
    assert "  (no peers)" in text


def test_dump_columns_are_stable() -> None:
    # Appending is allowed; anything else breaks scripts. Extend this list, never edit it.
    assert _dump.DUMP_COLUMNS[:15] == (
        "interface", "public_key", "name", "mode", "control", "class", "rx_bps", "tx_bps",
        "cpu", "core", "time_in_mode", "override_mode", "override_core", "override_expires",
        "unmanaged",
    )
    # The module's documentation lists each column, numbered, in the same order.
    documented = re.findall(r"^\s+(\d+) (\w+)\s", _dump.__doc__ or "", re.M)
    assert documented == [(str(n), c) for n, c in enumerate(_dump.DUMP_COLUMNS, start=1)]


def test_dump_rows_match_the_columns() -> None:
    ov = {"interface": "wg0", "public_key": KEY, "mode": None, "core": 3,
          "expires": 1700000000.7, "reason": "r", "created": 1.0}
    doc = status([peer("tab\there", override=ov, pinned=True, rx_bps=1234.6, cpu=0.12345),
                  peer("", key="C" * 43 + "=", unmanaged="line1\nline2")])
    lines = _dump.render_dump(doc).splitlines()
    rows = [dict(zip(_dump.DUMP_COLUMNS, line.split("\t"), strict=True)) for line in lines]
    assert rows[0] == {
        "interface": "wg0", "public_key": KEY, "name": "tab here", "mode": "inline",
        "control": "pinned", "class": "mouse", "rx_bps": "1235", "tx_bps": "2000000",
        "cpu": "0.123", "core": "2", "time_in_mode": "61", "override_mode": "",
        "override_core": "3", "override_expires": "1700000000", "unmanaged": "",
    }
    assert rows[1]["name"] == "" and rows[1]["unmanaged"] == "line1 line2"
    assert rows[1]["control"] == "auto" and rows[1]["override_core"] == ""
    assert _dump.render_dump(doc, "wg9") == ""


def test_render_policy_is_toml_for_the_shipped_default() -> None:
    data = policy_to_dict(Policy(names={b"\x01" * 32: "alice"}, source="/etc/p.toml"))
    text = _dump.render_policy(data, None, _render.Palette(False))
    assert text.startswith("# loaded from /etc/p.toml\n")
    del data["source"]
    assert tomllib.loads(text) == data


def test_overrides_table_uses_names() -> None:
    ovs = [{"interface": "wg0", "public_key": KEY, "mode": "inline", "core": None,
            "expires": None, "reason": "why", "created": 0.0}]
    text = _dump.render_overrides(ovs, {("wg0", KEY): "alice"}, _render.Palette(False), 0.0)
    assert text.splitlines()[1].split() == ["wg0", "alice", "inline", "-", "never", "why"]
    text = _dump.render_overrides(ovs, {}, _render.Palette(False), 0.0)
    assert text.splitlines()[1].split()[1] == KEY[:8]
