"""Prometheus metrics of one daemon, in its own registry (no global registry state).

The conventions are Prometheus's (base units: bytes, seconds; cumulative counters named
`..._total`, never pre-smoothed rates; no numeric IDs as values, no sentinels) and those
of the WireGuard exporters: per-peer series carry `interface` and `public_key`, and a
peer's friendly name, mode and core live in the `wghybrid_peer_info` gauge (always 1), to
be joined on those two labels.

Per peer, five series (`wghybrid_peer_receive_bytes_total`,
`wghybrid_peer_transmit_bytes_total` and `wghybrid_peer_cpu_seconds_total{direction}`,
straight from the data plane's counters, and `wghybrid_peer_info{name,mode,class,core}`);
above the policy's `[metrics] per_peer_max` peers there are none. Each series carries the
44-character key, so the plain text is ~670 bytes per peer; gzip (which Prometheus always
asks for) takes it under 400 (~230 with random keys). Aggregates per interface and mode
(bytes, CPU seconds, drops, peer counts) and per core (busy seconds) are always there: the
per-mode counters are accumulated here, tick by tick, from each peer's counter deltas
(`DaemonMetrics.observe`), so that a peer changing mode moves its traffic, not its
history, from one mode's total to the other's.

Everything is built at scrape time from the last tick's snapshot by a custom collector
(a peer that disappears leaves no stale series behind); the per-peer families are written
as text directly, column by column (100,000 Sample objects per scrape cost more than the
tick).
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wghybrid.core.estimate import Costs
from wghybrid.core.rates import lookup, same_keys
from wghybrid.core.status import PeerColumns, columns
from wghybrid.model import (
    U64,
    InterfaceStatus,
    Mode,
    Override,
    PeerClass,
    SetPeerMode,
    encode_key,
)

PEER_LABELS = ("interface", "public_key")

PER_PEER_MAX = 10_000
"""The policy's default `[metrics] per_peer_max`."""

TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

MODES = tuple(str(m) for m in Mode)
CLASSES = tuple(str(c) for c in PeerClass)
CAUSES = ("automatic", "override")

BYTES_PER_GBPS = 1e9 / 8
"""Bytes per second in one Gbps: a learned cost of c cores per Gbps is c / BYTES_PER_GBPS
CPU-seconds per byte."""

_TOTALS = ("rx_bytes", "tx_bytes", "rx_cpu_ns", "tx_cpu_ns", "drops")


class Exposition(NamedTuple):
    """One rendering of /metrics, as text and gzip-compressed (built once, served to
    every scrape of the same tick)."""

    plain: bytes
    gzip: bytes


GZIP_LEVEL = 1
"""Fast compression: the keys are random and take most of the bytes, so higher levels
gain ~3 % for several times the CPU (measured at 1,000 peers: 187 vs 182 bytes per
peer)."""


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (RFC 9110: a coding, or `*`, whose
    q-value is not 0; an explicit `gzip;q=0` wins over `*`)."""
    star = False
    for item in header.split(",")[:32]:
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        coding = name.strip().lower()
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            star = q > 0
    return star


def _escape(value: str) -> str:
    """A label value of the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass(frozen=True, slots=True)
class _Seen:
    """One interface's peers at the last observed tick: who, in which mode, how far."""

    key: np.ndarray
    mode: np.ndarray
    epoch: U64
    counters: np.ndarray
    """(5, n) uint64: `_TOTALS`, row for row."""


def _counters(cols: PeerColumns) -> np.ndarray:
    return np.stack([np.asarray(getattr(cols, name), dtype=np.uint64) for name in _TOTALS]) \
        if len(cols) else np.zeros((len(_TOTALS), 0), dtype=np.uint64)


