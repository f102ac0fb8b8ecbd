"""Estimation: what each tunnel wants, and what each mode costs on this gateway (pure).

Stage three of a tick: sample -> rates -> **estimate** -> assign -> place -> apply.

A tunnel's measured rate is what it *got*, not what it *wanted*: a tunnel capped by its
core (inline on a saturated core, shared or not), by its mode (vanilla's serial Reception
stage) or by a saturated pool shows a rate below its demand. Such a reading is
*censored*: it says "at least this much". The estimator keeps, per tunnel, a demand
estimate built so that the assignment stage can find the demand out:

- an uncensored reading is the demand;
- a censored reading is a lower bound: it is read as the rate times (1 + `probe_gain`) —
  more than it got, so that the assignment stage gives it more room if the gateway has
  any; the next reading, from the new room, tells more. It does not compound on its own:
  without a change of room the estimate stays `probe_gain` above what the tunnel gets, so
  a saturated gateway does not inflate everyone's demand without bound;
- two estimates are kept: the mean demand (smoothed like the rates), which the assignment
  maximises delivered throughput for, and its envelope (up at once, down with half-life
  `demand_decay`), which placement keeps room for, so that noise does not make a core
  short.

The readings are instantaneous (one interval), not the display's smoothed rates, so a
flash crowd is seen within a tick.

Costs are learned from the counters, per mode, as cores per Gbps (the sum of CPU over the
sum of throughput of every measured tunnel in that mode, smoothed over `COST_HALF_LIFE`):
they describe this machine (its CPU, its NIC, its kernel), not the traffic. Until measured
they are FACTS.md's: 2.8 Gbps per inline core, 48 Gbps on 32 cores vanilla. An inline
tunnel can carry at most one core's worth, 1 / inline cost; a vanilla tunnel at most its
serial Reception stage's, `VANILLA_TUNNEL_GBPS` (FACTS: ~5 Gbps), raised when a faster
vanilla tunnel is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wghybrid.model import F64, U8, Mode

DEFAULT_INLINE_COST = 1.0 / 2.8
"""Cores per Gbps of an inline tunnel until measured (FACTS.md: ~2.8 Gbps per core)."""
DEFAULT_VANILLA_COST = 32.0 / 48.0
"""Cores per Gbps of a vanilla tunnel until measured (FACTS.md: 48 Gbps on 32 cores)."""
VANILLA_TUNNEL_GBPS = 5.0
"""What one vanilla tunnel carries at most (FACTS.md: ~5 Gbps, its Reception core)."""
COST_HALF_LIFE = 30.0
"""Seconds: learned costs move slowly, they describe the machine, not the traffic."""
MIN_GBPS_FOR_COST = 0.005
"""Tunnels below this rate do not teach costs (their CPU is mostly fixed overhead)."""
SERIAL_CENSOR = 0.9
"""A vanilla tunnel at this fraction of the vanilla per-tunnel ceiling is capped by it."""
POOL_CENSOR = 0.95
"""A vanilla pool busier than this on average is short: its tunnels are capped by it."""
KNOWN_FOR = 600.0
"""Seconds an uncensored reading keeps a tunnel from being probed again at that level."""
KNOWN_MARGIN = 1.5
"""An inline reading within this factor of what the other mode gave is "about the same"."""
RISING = 1.25
"""A reading this many times the mean demand is a rise: on a saturated shared core, the
rising tunnel is the one that wants more (its readings compound)."""
VANILLA_SLOPE = 0.0051
"""Extra vanilla cores per Gbps for each Gbps of vanilla throughput on the gateway: the
crypt workers share one ring per device and bounce its cache lines, so vanilla costs more
per Gbps the more of it there is (FACTS.md: 0.49 core/Gbps at 13 Gbps, 0.67 at 48). The
slope is this prior; the level is learned."""


@dataclass(frozen=True, slots=True)
class Costs:
    """What each mode costs on this gateway (learned) and what one tunnel can carry."""

    inline: float = DEFAULT_INLINE_COST
    """Cores per Gbps, inline."""
    vanilla: float = DEFAULT_VANILLA_COST
    """Cores per Gbps, vanilla (crypt workers, Reception, NAPI: every stage), at the
    vanilla throughput `vanilla_at`."""
    vanilla_at: float = 48.0
    """Gbps of vanilla traffic the gateway carried when `vanilla` was measured."""
    vanilla_tunnel_gbps: float = VANILLA_TUNNEL_GBPS
    """The most one vanilla tunnel carries (its serial stages)."""
    pool_share: float = 1.0
    """Fraction of vanilla's CPU spent on the pool's cores (learned: the pool's busy time
    over the vanilla tunnels' CPU). The rest — threaded NAPI polls, which the scheduler
    puts wherever there is room — runs on other cores, after their softirq work, so it
    does not take from inline tunnels: only this share has to fit in the pool."""

    @property
    def inline_tunnel_gbps(self) -> float:
        """The most one inline tunnel carries: one whole core."""
        return 1.0 / self.inline

    def vanilla_cost(self, gbps: float) -> float:
        """Cores per Gbps of vanilla when the gateway carries `gbps` of it."""
        return max(self.vanilla + VANILLA_SLOPE * (gbps - self.vanilla_at), 0.05)

    def vanilla_capacity(self, cores: float) -> float:
        """Gbps of vanilla that `cores` cores carry: s * cost(s) = cores, solved for s."""
        if cores <= 0:
            return 0.0
        a = VANILLA_SLOPE
        b = self.vanilla - VANILLA_SLOPE * self.vanilla_at
        if b <= 0:
            b = 0.05
        return float((-b + (b * b + 4.0 * a * cores) ** 0.5) / (2.0 * a))

    def learn(self, gbps: F64, cpu: F64, mode: U8, valid: np.ndarray, dt: float,
              pool_busy: float | None = None) -> Costs:
        """Fold one interval's readings in (instantaneous rates, not smoothed ones);
        `pool_busy`: cores' worth of busy time on the pool's cores, when known."""
        if dt <= 0:
            return self
        alpha = 1.0 - 2.0 ** (-dt / COST_HALF_LIFE)
        inline, vanilla, at = self.inline, self.vanilla, self.vanilla_at
        sel = valid & (mode == Mode.INLINE) & (gbps > MIN_GBPS_FOR_COST)
        total = float(gbps[sel].sum())
        if total > 0:
            inline += alpha * (float(cpu[sel].sum()) / total - inline)
        sel = valid & (mode == Mode.VANILLA) & (gbps > MIN_GBPS_FOR_COST)
        total = float(gbps[sel].sum())
        if total > 0:
            # Re-expressed at the throughput measured now along the prior slope, then
            # blended: the level is learned, the slope assumed.
            vanilla = self.vanilla_cost(total)
            vanilla += alpha * (float(cpu[sel].sum()) / total - vanilla)
            at = total
        share = self.pool_share
        v_cpu = float(cpu[sel].sum()) if total > 0 else 0.0
        if pool_busy is not None and v_cpu > 0.5:
            share += alpha * (min(max(pool_busy / v_cpu, 0.5), 1.0) - share)
        seen = valid & (mode == Mode.VANILLA)
        ceiling = self.vanilla_tunnel_gbps
        if seen.any():
            ceiling = max(ceiling, float(gbps[seen].max()))
        return Costs(inline, vanilla, at, ceiling, share)


@dataclass(frozen=True, slots=True, eq=False)
class Demand:
    """Per tunnel, aligned with the rates."""

    gbps: F64
    """The demand estimate (the envelope), Gbps."""
    measured: F64
    """The last interval's rate, Gbps."""
    censored: np.ndarray
    """bool: the last reading was capped (by core, mode or pool): a lower bound."""
    cause: U8
    """Why it was censored (`Cap`), 0 when it was not."""
    peak: F64
    """The envelope of recent demand (up at once, down with half-life `demand_decay`):
    what placement keeps room for."""
    known: F64 | None = None
    """What the tunnel got in the mode it last left, Gbps (nan: none): set by the
    controller when a mode change is seen."""
    known_age: F64 | None = None
    """Seconds since `known` was read."""


class Cap:
    """What capped a censored reading (values of `Demand.cause`)."""

    NONE = 0
    CORE = 1
    """Inline, on a saturated core (its own or shared)."""
    SERIAL = 2
    """Vanilla, at the per-tunnel ceiling of its serial stages."""
    POOL = 3
    """Vanilla, in a saturated crypt pool."""
    NAMES = ("", "its core is saturated", "vanilla's per-tunnel ceiling",
             "the vanilla pool is saturated")


def censoring(
    gbps: F64, cpu: F64, pps: F64, drop_pps: F64, mode: U8, core: np.ndarray,
    core_busy: F64, pool: frozenset[int], costs: Costs, saturation: float,
) -> U8:
    """Which readings are capped, and by what (`Cap`), vectorised."""
    n = gbps.shape[0]
    cause = np.zeros(n, dtype=np.uint8)
    inline = mode == Mode.INLINE
    ncores = core_busy.shape[0]
    on = (core >= 0) & (core < ncores)
    busy = np.where(on, core_busy[np.where(on, core, 0)], 0.0) if ncores else np.zeros(n)
    # Inline: its core is saturated by inline work — the sum of the CPU counters of the
    # inline tunnels on it, not the core's busy time: softirq work has the core first, and
    # what it leaves is filled by threads (threaded NAPI, crypt workers) that cap nobody.
    placed = inline & on
    size = max(ncores, int(core.max()) + 1 if n else 0, 1)
    inline_sum = np.bincount(core[placed], weights=cpu[placed], minlength=size)
    cause[inline & on & (inline_sum[np.where(on, core, 0)] >= saturation)] = Cap.CORE
    cause[inline & (cpu >= saturation)] = Cap.CORE
    vanilla = ~inline
    cause[vanilla & (gbps >= SERIAL_CENSOR * costs.vanilla_tunnel_gbps)] = Cap.SERIAL
    members = [c for c in pool if 0 <= c < ncores]
    if members and float(core_busy[members].mean()) >= POOL_CENSOR:
        cause[vanilla & (cause == Cap.NONE)] = Cap.POOL
    # Reception core of a vanilla tunnel saturated (shared with another elephant).
    cause[vanilla & (cause == Cap.NONE) & (busy >= max(saturation, POOL_CENSOR))] = Cap.POOL
    # Drops are not read as censoring: a per-peer drop count says traffic was refused,
    # not why — the disruption of a move, a full queue — and the NIC's own ring drops
    # are no peer's. Censoring is judged from where the work runs.
    del drop_pps, pps
    return cause


def alone(mode: U8, core: np.ndarray, ncores: int) -> np.ndarray:
    """bool: inline tunnels that have their core to themselves."""
    inline = mode == Mode.INLINE
    placed = inline & (core >= 0)
    size = max(ncores, int(core.max()) + 1 if core.shape[0] else 0, 1)
    count = np.bincount(core[placed], minlength=size)
    return np.asarray(placed & (count[np.where(placed, core, 0)] == 1))


def dominant(mode: U8, core: np.ndarray, cpu: F64, ncores: int, share: float = 0.5) -> np.ndarray:
    """bool: inline tunnels that use the most of their core, and at least `share` of what
    its inline tunnels use: on a saturated shared core, the one pushing. Moving the small
    ones off would give it at most the core; only another mode gives it more, so its
    censored readings compound like a solitary tunnel's."""
    inline = mode == Mode.INLINE
    placed = inline & (core >= 0)
    size = max(ncores, int(core.max()) + 1 if core.shape[0] else 0, 1)
    where = np.where(placed, core, 0)
    total = np.bincount(core[placed], weights=cpu[placed], minlength=size)
    top = np.zeros(size)
    np.maximum.at(top, core[placed], cpu[placed])
    return np.asarray(placed & (cpu >= top[where]) & (cpu >= share * total[where])
                      & (cpu > 0))


def update_demand(
    prev: Demand | None, measured: F64, cause: U8, valid: np.ndarray, dt: float,
    probe_gain: float, decay: float, smoothing: float, grow: np.ndarray | None = None,
    ceiling: float | F64 = np.inf,
) -> Demand:
    """Fold one interval's readings into the demand estimates (mean and envelope).

    `grow` (bool per tunnel): censored tunnels for which no placement can find more room
    — an inline tunnel alone on its saturated core — so only another mode can; for them
    a censored reading compounds: the estimate grows by (1 + `probe_gain`)^2 per tick
    from the higher of the estimate and the reading, up to `ceiling` (per tunnel or one for
    all: more than any mode could give one tunnel, where the decision does not change
    above it; a whole inline core for a tunnel that shares its core). Shared cores are
    found out by moving a tunnel off them instead (placement). The probe's own step (the
    reading times 1 + `probe_gain`) is not held to the ceiling: holding it there too was
    measured (bench/hybrid.py, 2026-12-07) to cut steady-noisy-bulk's mode changes after
    the warm-up from 12 to 2 but to lose throughput there (0.908 -> 0.889 of the best
    static) and reactions elsewhere (out-of-phase: 7 -> 14 late): on overbooked inline
    cores, making the pushing tunnel vanilla is what gains throughput.

    The mean follows uncensored readings with the EWMA of half-life `smoothing`; a
    censored reading, a lower bound, raises it at once and otherwise only ages it (ten
    times `decay`: the demand may have fallen unseen). The envelope (`peak`) follows any
    reading up at once and falls with half-life `decay`."""
    censored = cause != Cap.NONE
    n = measured.shape[0]
    same = prev is not None and prev.gbps.shape == measured.shape
    known = prev.known if same and prev is not None and prev.known is not None \
        else np.full(n, np.nan)
    age = prev.known_age + dt if same and prev is not None and prev.known_age is not None \
        else np.full(n, np.inf)
    # An inline tunnel capped by its core that gets about what it got in the mode it left
    # lately (within KNOWN_MARGIN either way: vanilla tried and gave it no more) is not
    # probed again until that knowledge is KNOWN_FOR old: its demand is read as at least
    # what it got there, and the mode is not what limits it. Far more than then (its load
    # rose since), or far less (vanilla gave it more), and it is probed as usual.
    trusted = ((cause == Cap.CORE) & (age < KNOWN_FOR) & (measured * KNOWN_MARGIN >= known)
               & (known * KNOWN_MARGIN >= measured))
    if grow is not None:
        grow = grow & ~trusted
    if grow is not None and prev is not None and prev.gbps.shape == measured.shape:
        # On a saturated shared core, a tunnel whose reading jumped is the one pushing.
        grow = grow | ((cause == Cap.CORE) & (measured > RISING * np.maximum(prev.gbps, 0.05)))
    # The small tunnels of a saturated shared core are not held as lower bounds: each of
    # them probably wants little more than it got, the core is found out by moving one of
    # them off it (placement), and holding them all would overvalue inline cores ...
    probe = (censored if grow is None else censored & ((cause != Cap.CORE) | grow)) & ~trusted
    # ... but a third of the probe still: a saturated core's tunnels do want more, and the
    # assignment must see that inline cores are short.
    reading = np.where(probe, measured * (1.0 + probe_gain),
                       np.where(censored & ~trusted, measured * (1.0 + probe_gain / 3.0),
                                measured))
    reading = np.where(trusted, np.maximum(measured, known), reading)
    if prev is None or prev.gbps.shape != measured.shape:
        est = np.where(valid, reading, 0.0)
        return Demand(est, measured, censored, cause, est.copy(), known, age)
    if grow is not None:
        compound = censored & grow
        raised = np.minimum(np.maximum(prev.gbps, measured) * (1.0 + probe_gain) ** 2,
                            ceiling)
        reading = np.where(compound, np.maximum(reading, raised), reading)

    def half(h: float) -> float:
        return 1.0 - 2.0 ** (-dt / h) if h > 0 and dt > 0 else 1.0

    alpha, beta, slow = half(smoothing), half(decay), half(10.0 * decay)
    m = prev.gbps
    mean = np.where(probe, np.where(reading >= m, reading, m + slow * (reading - m)),
                    m + alpha * (reading - m))
    pk = prev.peak
    peak = np.maximum(np.where(reading >= pk, reading, pk + beta * (reading - pk)), mean)
    mean = np.where(valid, mean, m)
    peak = np.where(valid, peak, pk)
    return Demand(np.asarray(mean, dtype=np.float64), measured, censored, cause,
                  np.asarray(peak, dtype=np.float64), known, age)
