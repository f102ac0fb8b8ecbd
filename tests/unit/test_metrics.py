"""The daemon's Prometheus exposition: names and labels by the conventions (counters in
base units, state as labels of an info gauge), its size per peer, the policy's per-peer
limit, and the per-mode totals accumulated from each peer's counter deltas."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from factory import key
from prometheus_client.parser import text_string_to_metric_families

from wghybrid.core.estimate import Costs
from wghybrid.core.rates import Rates
from wghybrid.core.status import build_status
from wghybrid.daemon.metrics import BYTES_PER_GBPS, DaemonMetrics, peer_exposition
from wghybrid.model import (
    GatewaySample,
    InterfaceState,
    InterfaceStatus,
    Mode,
    Override,
    PeerTable,
    Reason,
    SetPeerMode,
    encode_key,
)
from wghybrid.policy import Policy


def snapshot(
    n: int,
    *,
    ifaces: Sequence[str] = ("wg0",),
    rx: Sequence[int] | np.ndarray | None = None,
    tx: Sequence[int] | np.ndarray | None = None,
    mode: Sequence[int] | np.ndarray | None = None,
    core: Sequence[int] | np.ndarray | None = None,
    epoch: Sequence[int] | np.ndarray | None = None,
    names: dict[bytes, str] | None = None,
    first: int = 0,
) -> tuple[InterfaceStatus, ...]:
    """A status snapshot of `n` peers (keys first..first+n-1) as the controller builds it."""
    keys = np.array([key(first + i) for i in range(n)], dtype="S32")
    iface = np.arange(n, dtype=np.int32) % len(ifaces)

    def col(v: Sequence[int] | np.ndarray | None, default: int) -> np.ndarray:
        return np.full(n, default) if v is None else np.asarray(v)

    rxb = col(rx, 10**12)
    peers = PeerTable.build(
        iface, keys, rx_bytes=rxb, tx_bytes=col(tx, 10**12), rx_cpu_ns=rxb // 400,
        tx_cpu_ns=col(tx, 10**12) // 500, drops=np.arange(n) % 3,
        mode=col(mode, Mode.INLINE), core=col(core, -1), epoch=col(epoch, 1),
    )
    sample = GatewaySample(
        now=100.0, cores=32, core_busy_ns=np.arange(32, dtype=np.uint64) * 10**9,
        interfaces=tuple(InterfaceState(name, frozenset({0, 1}), True) for name in ifaces),
        peers=peers,
    )
    zero = np.zeros(n)
    rates = Rates(sample.now, tuple(ifaces), peers.iface.copy(), keys.copy(),
                  np.ones(n, np.uint64), np.zeros((7, n), np.uint64),
                  np.full(n, 1e9), np.full(n, 1e9), zero, zero, np.full(n, 0.3), zero,
                  np.ones(n, dtype=bool))
    pclass = (np.arange(n) % 7 == 0).astype(np.uint8)
    return build_status(sample, rates, pclass, np.zeros(n), Policy(names=names or {}),
                        {}, {}, (), 0.0)


def metrics(snap: tuple[InterfaceStatus, ...], per_peer_max: int = 10_000) -> DaemonMetrics:
    return DaemonMetrics(
        lambda: snap, lambda: {"version": "test"}, per_peer_max=lambda: per_peer_max,
        costs=lambda: Costs(), core_busy=lambda: np.arange(4, dtype=np.uint64) * 10**9,
        last_tick=lambda: 1_700_000_000.5,
    )


def families(body: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def test_at_most_400_bytes_per_peer() -> None:
    """1,000 peers with 10-character names, terabytes through each (13-digit counters),
    a mix of modes, classes and cores: the whole /metrics body, aggregates included."""
    n = 1000
    names = {key(i): f"site-{i:05d}" for i in range(n)}
    snap = snapshot(n, rx=np.full(n, 1_234_567_890_123), tx=np.full(n, 2_345_678_901_234),
                    mode=np.arange(n) % 2, core=np.arange(n) % 32, names=names)
    m = metrics(snap)
    m.observe(snap)
    m.observe(snap)
    body = m.render()
    per_peer = len(body) / n
    print(f"/metrics: {len(body)} bytes for {n} peers, {per_peer:.1f} bytes per peer")
    assert per_peer <= 400
    # per-peer series were there (what this replaced took about 1.2 KB per peer)
    assert body.count(b"\nwghybrid_peer_info{") == n


def test_per_peer_series_follow_the_conventions() -> None:
    names = {key(0): 'o"dd\\name\n'}
    snap = snapshot(3, rx=[5, 6, 7], tx=[8, 9, 10], mode=[Mode.INLINE, Mode.VANILLA, 1],
                    core=[3, -1, 0], names=names)
    fams = families(metrics(snap).render())
    peer = {n: f for n, f in fams.items() if n.startswith("wghybrid_peer")}
    assert set(peer) == {"wghybrid_peer_receive_bytes", "wghybrid_peer_transmit_bytes",
                         "wghybrid_peer_info"}
    k = [encode_key(key(i)) for i in range(3)]
    rx = fams["wghybrid_peer_receive_bytes"]
    assert rx.type == "counter"
    assert {s.labels["public_key"]: s.value for s in rx.samples} == dict(
        zip(k, [5, 6, 7], strict=True))
    assert all(set(s.labels) == {"interface", "public_key"} for s in rx.samples)
    tx = fams["wghybrid_peer_transmit_bytes"]
    assert [s.value for s in tx.samples] == [8, 9, 10]
    info = fams["wghybrid_peer_info"]
    got = {s.labels["public_key"]: (s.labels, s.value) for s in info.samples}
    assert got[k[0]] == ({"interface": "wg0", "public_key": k[0], "name": 'o"dd\\name\n',
                          "mode": "inline", "core": "3"}, 1.0)
    # an empty label is left out (the same series for Prometheus): no name, the default core
    assert got[k[1]] == ({"interface": "wg0", "public_key": k[1], "mode": "vanilla"}, 1.0)
    # no ID as a value, no sentinel, no pre-smoothed rate
    for gone in ("wghybrid_peer_core", "wghybrid_peer_inline", "wghybrid_peer_cpu_cores",
                 "wghybrid_peer_receive_bits_per_second", "wghybrid_transitions"):
        assert gone not in fams


def test_aggregates_are_there_with_or_without_per_peer_series() -> None:
    snap = snapshot(4, ifaces=("wg0", "wg1"))
    for limit, want in ((4, True), (3, False), (0, False)):
        fams = families(metrics(snap, per_peer_max=limit).render())
        assert ("wghybrid_peer_info" in fams) is want
        assert fams["wghybrid_metrics_per_peer_series"].samples[0].value == float(want)
        peers = fams["wghybrid_interface_peers"]
        assert sum(s.value for s in peers.samples) == 4
        assert {s.labels["interface"] for s in peers.samples} == {"wg0", "wg1"}
        for name in ("wghybrid_interface_crypt_cores", "wghybrid_interface_receive_bytes",
                     "wghybrid_interface_transmit_bytes", "wghybrid_interface_cpu_seconds",
                     "wghybrid_interface_drops", "wghybrid_core_busy_seconds",
                     "wghybrid_learned_cpu_seconds_per_byte",
                     "wghybrid_last_tick_timestamp_seconds", "wghybrid_overrides"):
            assert name in fams, name
    fams = families(metrics(snap).render())
    busy = fams["wghybrid_core_busy_seconds"]
    assert busy.type == "counter"
    assert [(s.labels["core"], s.value) for s in busy.samples] == [
        ("0", 0.0), ("1", 1.0), ("2", 2.0), ("3", 3.0)]
    learned = fams["wghybrid_learned_cpu_seconds_per_byte"]
    cost = {s.labels["mode"]: s.value for s in learned.samples}
    assert cost["inline"] == pytest.approx(Costs().inline / BYTES_PER_GBPS)
    assert cost["vanilla"] == pytest.approx(Costs().vanilla / BYTES_PER_GBPS)
    assert fams["wghybrid_last_tick_timestamp_seconds"].samples[0].value == 1_700_000_000.5


def _totals(m: DaemonMetrics) -> dict[tuple[str, str], tuple[int, ...]]:
    return m.totals()


def test_mode_totals_accumulate_deltas_in_the_mode_they_were_made_in() -> None:
    a = snapshot(2, rx=[1000, 5000], tx=[10, 50], mode=[Mode.INLINE, Mode.VANILLA])
    m = metrics(a)
    m.observe(a)  # the baseline: nothing counted yet
    assert _totals(m)[("wg0", "inline")] == (0, 0, 0, 0, 0)
    # peer 0 moved 500 bytes, then changed mode: the 500 bytes were inline ones
    b = snapshot(2, rx=[1500, 5100], tx=[12, 50], mode=[Mode.VANILLA, Mode.VANILLA])
    m.observe(b)
    t = _totals(m)
    assert t[("wg0", "inline")][:2] == (500, 2)
    assert t[("wg0", "vanilla")][:2] == (100, 0)
    # counters restarted (another epoch) and a new peer: both count from zero
    c = snapshot(3, rx=[30, 5200, 70], tx=[0, 50, 0], mode=[Mode.VANILLA] * 3,
                 epoch=[2, 1, 1])
    m.observe(c)
    t = _totals(m)
    assert t[("wg0", "inline")][:2] == (500, 2)
    assert t[("wg0", "vanilla")][:2] == (100 + 30 + 100 + 70, 0)
    fams = families(m.render())
    rx = {s.labels["mode"]: s.value for s in fams["wghybrid_interface_receive_bytes"].samples
          if s.name.endswith("_total")}
    assert rx == {"inline": 500.0, "vanilla": 300.0}
    cpu = fams["wghybrid_interface_cpu_seconds"]
    assert {s.labels["direction"] for s in cpu.samples} == {"rx", "tx"}
    # a counter never goes down: a peer that leaves takes nothing with it
    m.observe(snapshot(1, rx=[5300], mode=[Mode.VANILLA], first=1))
    assert _totals(m)[("wg0", "vanilla")][0] == 400


def test_mode_changes_by_target_and_cause() -> None:
    snap = snapshot(1)
    m = metrics(snap)
    m.observe(snap)
    m.mode_changed(SetPeerMode("wg0", key(0), Mode.VANILLA, Reason("more-than-inline", "")))
    m.mode_changed(SetPeerMode("wg0", key(0), Mode.INLINE, Reason("override", "")))
    m.mode_changed(SetPeerMode("wg0", key(0), Mode.INLINE, None))
    fams = families(m.render())
    got = {(s.labels["to"], s.labels["cause"]): s.value
           for s in fams["wghybrid_mode_changes"].samples if s.name.endswith("_total")}
    assert got == {("vanilla", "automatic"): 1.0, ("vanilla", "override"): 0.0,
                   ("inline", "automatic"): 1.0, ("inline", "override"): 1.0}
    assert m.mode_changes_total() == 3


def test_overrides_and_absent_peers() -> None:
    snap = snapshot(1)
    m = metrics(snap)
    m.overrides = ((Override("wg0", key(0), Mode.INLINE), True),
                   (Override("wg0", key(9), Mode.VANILLA), False))
    fams = families(m.render())
    assert {s.labels["present"]: s.value for s in fams["wghybrid_overrides"].samples} == {
        "true": 1.0, "false": 1.0}
    assert [s.labels["public_key"] for s in fams["wghybrid_override_absent"].samples] == [
        encode_key(key(9))]


def test_peer_exposition_of_an_empty_snapshot_is_just_the_headers() -> None:
    body = peer_exposition(())
    assert all(line.startswith("#") for line in body.decode().splitlines())
    assert all(not f.samples for f in families(body).values())


def test_counters_follow_their_peer_across_interfaces() -> None:
    """build_status groups rows by interface: each peer keeps its own counters."""
    snap = snapshot(5, ifaces=("wg0", "wg1"), rx=[10, 11, 12, 13, 14], tx=[5, 4, 3, 2, 1])
    fams = families(metrics(snap).render())
    for family, base in (("wghybrid_peer_receive_bytes", [10, 11, 12, 13, 14]),
                         ("wghybrid_peer_transmit_bytes", [5, 4, 3, 2, 1])):
        got = {(s.labels["interface"], s.labels["public_key"]): s.value
               for s in fams[family].samples}
        assert got == {(("wg0", "wg1")[i % 2], encode_key(key(i))): float(base[i])
                       for i in range(5)}
