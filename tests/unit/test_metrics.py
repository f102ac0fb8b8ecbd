"""The daemon's Prometheus exposition: names and labels by the conventions (counters in
base units, state as labels of an info gauge), its size per peer, the policy's per-peer
limit, and the per-mode totals accumulated from each peer's counter deltas."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from factory import key
from prometheus_client.parser import text_string_to_metric_families

from wghybrid.core.estimate import Costs
from wghybrid.core.rates import Rates
from wghybrid.core.status import build_status
from wghybrid.daemon.metrics import (
    BYTES_PER_GBPS,
    DaemonMetrics,
    _seconds,
    accepts_gzip,
    peer_exposition,
)
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
    keys: Sequence[bytes] | None = None,
) -> tuple[InterfaceStatus, ...]:
    """A status snapshot of `n` peers (keys first..first+n-1, or `keys`) as the controller
    builds it."""
    keys = np.array(keys if keys is not None else [key(first + i) for i in range(n)],
                    dtype="S32")
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


def test_at_most_400_bytes_per_peer_as_prometheus_scrapes() -> None:
    """1,000 peers with random keys (a key is 44 characters that do not compress: the
    factory's mostly-zero keys would flatter gzip), 10-character names, terabytes through
    each (13-digit counters), CPU hours, a mix of modes, classes and cores: the whole
    /metrics body, aggregates included, at most 400 bytes per peer gzip-compressed, which
    Prometheus always asks for; uncompressed, the five per-peer series each carry the key
    (at least 75 bytes of labels a line), about 670 bytes."""
    n = 1000
    rng = np.random.default_rng(13)
    keys = [rng.bytes(32) for _ in range(n)]
    names = {keys[i]: f"site-{i:05d}" for i in range(n)}
    snap = snapshot(n, rx=rng.integers(10**12, 10**13, n), tx=rng.integers(10**12, 10**13, n),
                    mode=np.arange(n) % 2, core=np.arange(n) % 32, names=names, keys=keys)
    m = metrics(snap)
    m.observe(snap)
    m.observe(snap)
    out = m.exposition()
    assert gzip.decompress(out.gzip) == out.plain == m.render()
    per_peer, wire = len(out.plain) / n, len(out.gzip) / n
    print(f"/metrics: {len(out.plain)} bytes for {n} peers, {per_peer:.1f} bytes per peer, "
          f"{wire:.1f} gzip-compressed")
    assert wire <= 400
    assert per_peer <= 700
    # the per-peer series were there (what this replaced took about 1.2 KB per peer)
    assert out.plain.count(b"\nwghybrid_peer_info{") == n
    assert out.plain.count(b"\nwghybrid_peer_cpu_seconds_total{") == 2 * n


@pytest.mark.parametrize(("header", "want"), [
    ("gzip", True), ("gzip, deflate, br", True), ("deflate,GZIP", True), ("x-gzip", True),
    ("gzip;q=0", False), ("gzip; q=0.0", False), ("gzip;q=0.5", True), ("*", True),
    ("*;q=0", False), ("gzip;q=0, *", False), ("identity", False), ("", False),
    ("deflate", False), ("gzip;q=abc", False), ("br;q=1, gzip ;q=1", True),
])
def test_accept_encoding_admits_gzip(header: str, want: bool) -> None:
    assert accepts_gzip(header) is want


def test_cpu_seconds_are_exact_short_and_monotonic() -> None:
    ns = np.array([0, 1, 999, 1000, 1_500_000_000, 3_600_000_000_123, 2**64 - 1],
                  dtype=np.uint64)
    text = _seconds(ns)
    assert text[:6] == ["0", "0", "0", "0.000001", "1.5", "3600"]
    assert text[6] == "18446744073.709551"  # (2**64 - 1) ns, to the microsecond
    assert [float(t) for t in text] == sorted(float(t) for t in text)


def test_per_peer_series_follow_the_conventions() -> None:
    names = {key(0): 'o"dd\\name\n'}
    snap = snapshot(3, rx=[5, 6, 7], tx=[8, 9, 10], mode=[Mode.INLINE, Mode.VANILLA, 1],
                    core=[3, -1, 0], names=names)
    fams = families(metrics(snap).render())
    peer = {n: f for n, f in fams.items() if n.startswith("wghybrid_peer")}
    assert set(peer) == {"wghybrid_peer_receive_bytes", "wghybrid_peer_transmit_bytes",
                         "wghybrid_peer_cpu_seconds", "wghybrid_peer_info"}
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
                          "mode": "inline", "class": "elephant", "core": "3"}, 1.0)
    # an empty label is left out (the same series for Prometheus): no name, the default core
    assert got[k[1]] == ({"interface": "wg0", "public_key": k[1], "mode": "vanilla",
                          "class": "mouse"}, 1.0)
    cpu = fams["wghybrid_peer_cpu_seconds"]
    assert cpu.type == "counter"
    assert all(set(s.labels) == {"interface", "public_key", "direction"} for s in cpu.samples)
    assert {(s.labels["public_key"], s.labels["direction"]) for s in cpu.samples} == {
        (x, d) for x in k for d in ("rx", "tx")}


def test_per_peer_cpu_seconds_are_the_data_planes_counters() -> None:
    # snapshot(): rx_cpu_ns = rx bytes // 400, tx_cpu_ns = tx bytes // 500
    snap = snapshot(2, rx=[4 * 10**11, 6 * 10**11 + 400_000], tx=[5 * 10**12, 123_500_000])
    fams = families(metrics(snap).render())
    got = {(s.labels["public_key"], s.labels["direction"]): s.value
           for s in fams["wghybrid_peer_cpu_seconds"].samples}
    k0, k1 = encode_key(key(0)), encode_key(key(1))
    assert got == {(k0, "rx"): 1.0, (k0, "tx"): 10.0, (k1, "rx"): 1.500001,
                   (k1, "tx"): 0.000247}
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