def _deltas(
    name: str, prev: _Seen, cols: PeerColumns, cur: np.ndarray, mode: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each peer's counter increase since `prev` ((5, n) uint64) and the mode it was in
    then: a peer not in `prev`, or in another epoch, counts from zero."""
    n_prev = int(prev.key.shape[0])
    if same_keys(prev.key, cols.key):
        # The same peers in the same order (the usual tick): no lookup, no gather.
        same = prev.epoch == cols.epoch
        base = np.where(same, prev.counters, np.uint64(0))
        then = prev.mode
    elif n_prev:
        rows = lookup((name,), np.zeros(n_prev, np.int32), prev.key,
                      (name,), np.zeros(len(cols), np.int32), cols.key)
        found = rows >= 0
        r = np.maximum(rows, 0)
        same = found & (prev.epoch[r] == cols.epoch)
        base = np.where(same, prev.counters[:, r], np.uint64(0))
        then = np.where(found, prev.mode[r], mode)
    else:
        base = np.zeros_like(cur)
        then = mode
    return np.where(cur >= base, cur - base, np.uint64(0)), then


def _seconds(ns: np.ndarray) -> list[str]:
    """CPU nanoseconds as seconds, to the microsecond, as short as the text format allows
    (no exponent, no trailing zeros): a counter's value must not flicker in its digits."""
    us = (np.asarray(ns, dtype=np.uint64) // np.uint64(1000)).tolist()
    return [f"{u // 1_000_000}.{u % 1_000_000:06d}".rstrip("0").rstrip(".") for u in us]


_PEER_HEADS = {
    "rx": "# HELP wghybrid_peer_receive_bytes_total Bytes received from the peer "
          "(the data plane's counter)\n# TYPE wghybrid_peer_receive_bytes_total counter\n",
    "tx": "# HELP wghybrid_peer_transmit_bytes_total Bytes sent to the peer "
          "(the data plane's counter)\n# TYPE wghybrid_peer_transmit_bytes_total counter\n",
    "cpu": "# HELP wghybrid_peer_cpu_seconds_total CPU time the data plane spent on the "
           "peer's packets, by direction (rx: decryption and reception, tx: encryption and "
           "transmission)\n# TYPE wghybrid_peer_cpu_seconds_total counter\n",
    "info": "# HELP wghybrid_peer_info A peer's friendly name, mode, demand class and core "
            "(no core: the data plane's default), always 1\n# TYPE wghybrid_peer_info gauge\n",
}


def peer_exposition(snapshot: Sequence[InterfaceStatus]) -> bytes:
    """The per-peer families, in the text exposition format (0.0.4), written column by
    column: every peer's receive and transmit byte counters, its CPU seconds by
    direction and its info series."""
    cols = [columns(i) for i in snapshot]
    parts: dict[str, list[str]] = {k: [v] for k, v in _PEER_HEADS.items()}
    mode_names = np.array(MODES + ("",), dtype=object)
    class_names = np.array(CLASSES + ("",), dtype=object)
    for c in cols:
        if not len(c):
            continue
        iface = _escape(c.interface)
        ids = [f'{{interface="{iface}",public_key="{k}"' for k in c.public_keys()]
        parts["rx"].extend(f"wghybrid_peer_receive_bytes_total{i}}} {v}\n"
                           for i, v in zip(ids, c.rx_bytes.tolist(), strict=True))
        parts["tx"].extend(f"wghybrid_peer_transmit_bytes_total{i}}} {v}\n"
                           for i, v in zip(ids, c.tx_bytes.tolist(), strict=True))
        parts["cpu"].extend(
            f'wghybrid_peer_cpu_seconds_total{i},direction="rx"}} {r}\n'
            f'wghybrid_peer_cpu_seconds_total{i},direction="tx"}} {t}\n'
            for i, r, t in zip(ids, _seconds(c.rx_cpu_ns), _seconds(c.tx_cpu_ns), strict=True))
        # An empty label is no label (Prometheus's data model): left out, it costs nothing.
        names = [f',name="{_escape(n)}"' if n else "" for n in c.names()]
        modes = mode_names[np.minimum(c.mode, len(MODES))].tolist()
        classes = class_names[np.minimum(c.pclass, len(CLASSES))].tolist()
        cores = [f',core="{x}"' if x >= 0 else "" for x in c.core.tolist()]
        parts["info"].extend(
            f'wghybrid_peer_info{i}{n},mode="{m}",class="{k}"{core}}} 1\n'
            for i, n, m, k, core in zip(ids, names, modes, classes, cores, strict=True)
        )
    return "".join(s for k in _PEER_HEADS for s in parts[k]).encode()


class _SnapshotCollector(Collector):
    """Per-interface, per-core and gateway families from the last tick."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        snap = m.snapshot()
        build = InfoMetricFamily("wghybrid_daemon", "The running daemon: version, backend, policy")
        build.add_metric([], m.info())
        yield build

        last = m.last_tick()
        if last is not None:
            yield GaugeMetricFamily("wghybrid_last_tick_timestamp_seconds",
                                    "Unix time of the last completed tick", value=last)
        per_peer = m.per_peer(snap)
        yield GaugeMetricFamily(
            "wghybrid_metrics_per_peer_series",
            "1 when per-peer series are exported (at most [metrics] per_peer_max peers)",
            value=float(per_peer))

        ifl = ("interface",)
        crypt = GaugeMetricFamily("wghybrid_interface_crypt_cores",
                                  "Size of the vanilla crypt-worker pool", labels=ifl)
        inline_cores = GaugeMetricFamily("wghybrid_interface_inline_cores",
                                         "Cores carrying at least one inline tunnel", labels=ifl)
        napi = GaugeMetricFamily("wghybrid_interface_threaded_napi",
                                 "1 when threaded NAPI is on", labels=ifl)
        peers = GaugeMetricFamily("wghybrid_interface_peers", "Peers, by mode and class",
                                  labels=("interface", "mode", "class"))
        pinned = GaugeMetricFamily("wghybrid_interface_pinned_peers",
                                   "Peers whose mode or core an operator override decides",
                                   labels=ifl)
        unmanaged = GaugeMetricFamily(
            "wghybrid_interface_unmanaged_peers",
            "Peers the controller stopped managing after a permanent error", labels=ifl)
        for iface in snap:
            cols = columns(iface)
            crypt.add_metric([iface.name], len(iface.crypt_cores))
            inline_cores.add_metric([iface.name], len(iface.inline_cores))
            napi.add_metric([iface.name], float(iface.threaded_napi))
            grid = np.zeros((len(MODES), len(CLASSES)), dtype=np.int64)
            ok = (cols.mode < len(MODES)) & (cols.pclass < len(CLASSES))
            np.add.at(grid, (cols.mode[ok].astype(np.intp), cols.pclass[ok].astype(np.intp)), 1)
            for mi, mode in enumerate(MODES):
                for ci, pclass in enumerate(CLASSES):
                    peers.add_metric([iface.name, mode, pclass], float(grid[mi, ci]))
            _, _, npinned, nunmanaged = cols.counts()
            pinned.add_metric([iface.name], npinned)
            unmanaged.add_metric([iface.name], nunmanaged)
        yield from (crypt, inline_cores, napi, peers, pinned, unmanaged)

        modes = ("interface", "mode")
        rx = CounterMetricFamily("wghybrid_interface_receive_bytes",
                                 "Bytes received by the interface's peers, by their mode",
                                 labels=modes)
        tx = CounterMetricFamily("wghybrid_interface_transmit_bytes",
                                 "Bytes sent by the interface's peers, by their mode",
                                 labels=modes)
        cpu = CounterMetricFamily("wghybrid_interface_cpu_seconds",
                                  "CPU time of the interface's tunnels, by mode and direction",
                                  labels=(*modes, "direction"))
        drops = CounterMetricFamily("wghybrid_interface_drops",
                                    "Packets the interface's tunnels dropped, by their mode",
                                    labels=modes)
        for (name, mode), t in sorted(m.totals().items()):
            rx.add_metric([name, mode], t[0])
            tx.add_metric([name, mode], t[1])
            cpu.add_metric([name, mode, "rx"], t[2] / 1e9)
            cpu.add_metric([name, mode, "tx"], t[3] / 1e9)
            drops.add_metric([name, mode], t[4])
        yield from (rx, tx, cpu, drops)

        busy = m.core_busy()
        if busy is not None:
            fam = CounterMetricFamily("wghybrid_core_busy_seconds",
                                      "Time each online core spent not idle", labels=("core",))
            for core, ns in enumerate(np.asarray(busy).tolist()):
                fam.add_metric([str(core)], ns / 1e9)
            yield fam
        costs = m.costs()
        if costs is not None:
            cost = GaugeMetricFamily(
                "wghybrid_learned_cpu_seconds_per_byte",
                "What each mode costs on this gateway, as the controller learned it",
                labels=("mode",))
            cost.add_metric([str(Mode.INLINE)], costs.inline / BYTES_PER_GBPS)
            cost.add_metric([str(Mode.VANILLA)], costs.vanilla / BYTES_PER_GBPS)
            yield cost
            yield GaugeMetricFamily(
                "wghybrid_learned_vanilla_pool_share",
                "Fraction of vanilla's CPU spent on the crypt-worker pool's cores (learned)",
                value=costs.pool_share)

        presence = m.overrides
        count = GaugeMetricFamily(
            "wghybrid_overrides", "Live operator overrides, by whether their peer is present",
            labels=("present",),
        )
        count.add_metric(["true"], sum(1 for _, here in presence if here))
        count.add_metric(["false"], sum(1 for _, here in presence if not here))
        yield count
        absent = GaugeMetricFamily(
            "wghybrid_override_absent",
            "1 for an override whose peer is not in the data plane (it waits for the peer)",
            labels=PEER_LABELS,
        )
        for o, here in presence:
            if not here:
                absent.add_metric([o.interface, encode_key(o.public_key)], 1.0)
        yield absent


class DaemonMetrics:
    """The metrics one daemon exports; the loop updates the counters and histograms and
    calls `observe` with each new snapshot."""

    def __init__(
        self,
        snapshot: Callable[[], tuple[InterfaceStatus, ...]],
        info: Callable[[], dict[str, str]],
        *,
        per_peer_max: Callable[[], int] = lambda: PER_PEER_MAX,
        costs: Callable[[], Costs | None] = lambda: None,
        core_busy: Callable[[], U64 | None] = lambda: None,
        last_tick: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.snapshot = snapshot
        self.info = info
        self.per_peer_max = per_peer_max
        self.costs = costs
        self.core_busy = core_busy
        self.last_tick = last_tick
        self.overrides: Sequence[tuple[Override, bool]] = ()
        """The live overrides and whether their peer is present, set (on the event loop)
        before each rendering: `render` runs in a worker thread and must not read the
        daemon's live dictionaries."""
        self._seen: dict[str, _Seen] = {}
        self._totals: dict[tuple[str, str], tuple[int, ...]] = {}
        """Per (interface, mode): `_TOTALS` accumulated; replaced whole by `observe` (the
        rendering thread reads whichever dictionary is current)."""
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.ticks = Counter("wghybrid_ticks", "Ticks completed (sampled and decided)", registry=r)
        self.ticks_skipped = Counter(
            "wghybrid_ticks_skipped",
            "Scheduled ticks skipped because the previous one overran its slot",
            registry=r,
        )
        self.tick_duration = Histogram(
            "wghybrid_tick_duration_seconds",
            "Time from sample to the last applied operation",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.tick_lateness = Histogram(
            "wghybrid_tick_lateness_seconds",
            "How late a tick started after its scheduled time",
            buckets=TICK_BUCKETS,
            registry=r,
        )
        self.mode_changes = Counter(
            "wghybrid_mode_changes",
            "Peer mode changes applied, by the mode changed to and whether the controller "
            "(automatic) or an operator's override asked for it",
            ("interface", "to", "cause"),
            registry=r,
        )
        self.sample_errors = Counter(
            "wghybrid_sample_errors", "Ticks whose sample failed or timed out", registry=r
        )
        self.transient_errors = Counter(
            "wghybrid_transient_errors", "Operations that failed and are retried", registry=r
        )
        self.permanent_errors = Counter(
            "wghybrid_permanent_errors",
            "Operations refused for good (the peer or knob became unmanaged)",
            registry=r,
        )
        self.internal_errors = Counter(
            "wghybrid_internal_errors", "Unexpected exceptions in the loop or the API", registry=r
        )
        self.policy_reload_errors = Counter(
            "wghybrid_policy_reload_errors", "Policy reloads rejected", registry=r
        )
        self.stall_steps = Counter(
            "wghybrid_stall_steps",
            "Steps taken against peers whose decryption stalled (wghybrid.daemon.stall): "
            "detected, threaded-napi-off, recreated, recovered",
            ("interface", "step"),
            registry=r,
        )
        self.stalled_peers = Gauge(
            "wghybrid_stalled_peers",
            "Peers seen stalled (accepting nothing while their packets are dropped) and "
            "not yet recovered",
            registry=r,
        )
        r.register(_SnapshotCollector(self))

    # -- fed by the loop -------------------------------------------------------------
    def mode_changed(self, op: SetPeerMode) -> None:
        """An applied mode change: an operator's when its reason is the override rule."""
        cause = "override" if op.reason is not None and op.reason.rule == "override" \
            else "automatic"
        self.mode_changes.labels(op.interface, str(op.mode), cause).inc()

    def mode_changes_total(self) -> float:
        return sum(s.value for fam in self.mode_changes.collect() for s in fam.samples
                   if s.name.endswith("_total"))

    def observe(self, snapshot: Sequence[InterfaceStatus]) -> None:
        """Fold a new snapshot's counters into the per-mode totals: each peer's increase
        since the last snapshot goes to the mode it was in then. The first snapshot of an
        interface is the baseline; a peer new since the last one (or whose counters
        restarted: another epoch) counts from zero."""
        totals = dict(self._totals)
        seen: dict[str, _Seen] = {}
        for status in snapshot:
            cols = columns(status)
            name = cols.interface
            if name not in seen:
                for label in MODES:
                    totals.setdefault((name, label), (0,) * len(_TOTALS))
                    for cause in CAUSES:
                        self.mode_changes.labels(name, label, cause)
            cur = _counters(cols)
            mode = np.asarray(cols.mode, dtype=np.uint8)
            prev = self._seen.get(name)
            if prev is not None and len(cols):
                delta, then = _deltas(name, prev, cols, cur, mode)
                inline = then == Mode.INLINE
                every = delta.sum(axis=1)
                part = (delta * inline).sum(axis=1)  # a mask multiplied: no gather
                for m, add in ((Mode.INLINE, part), (Mode.VANILLA, every - part)):
                    old = totals.get((name, str(m)), (0,) * len(_TOTALS))
                    totals[(name, str(m))] = tuple(
                        a + b for a, b in zip(old, add.tolist(), strict=True))
            seen[name] = _Seen(np.array(cols.key, dtype="S32"), mode,
                               np.asarray(cols.epoch, dtype=np.uint64), cur)
        self._seen = seen
        self._totals = {k: v for k, v in totals.items() if k[0] in seen}

    # -- read by the rendering thread ------------------------------------------------
    def totals(self) -> dict[tuple[str, str], tuple[int, ...]]:
        return self._totals

    def per_peer(self, snapshot: Sequence[InterfaceStatus]) -> bool:
        return sum(len(i.peers) for i in snapshot) <= self.per_peer_max()

    def render(self) -> bytes:
        snap = self.snapshot()
        body = generate_latest(self.registry)
        if self.per_peer(snap):
            body += peer_exposition(snap)
        return body

    def exposition(self) -> Exposition:
        """The rendering, plain and compressed (runs in a worker thread)."""
        body = self.render()
        return Exposition(body, gzip.compress(body, GZIP_LEVEL, mtime=0))
