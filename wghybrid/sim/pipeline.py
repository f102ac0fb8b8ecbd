"""A CPU model of one WireGuard gateway's decapsulation side: who gets which core, how much.

We model gw2, the decapsulating gateway, because the paper found it to be the bottleneck in
every experiment (FACTS.md, "Testbed": its Reception core saturates first); the encapsulating
side is not modelled.

Every cost below is calibrated to /work/shared/paper/FACTS.md except the two marked as
assumptions; docs/sim-model.md lists them with the fact each reproduces. All costs are in
*cores per Gbps* (1.0 = one core fully busy for one Gbps of tunnelled traffic), and include
the (small) ACK traffic the other way, which the paper calls negligible.

The structure of one evaluation (everything vectorised over tunnels, a fixed number of
numpy passes, no Python loop per tunnel):

1. *Softirq layer* (strict priority): on each core, the work that runs in softirq context
   claims the core first: inline tunnels (their whole pipeline), vanilla tunnels' Reception
   stage (on the core RSS/steering picks, the peer's `core`) and, with softirq NAPI, every
   vanilla peer's napi_poll piled onto one "black hole" core. When a core's softirq demand
   exceeds it, every claimant gets the same fraction of its demand (the NIC RX ring is FIFO:
   overload drops every tunnel's packets alike).
2. *Kworker layer*: vanilla decryption runs in the device's crypt workers, on the crypt pool
   cores, in whatever capacity the softirq layer left there (the per-device ring is shared,
   so workers on idle cores pull more: work-conserving). With threaded NAPI the per-peer
   poll threads go wherever the scheduler finds room, on any core. The crypt cost per Gbps
   grows with the device's total vanilla throughput (contention on the one per-device MPMC
   ring and cache-line bouncing among all workers): this is what makes vanilla cost 0.49
   core/Gbps at 13 Gbps but 0.67 at 48 Gbps, as the paper's CPU readings imply.
   When the kworker layer is short, all vanilla tunnels lose the same fraction (the ring is
   FIFO over every peer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from wghybrid.model import F64, I32, U8, Mode


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Costs of each pipeline stage, in cores per Gbps (see docs/sim-model.md)."""

    inline_cost: float = 1.0 / 2.8
    """Inline: the whole decap pipeline on one core. FACTS: ~2.8 Gbps per tunnel-core,
    ~90 Gbps with 32 tunnels on 32 cores."""
    rx_cost: float = 1.0 / 5.0
    """Vanilla Reception softirq (one core per tunnel). FACTS: one vanilla tunnel ~5 Gbps
    whatever its flow count, bottleneck the Reception core of gw2."""
    napi_cost: float = 1.0 / 13.8
    """Vanilla per-peer NAPI forwarding. FACTS: softirq NAPI piles every peer's poll on one
    core, plateau 12-14 Gbps; 1/13.8 puts the plateau at 13.8 Gbps."""
    crypt_cost: float = 0.1090
    """Vanilla decryption at (near) zero device load, cores per Gbps."""
    crypt_contention: float = 0.005936
    """Extra crypt cost per Gbps per Gbps of device vanilla throughput. With crypt_cost this
    reproduces both CPU readings of FACTS (16 tunnels: 13 Gbps at 20 % of 32 cores with
    softirq NAPI, 48 Gbps at 100 % with threaded NAPI)."""
    switch_cost_s: float = 0.1
    """Seconds of a tunnel's traffic lost each time its mode or core changes (SimGateway):
    packets in flight in the old path are dropped or reordered and TCP backs off. Not in
    FACTS; an assumption, so that flapping is not free."""
    ack_cpu_share: float = 0.05
    """Fraction of a tunnel's CPU spent on the reverse (ACK) direction, reported as tx CPU.
    Not in FACTS (the paper calls ACK processing negligible); an assumption."""


@dataclass(frozen=True, slots=True, eq=False)
class Evaluation:
    """Steady state of the gateway for one offered load and one configuration."""

    delivered_gbps: F64
    """Per tunnel, decapsulated and forwarded."""
    cpu_rx: F64
    """Per tunnel, cores spent on its decap direction (all stages, wherever they ran)."""
    cpu_tx: F64
    """Per tunnel, cores spent on its reverse (ACK) direction."""
    core_busy: F64
    """Per core, fraction busy (<= 1)."""
    core: I32
    """Per tunnel, the core its serial stage ran on (default placement resolved)."""
    black_hole_cores: tuple[int, ...]
    """Per device, the core softirq NAPI piled on (-1 with threaded NAPI or no vanilla
    tunnel)."""

    @property
    def black_hole_core(self) -> int:
        """Device 0's black-hole core."""
        return self.black_hole_cores[0] if self.black_hole_cores else -1

    @property
    def total_gbps(self) -> float:
        return float(self.delivered_gbps.sum())

    @property
    def cores_used(self) -> float:
        return float(self.core_busy.sum())


