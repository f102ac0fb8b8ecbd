"""Prometheus metrics of one daemon, in its own registry (no global registry state).

Per-peer series carry two labels only, `interface` and `public_key`, as the WireGuard
exporters do; a peer's friendly name lives in the `wghybrid_peer_info` metric, to be
joined on those two labels. Per-peer series are built at scrape time from the
controller's last status snapshot by a custom collector, so a peer that disappears
leaves no stale series behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wghybrid.core.status import columns
from wghybrid.model import InterfaceStatus, Mode, Override, PeerClass, encode_key

Presence = Callable[[], Sequence[tuple[Override, bool]]]
"""The live overrides, each with whether its peer is in the last snapshot."""

PEER_LABELS = ("interface", "public_key")

TICK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class _SnapshotCollector(Collector):
    """Per-peer and per-interface gauges from the controller's last status snapshot."""

    def __init__(
        self,
        snapshot: Callable[[], tuple[InterfaceStatus, ...]],
        transitions: Callable[[], int],
        info: Callable[[], dict[str, str]],
        overrides: Presence | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._transitions = transitions
        self._info = info
        self._overrides = overrides

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        build = InfoMetricFamily("wghybrid_daemon", "The running daemon: version, backend, policy")
        build.add_metric([], self._info())
        yield build
        yield CounterMetricFamily(
            "wghybrid_transitions", "Mode changes applied since start", value=self._transitions()
        )

        peer_info = InfoMetricFamily(
            "wghybrid_peer", "A peer's friendly name", labels=(*PEER_LABELS, "name")
        )
        gauges = {
            "rx": GaugeMetricFamily(
                "wghybrid_peer_receive_bits_per_second",
                "Smoothed receive rate of the tunnel",
                labels=PEER_LABELS,
            ),
            "tx": GaugeMetricFamily(
                "wghybrid_peer_transmit_bits_per_second",
                "Smoothed transmit rate of the tunnel",
                labels=PEER_LABELS,
            ),
            "cpu": GaugeMetricFamily(
                "wghybrid_peer_cpu_cores", "Smoothed CPU use, in cores", labels=PEER_LABELS
            ),
            "inline": GaugeMetricFamily(
                "wghybrid_peer_inline",
                "1 when the tunnel runs inline, 0 vanilla",
                labels=PEER_LABELS,
            ),
            "elephant": GaugeMetricFamily(
                "wghybrid_peer_elephant", "1 when classed elephant, 0 mouse", labels=PEER_LABELS
            ),
            "core": GaugeMetricFamily(
                "wghybrid_peer_core",
                "Core of the tunnel's serial work (-1: data plane's default)",
                labels=PEER_LABELS,
            ),
            "pinned": GaugeMetricFamily(
                "wghybrid_peer_pinned", "1 when an operator override pins it", labels=PEER_LABELS
            ),
            "unmanaged": GaugeMetricFamily(
                "wghybrid_peer_unmanaged",
                "1 when the controller stopped managing it after a permanent error",
                labels=PEER_LABELS,
            ),
            "time": GaugeMetricFamily(
                "wghybrid_peer_time_in_mode_seconds",
                "Seconds since the last mode change",
                labels=PEER_LABELS,
            ),
        }
        crypt = GaugeMetricFamily(
            "wghybrid_interface_crypt_cores",
            "Size of the vanilla crypt-worker pool",
            labels=("interface",),
        )
        inline_cores = GaugeMetricFamily(
            "wghybrid_interface_inline_cores",
            "Cores carrying at least one inline tunnel",
            labels=("interface",),
        )
        napi = GaugeMetricFamily(
            "wghybrid_interface_threaded_napi",
            "1 when threaded NAPI is on",
            labels=("interface",),
        )
        for iface in snap:
            crypt.add_metric([iface.name], len(iface.crypt_cores))
            inline_cores.add_metric([iface.name], len(iface.inline_cores))
            napi.add_metric([iface.name], float(iface.threaded_napi))
            # Column by column from the snapshot's arrays: no PeerStatus objects.
            cols = columns(iface)
            rows = zip(
                cols.public_keys(), cols.names(), cols.rx_bps.tolist(), cols.tx_bps.tolist(),
                cols.cpu.tolist(), (cols.mode == Mode.INLINE).astype(float).tolist(),
                (cols.pclass == PeerClass.ELEPHANT).astype(float).tolist(), cols.core.tolist(),
                cols.pinned.astype(float).tolist(), (cols.unmanaged >= 0).astype(float).tolist(),
                cols.time_in_mode.tolist(), strict=True,
            )
            for key, name, rx, tx, cpu, inline, elephant, core, pinned, unmanaged, t in rows:
                labels = [cols.interface, key]
                peer_info.add_metric(labels, {"name": name})
                gauges["rx"].add_metric(labels, rx)
                gauges["tx"].add_metric(labels, tx)
                gauges["cpu"].add_metric(labels, cpu)
                gauges["inline"].add_metric(labels, inline)
                gauges["elephant"].add_metric(labels, elephant)
                gauges["core"].add_metric(labels, core)
                gauges["pinned"].add_metric(labels, pinned)
                gauges["unmanaged"].add_metric(labels, unmanaged)
                gauges["time"].add_metric(labels, t)
        yield peer_info
        yield from gauges.values()
        yield crypt
        yield inline_cores
        yield napi
        if self._overrides is not None:
            presence = self._overrides()
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
    """The metrics one daemon exports; the loop updates the counters and histograms."""

    def __init__(
        self,
        snapshot: Callable[[], tuple[InterfaceStatus, ...]],
        transitions: Callable[[], int],
        info: Callable[[], dict[str, str]],
    ) -> None:
        self.overrides: Sequence[tuple[Override, bool]] = ()
        """The live overrides and whether their peer is present, set (on the event loop)
        before each rendering: `render` runs in a worker thread and must not read the
        daemon's live dictionaries."""
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
        r.register(_SnapshotCollector(snapshot, transitions, info, lambda: self.overrides))

    def render(self) -> bytes:
        return generate_latest(self.registry)
