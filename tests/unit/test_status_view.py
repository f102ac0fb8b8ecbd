"""`wghybrid status` (issue 13): the snapshot's per-interface summary (core/status.py),
its JSON, and the view the CLI renders from it (cli/_render.py): summary lines, the per-core
grid, sorting and filtering, names cut to fit 80 columns, FIELD output."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.cli import _dump, _render
from wghybrid.core.rates import Rates
from wghybrid.core.status import build_status, columns, summarise
from wghybrid.model import GatewaySample, InterfaceState, InterfaceStatus, PeerTable
from wghybrid.policy import Policy

pytestmark = pytest.mark.unit

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def key(i: int) -> bytes:
    return bytes([i]) * 31 + b"\x01"


def gateway(cores: int = 4) -> tuple[GatewaySample, Rates]:
    """Two interfaces: wg0 (peers 0, 2, 3) and wg1 (peer 1)."""
    n = 4
    sample = GatewaySample(
        now=100.0, cores=cores, core_busy_ns=np.zeros(cores, np.uint64),
        interfaces=(InterfaceState("wg0", frozenset({0, 1}), True),
                    InterfaceState("wg1", frozenset(), False)),
        peers=PeerTable.build(
            np.array([0, 1, 0, 0], np.int32), np.array([key(i) for i in range(n)], "S32"),
            mode=[1, 1, 0, 1], core=[2, 3, -1, 2], drops=[5, 7, 11, 2**40],
        ),
    )
    rates = Rates(
        100.0, ("wg0", "wg1"), sample.peers.iface.copy(), sample.peers.key.copy(),
        np.zeros(n, np.uint64), np.zeros((7, n), np.uint64),
        np.array([1e9, 2e9, 4e9, np.nan]), np.array([1e8, 2e8, 4e8, 0.0]),
        np.zeros(n), np.zeros(n), np.array([0.5, 0.7, 2.0, 0.25]),
        np.array([1.0, 2.0, 3.0, 0.5]), np.ones(n, bool),
        core_busy=np.array([0.9, 0.8, 0.97, 0.1]),
    )
    return sample, rates


def snapshot(demand: np.ndarray | None = None, policy: Policy | None = None,
             cores: int = 4) -> tuple[InterfaceStatus, ...]:
    sample, rates = gateway(cores)
    return build_status(sample, rates, np.zeros(4, np.uint8), np.zeros(4), policy or Policy(),
                        {}, {}, [], 0.0, demand=demand)


def test_the_summary_sums_each_interface() -> None:
    wg0, wg1 = snapshot(demand=np.array([1.5, 9.0, 5.0, 0.25]))
    s = columns(wg0).summary
    assert (s.rx_bps, s.tx_bps) == (5e9, 5e8)  # the NaN rate counts as nothing
    assert s.demand_bps == pytest.approx(6.75e9)  # Gbps, rx + tx -> bits/s
    assert (s.cpu_inline, s.cpu_vanilla) == (0.75, 2.0)
    assert (s.peers_inline, s.peers_vanilla) == (2, 1)
    assert s.drop_pps == 4.5 and s.drops == 16 + 2**40
    assert [(c.core, c.busy, c.inline, c.pool) for c in s.cores] == [
        (0, 0.9, 0, True), (1, 0.8, 0, True), (2, 0.97, 2, False), (3, 0.1, 0, False)]
    t = columns(wg1).summary
    assert (t.rx_bps, t.peers_inline, t.drops, t.demand_bps) == (2e9, 1, 7, 9e9)
    assert [c.inline for c in t.cores] == [0, 0, 0, 1]


def test_the_summary_follows_the_policy_cores_and_unknowns() -> None:
    (wg0, _) = snapshot(policy=Policy(cores=frozenset({2, 3})))
    s = columns(wg0).summary
    assert s.demand_bps is None  # no estimate given
    assert [c.core for c in s.cores] == [2, 3]
    (wg0, _) = snapshot(demand=np.array([1.0, 2.0]))  # misaligned: unknown, not wrong
    assert columns(wg0).summary.demand_bps is None
    sample, rates = gateway()
    rates = replace(rates, core_busy=np.zeros(0))  # before two readings
    (wg0, _) = build_status(sample, rates, np.zeros(4, np.uint8), np.zeros(4), Policy(),
                            {}, {}, [], 0.0)
    assert [c.busy for c in columns(wg0).summary.cores] == [None] * 4
    assert columns(wg0).summary_json()["cores"][0] == {
        "core": 0, "busy": None, "inline": 0, "pool": True}


def test_summary_json_is_finite_and_json() -> None:
    s = summarise(np.array([1, 0], np.uint8), np.array([np.inf, 1.0]), np.array([1e308, 1e308]),
                  np.array([np.nan, 1.0]), np.array([0, -1], np.int32), managed=[0])
    data = s.to_json()
    json.dumps(data, allow_nan=False)
    assert data["rx_bps"] == 1.0 and data["tx_bps"] == 0.0  # overflow to inf: shown as 0
    assert data["cpu"] == {"inline": 0.0, "vanilla": 1.0}


def test_a_hand_built_snapshot_gets_a_summary_too() -> None:
    (wg0, _) = snapshot()
    by_hand = InterfaceStatus(wg0.name, wg0.cores, wg0.crypt_cores, wg0.inline_cores,
                              wg0.threaded_napi, tuple(wg0.peers))
    got = columns(by_hand).summary
    assert (got.rx_bps, got.cpu_inline, got.peers_vanilla) == (5e9, 0.75, 1)
    assert [(c.core, c.inline, c.pool, c.busy) for c in got.cores][:3] == [
        (0, 0, True, None), (1, 0, True, None), (2, 2, False, None)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.floats(0, 1e12), st.floats(0, 64),
                          st.integers(-1, 7)), max_size=40))
def test_summary_equals_a_per_peer_sum(rows: list[tuple[int, float, float, int]]) -> None:
    mode = np.array([r[0] for r in rows], np.uint8)
    rx = np.array([r[1] for r in rows], float)
    cpu = np.array([r[2] for r in rows], float)
    core = np.array([r[3] for r in rows], np.int32)
    s = summarise(mode, rx, rx / 2, cpu, core, managed=range(8))
    assert s.rx_bps == pytest.approx(sum(r[1] for r in rows))
    assert s.cpu_inline == pytest.approx(sum(r[2] for r in rows if r[0] == 1))
    assert s.cpu_vanilla == pytest.approx(sum(r[2] for r in rows if r[0] == 0), abs=1e-6)
    assert [c.inline for c in s.cores] == [
        sum(1 for r in rows if r[0] == 1 and r[3] == c) for c in range(8)]


# ---------------------------------------------------------------------------
# the view


def api_peer(name: str, n: int, **kw: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "interface": "wg0", "public_key": f"{n:02d}" + "A" * 41 + "=", "name": name,
        "mode": "inline", "class": "mouse", "pinned": False, "rx_bps": 1e6, "tx_bps": 1e6,
        "cpu": 0.1, "core": 2, "time_in_mode": 61.0, "override": None, "unmanaged": None,
    }
    p.update(kw)
    return p


def doc(peers: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> dict[str, Any]:
    iface: dict[str, Any] = {"name": "wg0", "cores": "0-31", "crypt_cores": "0-15",
                             "inline_cores": "16-31", "threaded_napi": True, "peers": peers}
    if summary is not None:
        iface["summary"] = summary
    return {"version": "0.1.0", "backend": "sim", "dry_run": False,
            "policy": {"name": "p", "source": "/p.toml", "error": None},
            "interfaces": [iface]}


def full_summary() -> dict[str, Any]:
    (wg0, _) = snapshot(demand=np.array([1.5, 9.0, 5.0, 0.25]), cores=32)
    return columns(wg0).summary_json()


def test_the_summary_comes_first_with_a_core_grid() -> None:
    text = _render.render_status(doc([api_peer("a", 1)], full_summary()),
                                 _render.Palette(False), now=0)
    lines = text.splitlines()
    head = lines.index("interface: wg0")
    assert lines[head + 1:head + 6] == [
        "  peers: 1 (1 inline, 0 vanilla; 0 pinned)",
        "  delivered: 5.50 Gbit/s (rx 5.00 Gbit/s, tx 500 Mbit/s)",
        "  estimated demand: 6.75 Gbit/s",
        "  cpu: 2.75 cores (inline 0.75, vanilla 2.00)",
        "  drops: 4/s (1.10T in all)",
    ]
    grid = lines[lines.index("  threaded napi: on") + 2:]
    assert grid[0].split() == ["0", "90", "v", "1", "80", "v", "2", "97", "i2", "3", "10",
                               "4", "-", "5", "-"]
    assert lines.index("  peer  mode    class     rx     tx   cpu  core  in mode") > head + 10
    assert all(len(ln) <= 80 for ln in lines)


def test_a_daemon_without_summary_still_renders() -> None:
    text = _render.render_status(doc([api_peer("a", 1)]), _render.Palette(False), now=0)
    assert "delivered" not in text and "core load" not in text and "  a  " in text


def test_hot_cores_are_coloured_and_colour_changes_no_text() -> None:
    d = doc([api_peer("a", 1, pinned=True)], full_summary())
    plain = _render.render_status(d, _render.Palette(False), now=0)
    coloured = _render.render_status(d, _render.Palette(True), now=0)
    assert ANSI.sub("", coloured) == plain
    assert "\x1b[31m 2  97  i2\x1b[0m" in coloured
    assert "\x1b[33m 0  90 v\x1b[0m" in coloured and "\x1b[33m 1  80 v\x1b[0m" in coloured
    assert " 3  10" in coloured and "\x1b[33m 3" not in coloured


@pytest.mark.parametrize(
    ("text", "width", "shown"),
    [("short", 8, "short"), ("branch-office-north-1", 12, "branc…orth-1"),
     ("abcdef", 5, "ab…ef"), ("abc", 1, "a"), ("abcdef", 2, "…f")],
)
def test_shorten_keeps_both_ends(text: str, width: int, shown: str) -> None:
    assert _render.shorten(text, width) == shown
    assert len(_render.shorten(text, width)) <= width


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(min_size=0, max_size=90), min_size=1, max_size=6),
       pinned=st.lists(st.booleans(), min_size=6, max_size=6),
       big=st.floats(0, 1e18))
def test_every_line_fits_80_columns(names: list[str], pinned: list[bool], big: float) -> None:
    ov = {"interface": "wg0", "public_key": "k", "mode": "vanilla", "core": 12345,
          "expires": 4e9, "reason": "r" * 500, "created": 0.0}
    peers = [api_peer(name, i, pinned=pinned[i], override=ov if pinned[i] else None,
                      mode="vanilla" if pinned[i] else "inline", rx_bps=big, cpu=big / 1e9,
                      **{"class": "elephant"}, unmanaged="u" * 300 if pinned[i] else None,
                      time_in_mode=big, core=999)
             for i, name in enumerate(names)]
    d = doc(peers, full_summary())
    d["policy"]["error"] = "e" * 200
    d["absent_overrides"] = [{**ov, "name": "n" * 60}]
    for sort in _render.SORTS:
        text = _render.render_status(d, _render.Palette(False), now=0,
                                     view=_render.View(sort=sort))
        assert all(_render.columns_of(line) <= 80 for line in text.splitlines()), text


def test_select_peers_sorts_filters_and_cuts() -> None:
    peers = [api_peer("b-2", 1, rx_bps=5.0, cpu=0.9), api_peer("", 2, rx_bps=9.0, cpu=0.1),
             api_peer("A-1", 3, rx_bps=1.0, mode="vanilla", cpu=0.5)]

    def order(**kw: Any) -> list[str]:
        return [p["public_key"][:2] for p in _render.select_peers(peers, _render.View(**kw))]

    assert order() == ["02", "01", "03"]
    assert order(sort="cpu") == ["01", "03", "02"]
    assert order(sort="name") == ["03", "01", "02"]  # by name (the unnamed last)
    assert order(sort="mode") == ["02", "01", "03"]
    assert order(sort="") == ["01", "02", "03"]  # the API's order
    assert order(mode="vanilla") == ["03"]
    assert order(match="a-*") == ["03"]  # names: case-insensitive
    assert order(match="02*") == ["02"]  # keys: exact
    assert order(match="nothing") == []
    assert order(top=2, sort="cpu") == ["01", "03"]


def test_render_field_is_one_tab_separated_line_per_peer() -> None:
    d = doc([api_peer("a\tb", 1, core=-1), api_peer("", 2, mode="vanilla", cpu=1.23456)])
    k1, k2 = (p["public_key"] for p in d["interfaces"][0]["peers"])
    assert _dump.render_field(d, "wg0", "names") == f"{k1}\ta b\n{k2}\t\n"
    assert _dump.render_field(d, "wg0", "cores") == f"{k1}\t-1\n{k2}\t2\n"
    assert _dump.render_field(d, None, "cpu") == f"wg0\t{k1}\t0.100\nwg0\t{k2}\t1.235\n"
    assert _dump.render_field(d, "wg0", "pool") == "0-15\n"
    assert _dump.render_field(d, "wg0", "inline-cores") == "16-31\n"
    assert _dump.render_field(d, "wg0", "modes", _render.View(sort="", mode="vanilla")) == (
        f"{k2}\tvanilla\n")
    assert _dump.render_field(d, "wg9", "modes") == ""
    for name in _dump.FIELDS:
        assert name in _dump.FIELDS_HELP
        for line in _dump.render_field(d, "wg0", name).splitlines():
            assert "\n" not in line


def test_policy_show_says_where_each_name_came_from() -> None:
    policy = {"name": "p", "names": {"A" * 43 + "=": "own"},
              "name_sources": {"B" * 43 + "=": {"name": "mouse-1", "from": "the data plane"},
                               "C" * 43 + "=": {"name": "bob\x1b", "from": "wg-quick /e/w.conf:3"}},
              "name_warnings": ["/e/w.conf:9: a name that looks like a public key; ignored"],
              "source": "/etc/wghybrid/policy.toml"}
    text = _dump.render_policy(policy, None, _render.Palette(False))
    lines = text.splitlines()
    assert lines[0] == "# loaded from /etc/wghybrid/policy.toml"
    assert lines[1] == "# warning: names: /e/w.conf:9: a name that looks like a public key; ignored"
    assert f'"{"A" * 43}=" = "own"' in lines
    assert f'# "{"B" * 43}=" = "mouse-1"  # from the data plane' in lines
    assert f'# "{"C" * 43}=" = "bob?"  # from wg-quick /e/w.conf:3' in lines
    assert "2 more name(s), not from this file" in text
    assert "\x1b" not in text and "name_sources" not in text


def test_a_core_number_beyond_the_managed_ones_counts_nowhere() -> None:
    s = summarise(np.array([1, 1, 1], np.uint8), np.zeros(3), np.zeros(3), np.ones(3),
                  np.array([2**31 - 1, 1, -1], np.int32), managed=[0, 1])
    assert [(c.core, c.inline) for c in s.cores] == [(0, 0), (1, 1)]
    assert s.peers_inline == 3 and s.cpu_inline == 3.0
    empty = summarise(np.zeros(0, np.uint8), np.zeros(0), np.zeros(0), np.zeros(0),
                      np.zeros(0, np.int32))
    assert (empty.rx_bps, empty.peers_vanilla, empty.cores) == (0.0, 0, ())


def test_the_core_grid_shows_every_count_whole() -> None:
    cores = [{"core": c, "busy": 1.0, "inline": n, "pool": c % 2 == 0}
             for c, n in enumerate([0, 1, 12, 123, 999, 5000])]
    lines = _render._core_lines(cores, _render.Palette(False), 80)
    cells = [line[2:][i:i + 12].split() for line in lines[1:] for i in range(0, 80, 12)]
    assert [c for c in cells if c] == [
        ["0", "100", "v"], ["1", "100", "i1"], ["2", "100", "vi12"], ["3", "100", "i123"],
        ["4", "100", "vi999"], ["5", "100", "i999"]]  # (5,000: more than the cell shows)
    assert all(len(ln) <= 80 for ln in lines)


def test_wide_characters_count_two_columns() -> None:
    assert _render.columns_of("abc") == 3
    assert _render.columns_of("支店東京") == 8 and _render.columns_of("e\u0301") == 1
    assert _render.shorten("東京支店の一番目のトンネル", 9) == "東京…ネル"
    assert _render.columns_of(_render.shorten("東京支店の一番目のトンネル", 10)) <= 10
    peers = [api_peer("東京支店の一番目のトンネル" * 3, 1), api_peer("ascii", 2)]
    text = _render.render_status(doc(peers), _render.Palette(False), now=0)
    table = [ln for ln in text.splitlines() if " inline  mouse" in ln]
    assert len(table) == 2
    assert all(_render.columns_of(ln) <= 80 for ln in text.splitlines())
    ends = {_render.columns_of(ln[: ln.index(" inline  mouse")]) for ln in table}
    assert len(ends) == 1  # the mode column starts at the same column on every line