def default_cores(n: int, cores: int) -> npt.NDArray[np.intp]:
    """Where a tunnel's serial stage runs when nobody placed it: tunnel i on core i mod N.

    The paper's testbed steered each tunnel's UDP flow to its own core with flow rules; the
    model's default does the same (round robin), so an unmanaged gateway is not penalised
    by hash collisions it would suffer with plain RSS.
    """
    return np.tile(np.arange(cores, dtype=np.intp), -(-n // cores))[:n]


def _positive_root(a: float, b: float, c: float) -> float:
    """Largest s >= 0 with a*s^2 + b*s <= c (a, b >= 0; c may be negative -> 0)."""
    if c <= 0.0:
        return 0.0
    if a <= 1e-300:
        return math.inf if b <= 1e-300 else c / b
    return (-b + math.sqrt(b * b + 4.0 * a * c)) / (2.0 * a)


@dataclass(frozen=True, slots=True)
class GatewayModel:
    """One gateway with `cores` cores and one or more WireGuard devices."""

    cores: int = 32
    params: ModelParams = ModelParams()

    def evaluate(
        self,
        offered_gbps: F64,
        mode: U8,
        core: I32,
        crypt_cores: frozenset[int] | Sequence[frozenset[int]],
        threaded_napi: bool | Sequence[bool],
        iface: I32 | None = None,
    ) -> Evaluation:
        """Delivered throughput and CPU use for this offered load and configuration.

        `core` -1 means default placement (`default_cores`); other values must be in
        range. `crypt_cores` is the device's crypt worker pool (upstream: every core); an
        empty pool leaves vanilla tunnels with no decryption at all (they deliver 0).

        Several devices: `iface` gives each tunnel's device index, and `crypt_cores` and
        `threaded_napi` are then sequences indexed by device (a single value applies to
        every device). Devices share the cores; each has its own crypt ring, pool,
        black hole and NAPI flag. Where their pools overlap and the pool is short, devices
        are served in index order (device 0 first): give them disjoint pools.
        """
        p = self.params
        ncores = self.cores
        offered = np.asarray(offered_gbps, dtype=np.float64)
        if offered.size and offered.min() < 0.0:
            offered = np.maximum(offered, 0.0)
        n = offered.shape[0]
        mode_a = np.asarray(mode)
        core_a = np.asarray(core, dtype=np.int32)
        if mode_a.shape != (n,) or core_a.shape != (n,):
            raise ValueError("offered_gbps, mode and core must have the same length")
        if n and (core_a.max(initial=-1) >= ncores or core_a.min(initial=0) < -1):
            raise ValueError(f"core out of range for a {ncores}-core gateway")
        placed = core_a.astype(np.intp)  # bincount's native index type
        if n and core_a.min() < 0:
            unplaced = np.flatnonzero(core_a < 0)
            placed[unplaced] = unplaced % ncores  # default_cores(), for those rows only
        inline_f = (mode_a == Mode.INLINE).astype(np.float64)  # 1.0 inline, 0.0 vanilla

        # Devices: one (the common case, no per-device arrays) or several.
        dev: npt.NDArray[np.intp] | None = None
        ndev = 1
        if iface is not None:
            dev = np.asarray(iface, dtype=np.intp)
            if dev.shape != (n,) or (n and dev.min() < 0):
                raise ValueError("iface must give a device index >= 0 for every tunnel")
            ndev = int(dev.max()) + 1 if n else 1
        pools_in = ([crypt_cores] * ndev if isinstance(crypt_cores, frozenset)
                    else list(crypt_cores))
        threaded_in = ([threaded_napi] * ndev if isinstance(threaded_napi, bool)
                       else list(threaded_napi))
        ndev = max(ndev, len(pools_in), len(threaded_in))
        if len(pools_in) < ndev or len(threaded_in) < ndev:
            raise ValueError(f"crypt_cores and threaded_napi must cover {ndev} devices")
        pools = np.zeros((ndev, ncores), dtype=bool)
        pool_lists = []
        for d in range(ndev):
            members = [c for c in pools_in[d] if 0 <= c < ncores]
            pools[d, members] = True
            pool_lists.append(members)

        def per_dev(weights: F64) -> F64:
            if dev is None:
                return np.array([weights.sum()])
            return np.bincount(dev, weights=weights, minlength=ndev).astype(np.float64)

        offered_in = offered * inline_f
        offered_v = per_dev(offered - offered_in)
        # Softirq NAPI: every vanilla peer's poll ends up on one core (the paper's "black
        # hole"; which core is luck there, here the highest pool core: the poll is raised by
        # a crypt worker on the core it ran on). One per device.
        bh = [max(pool_lists[d]) if offered_v[d] > 0.0 and not threaded_in[d]
              and pool_lists[d] else -1 for d in range(ndev)]

        # 1. Softirq layer: per-tunnel demand on its core, proportional sharing per core.
        demand = offered * p.rx_cost
        demand += offered_in * (p.inline_cost - p.rx_cost)
        softirq = np.bincount(placed, weights=demand, minlength=ncores)
        for d in range(ndev):
            if bh[d] >= 0:
                softirq[bh[d]] += p.napi_cost * offered_v[d]
        share = np.minimum(1.0, 1.0 / np.maximum(softirq, 1e-300))
        u = share[placed]
        u *= offered  # what each tunnel's serial stage admits
        u_in = u * inline_f
        u_v = u
        u_v -= u_in

        # 2. Kworker layer: scale each device's vanilla tunnels by one factor s[d] in [0, 1].
        big_u = per_dev(u_v)
        in_used = p.inline_cost * np.bincount(placed, weights=u_in, minlength=ncores)
        # own[d, c]: device d's softirq use of core c at s = 1 (Reception + black hole);
        # at scale s it is s * own[d, c].
        if dev is None:
            own = p.rx_cost * np.bincount(placed, weights=u_v, minlength=ncores)[None, :]
        else:
            own = p.rx_cost * np.bincount(dev * ncores + placed, weights=u_v,
                                          minlength=ndev * ncores).reshape(ndev, ncores)
        for d in range(ndev):
            if bh[d] >= 0:
                own[d, bh[d]] += p.napi_cost * big_u[d]
        used = in_used + own.sum(axis=0)  # every core's use so far, own parts at s = 1
        scale = np.ones(ndev)
        r_v = np.zeros(ndev)
        for d in range(ndev):
            if big_u[d] <= 0.0:
                continue
            pool = pools[d]
            rest = used - own[d]  # what everything but device d's own part uses
            s = 1.0
            if bh[d] >= 0:  # the black-hole core admits this much NAPI work
                s = min(s, float(share[bh[d]]) * float(offered_v[d]) / float(big_u[d]))
            a = p.crypt_contention * big_u[d] * big_u[d]
            s = min(s, _positive_root(a, p.crypt_cost * big_u[d] + float(own[d][pool].sum()),
                                      float((1.0 - rest[pool]).sum())))
            if threaded_in[d]:
                s = min(s, _positive_root(
                    a, (p.crypt_cost + p.napi_cost) * big_u[d] + float(own[d].sum()),
                    float((1.0 - rest).sum())))
            s = max(0.0, s)
            scale[d] = s
            r_v[d] = s * big_u[d]
            used = rest + s * own[d]
            # Where its kworker CPU goes: crypt fills its pool cores' room in proportion
            # to it, threaded NAPI then fills any core's remaining room.
            crypt_total = r_v[d] * (p.crypt_cost + p.crypt_contention * r_v[d])
            if crypt_total > 0.0:
                room = np.where(pool, np.maximum(1.0 - used, 0.0), 0.0)
                used = used + room * min(1.0, crypt_total / max(float(room.sum()), 1e-300))
            if threaded_in[d] and r_v[d] > 0.0:
                room = np.maximum(1.0 - used, 0.0)
                used = used + room * min(1.0, p.napi_cost * r_v[d]
                                         / max(float(room.sum()), 1e-300))
        # Clipped below too: `rest = used - own[d]` cancels in floating point, so a core
        # whose only use was a device scaled to s = 0 can come out at -5.6e-17.
        busy = np.clip(used, 0.0, 1.0)

        v_unit = scale * (p.rx_cost + p.napi_cost + p.crypt_cost + p.crypt_contention * r_v)
        if dev is None:
            delivered = u_v * float(scale[0])
            vanilla_cpu = u_v * float(v_unit[0])
        else:
            delivered = u_v * scale[dev]
            vanilla_cpu = u_v * v_unit[dev]
        delivered += u_in
        cpu_rx = u_in * p.inline_cost  # all of the tunnel's CPU, for now
        cpu_rx += vanilla_cpu
        cpu_tx = cpu_rx * p.ack_cpu_share
        cpu_rx -= cpu_tx
        return Evaluation(
            delivered_gbps=delivered,
            cpu_rx=cpu_rx,
            cpu_tx=cpu_tx,
            core_busy=busy,
            core=placed.astype(np.int32),
            black_hole_cores=tuple(bh),
        )
