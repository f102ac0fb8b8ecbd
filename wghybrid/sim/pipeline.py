"""A CPU model of one WireGuard gateway's decapsulation side: who gets which core, how much.

We model gw2, the decapsulating gateway, because the paper found it to be the bottleneck in
every experiment (FACTS.md, "Testbed"); the encapsulating side does the same amount of crypto
but its per-peer serial stage (the TX worker) is lighter than gw2's Reception softirq.

Every number below is calibrated to /work/shared/paper/FACTS.md; docs/sim-model.md lists them
with the fact each reproduces. All costs are in *cores per Gbps* (1.0 = one core fully busy
for one Gbps of tunnelled traffic), and include the (small) ACK traffic the other way, which
the paper calls negligible.

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
    black_hole_core: int
    """The core softirq NAPI piled on (-1 with threaded NAPI or no vanilla tunnel)."""

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
    """One gateway with `cores` cores and one WireGuard device."""

    cores: int = 32
    params: ModelParams = ModelParams()

    def evaluate(
        self,
        offered_gbps: F64,
        mode: U8,
        core: I32,
        crypt_cores: frozenset[int],
        threaded_napi: bool,
    ) -> Evaluation:
        """Delivered throughput and CPU use for this offered load and configuration.

        `core` -1 means default placement (`default_cores`); other values must be in
        range. `crypt_cores` is the device's crypt worker pool (upstream: every core); an
        empty pool leaves vanilla tunnels with no decryption at all (they deliver 0).
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
        pool = np.zeros(ncores, dtype=bool)
        pool_list = [c for c in crypt_cores if 0 <= c < ncores]
        pool[pool_list] = True

        offered_in = offered * inline_f
        offered_v = float(offered.sum()) - float(offered_in.sum())
        # Softirq NAPI: every vanilla peer's poll ends up on one core (the paper's "black
        # hole"; which core is luck there, here the highest pool core: the poll is raised by
        # a crypt worker on the core it ran on).
        bh = -1
        if offered_v > 0.0 and not threaded_napi and pool_list:
            bh = max(pool_list)

        # 1. Softirq layer: per-tunnel demand on its core, proportional sharing per core.
        demand = offered * p.rx_cost
        demand += offered_in * (p.inline_cost - p.rx_cost)
        softirq = np.bincount(placed, weights=demand, minlength=ncores)
        if bh >= 0:
            softirq[bh] += p.napi_cost * offered_v
        share = np.minimum(1.0, 1.0 / np.maximum(softirq, 1e-300))
        u = share[placed]
        u *= offered  # what each tunnel's serial stage admits
        u_in = u * inline_f
        u_v = u
        u_v -= u_in
        r_bh = float(share[bh]) * offered_v if bh >= 0 else math.inf  # NAPI cap, all vanilla

        # 2. Kworker layer: scale all vanilla tunnels by one factor s in [0, 1].
        big_u = float(u_v.sum())
        in_used = p.inline_cost * np.bincount(placed, weights=u_in, minlength=ncores)
        vrx_used = p.rx_cost * np.bincount(placed, weights=u_v, minlength=ncores)
        # softirq use of core c at scale s: in_used[c] + s * (vrx_used[c] + bh_napi[c])
        bh_napi = np.zeros(ncores)
        if bh >= 0:
            bh_napi[bh] = p.napi_cost * big_u
        s = 1.0
        if big_u > 0.0:
            s = min(s, r_bh / big_u)
            a = p.crypt_contention * big_u * big_u
            pool_b = float((vrx_used + bh_napi)[pool].sum())
            s = min(s, _positive_root(a, p.crypt_cost * big_u + pool_b,
                                      float(pool.sum()) - float(in_used[pool].sum())))
            if threaded_napi:
                s = min(s, _positive_root(
                    a, (p.crypt_cost + p.napi_cost) * big_u + float(vrx_used.sum()),
                    ncores - float(in_used.sum())))
            s = max(0.0, s)
        delivered = u_v * s
        delivered += u_in
        r_v = s * big_u

        # Where the CPU goes, per core: crypt fills pool cores' room in proportion to it,
        # threaded NAPI then fills any core's remaining room.
        soft_used = in_used + s * (vrx_used + bh_napi)
        left = np.maximum(1.0 - soft_used, 0.0)
        crypt_total = r_v * (p.crypt_cost + p.crypt_contention * r_v)
        busy = soft_used.copy()
        if crypt_total > 0.0:
            room = np.where(pool, left, 0.0)
            busy += room * min(1.0, crypt_total / max(float(room.sum()), 1e-300))
        if threaded_napi and r_v > 0.0:
            room = np.maximum(1.0 - busy, 0.0)
            busy += room * min(1.0, p.napi_cost * r_v / max(float(room.sum()), 1e-300))
        busy = np.minimum(busy, 1.0)

        v_unit = p.rx_cost + p.napi_cost + p.crypt_cost + p.crypt_contention * r_v
        cpu_rx = u_in * p.inline_cost  # all of the tunnel's CPU, for now
        cpu_rx += u_v * (s * v_unit)
        cpu_tx = cpu_rx * p.ack_cpu_share
        cpu_rx -= cpu_tx
        return Evaluation(
            delivered_gbps=delivered,
            cpu_rx=cpu_rx,
            cpu_tx=cpu_tx,
            core_busy=busy,
            core=placed.astype(np.int32),
            black_hole_core=bh,
        )
