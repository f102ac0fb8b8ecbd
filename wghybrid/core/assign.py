"""Assignment: which tunnels run vanilla, and how many cores the vanilla pool gets (pure).

Stage four of a tick: sample -> rates -> estimate -> **assign** -> place -> apply.

Decided for the gateway as a whole, not per tunnel. Given each tunnel's estimated demand
(`wghybrid.core.estimate`) and each mode's learned cost, every candidate assignment is
scored by a small fluid model of the gateway:

- vanilla tunnels each carry at most `vanilla_tunnel_gbps` (their serial stages) and
  together at most what the pool's cores can do at the vanilla cost;
- inline tunnels are packed onto the other cores largest first onto the least-loaded core
  (LPT, as the placement stage will do), each core carrying at most one core's worth at
  the inline cost;

and the candidate that delivers the most throughput wins; among those delivering as much
(within `TIE`), the one that uses the least CPU. Candidates: for k = 0, 1, ..., the k
tunnels with the largest demand (among those above `promote_gbps` and free to change)
vanilla, the rest inline, each with the pool sizes that fit it; and the current
assignment. Under overload this picks all-inline (the cheaper mode delivers more per
core); with spare CPU it gives vanilla to the tunnels that want more than a core.

Hysteresis is on the objective: the current assignment is kept unless the best one
delivers more by `min_gain` of the gateway's throughput (and at least `MIN_GAIN_GBPS`),
or delivers as much on less CPU by `min_gain` of the CPU used (and at least
`MIN_SAVING_CORES`). Per-tunnel persistence (`latent_heat`) and dwell times are the
controller's.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from wghybrid.core.estimate import Costs
from wghybrid.model import F64, U8, Mode

TIE = 2e-3
"""Relative throughput difference under which two assignments deliver "as much"."""
MIN_GAIN_GBPS = 0.25
"""No reassignment for less than this throughput gain, however small the gateway."""
MIN_SAVING_CORES = 0.25
"""No reassignment for less than this CPU saving."""
LPT_ITEMS_PER_CORE = 3
"""The packing places the largest `3 * cores` inline tunnels one by one; the rest (each
smaller than any of those) fill the room left as a fluid."""
GRID = 8
"""With many candidates for vanilla, this many k values first, then around the best."""


@dataclass(frozen=True, slots=True)
class Score:
    gbps: float
    cpu: float
    """Cores."""
    pool: int


@dataclass(frozen=True, slots=True, eq=False)
class Assignment:
    vanilla: np.ndarray
    """bool per tunnel: vanilla in the chosen assignment."""
    pool: int
    """Cores for the vanilla pool."""
    chosen: Score
    current: Score
    """The current assignment, scored the same way."""
    rule: str
    """Why the chosen assignment won: "kept", "throughput", "cpu", "pool"."""
    candidates: int


def pack(w_desc: F64, cores: int) -> float:
    """Cores' worth of inline work carried when items (cores each, sorted largest first)
    go onto `cores` cores by LPT, each core carrying at most 1."""
    n = w_desc.shape[0]
    if n == 0 or cores <= 0:
        return 0.0
    if n <= cores:
        return float(np.minimum(w_desc, 1.0).sum())
    big = min(n, LPT_ITEMS_PER_CORE * cores)
    heap = [0.0] * cores
    for w in w_desc[:big].tolist():
        heapq.heapreplace(heap, heap[0] + w)
    loads = np.asarray(heap)
    rest = float(w_desc[big:].sum())
    return float(np.minimum(loads, 1.0).sum()) + min(rest, float(np.maximum(1.0 - loads,
                                                                             0.0).sum()))


class Model:
    """The fluid model of one gateway for one tick: demands, costs, cores."""

    def __init__(self, demand: F64, costs: Costs, ncores: int, *, pool_headroom: float = 0.15,
                 core_fill: float = 0.9) -> None:
        self.demand = np.maximum(demand, 0.0)
        self.costs = costs
        self.ncores = ncores
        self.pool_util = 1.0 - pool_headroom
        """Fraction of the pool's cores vanilla work may fill (the rest: headroom for
        bursts and for the Reception stages' imbalance)."""
        self.core_fill = core_fill
        """Fraction of a core inline tunnels fill when counting the cores they need."""
        self.order = np.argsort(-self.demand, kind="stable")
        self.sorted_w = self.demand[self.order] * costs.inline

    def inline_need(self, vanilla: np.ndarray) -> float:
        return float(self.sorted_w[~vanilla[self.order]].sum())

    def vanilla_gbps(self, vanilla: np.ndarray) -> float:
        return float(np.minimum(self.demand[vanilla], self.costs.vanilla_tunnel_gbps).sum())

    def score(self, vanilla: np.ndarray, pool: int) -> Score:
        c = self.costs
        s_v = self.vanilla_gbps(vanilla)
        got_v = min(s_v, c.vanilla_capacity(pool * self.pool_util)) if pool > 0 else 0.0
        w = self.sorted_w[~vanilla[self.order]]
        got_i = pack(w, self.ncores - pool) / c.inline
        return Score(got_v + got_i, got_v * c.vanilla_cost(got_v) + got_i * c.inline, pool)

    def pools(self, vanilla: np.ndarray, minimum: int, current: int) -> list[int]:
        """Pool sizes worth scoring for this vanilla set."""
        nv = int(vanilla.sum())
        if nv == 0:
            return [0]
        n_in = vanilla.shape[0] - nv
        lo = max(1, min(minimum, self.ncores - (1 if n_in else 0)))
        hi = self.ncores - (1 if n_in else 0)
        if hi < lo:
            return [max(1, hi)]
        s_v = self.vanilla_gbps(vanilla)
        need = math.ceil(s_v * self.costs.vanilla_cost(s_v) / self.pool_util - 1e-9)
        fit = math.ceil(self.inline_need(vanilla) / self.core_fill - 1e-9)
        want = {need, need + 1, self.ncores - fit, self.ncores - fit - 1, current}
        return sorted({min(max(p, lo), hi) for p in want})

    def best_pool(self, vanilla: np.ndarray, minimum: int, current: int) -> Score:
        best: Score | None = None
        for p in self.pools(vanilla, minimum, current):
            s = self.score(vanilla, p)
            if best is None or _better(s, best, current):
                best = s
        assert best is not None
        return best


def _better(a: Score, b: Score, current_pool: int) -> bool:
    """a beats b: more throughput; as much on less CPU; as much on the current pool."""
    scale = max(a.gbps, b.gbps, 1e-9)
    d = (a.gbps - b.gbps) / scale
    if d > TIE:
        return True
    if d < -TIE:
        return False
    if a.cpu < b.cpu * (1.0 - TIE):
        return True
    if a.cpu > b.cpu * (1.0 + TIE):
        return False
    return abs(a.pool - current_pool) < abs(b.pool - current_pool)


def assign(
    demand: F64, mode: U8, free: np.ndarray, costs: Costs, ncores: int, current_pool: int,
    *, promote_gbps: float, demote_gbps: float, pool_min: int, min_gain: float,
    pool_headroom: float = 0.15, core_fill: float = 0.9,
) -> Assignment:
    """The assignment to aim for. `free`: tunnels whose mode may change now (managed, not
    pinned, past their dwell); the others keep `mode` (pins already applied to it)."""
    model = Model(demand, costs, ncores, pool_headroom=pool_headroom, core_fill=core_fill)
    cur_v = mode == Mode.VANILLA
    cur_pool = min(current_pool, ncores - (1 if (~cur_v).any() else 0)) if cur_v.any() else 0
    current = model.score(cur_v, cur_pool) if cur_v.any() else model.score(cur_v, 0)
    # Above the promote level a tunnel may be given vanilla; a vanilla tunnel below the
    # demote level goes inline whatever the objective says (the operator's floor, below).
    # Between the two, a vanilla tunnel stays vanilla only in the current assignment.
    base_v = cur_v & ~free
    cand = np.flatnonzero(free & (demand > promote_gbps))
    cand = cand[np.argsort(-demand[cand], kind="stable")]
    count = 0

    def mask(k: int) -> np.ndarray:
        v = base_v.copy()
        v[cand[:k]] = True
        return v

    scored: dict[int, Score] = {}

    def try_k(k: int) -> None:
        nonlocal count
        if k in scored or not 0 <= k <= cand.size:
            return
        scored[k] = model.best_pool(mask(k), pool_min, cur_pool)
        count += 1

    if cand.size <= 2 * GRID:
        for k in range(cand.size + 1):
            try_k(k)
    else:
        for k in np.linspace(0, cand.size, GRID).round().astype(int).tolist():
            try_k(k)
        try_k(int((cur_v[cand]).sum()))
        try_k(int((demand[cand] > costs.inline_tunnel_gbps).sum()))
        for _ in range(2):
            k_best = _argbest(scored, cur_pool)
            for dk in (-3, -2, -1, 1, 2, 3):
                try_k(k_best + dk)
    k_best = _argbest(scored, cur_pool)
    best_v, best = mask(k_best), scored[k_best]
    # The current assignment, with its best pool, competes too (it may not be "top k").
    same = model.best_pool(cur_v, pool_min, cur_pool) if cur_v.any() else current
    count += 1
    if _better(same, best, cur_pool) or np.array_equal(best_v, cur_v):
        best_v, best = cur_v, same
    gain = best.gbps - current.gbps
    saving = current.cpu - best.cpu
    if np.array_equal(best_v, cur_v):
        if best.pool != cur_pool and gain > max(MIN_GAIN_GBPS, min_gain * current.gbps):
            return Assignment(cur_v, best.pool, best, current, "pool", count)
        return Assignment(cur_v, _keep_pool(cur_v, cur_pool, pool_min, ncores), current,
                          current, "kept", count)
    if gain > max(MIN_GAIN_GBPS, min_gain * current.gbps):
        return Assignment(best_v, best.pool, best, current, "throughput", count)
    if gain > -TIE * current.gbps and saving > max(MIN_SAVING_CORES, min_gain * current.cpu):
        return Assignment(best_v, best.pool, best, current, "cpu", count)
    # Keep the assignment, but the operator's demote floor still applies.
    low = cur_v & free & (demand < demote_gbps)
    if low.any():
        v = cur_v & ~low
        s = model.best_pool(v, pool_min, cur_pool) if v.any() else model.score(v, 0)
        return Assignment(v, s.pool, s, current, "floor", count)
    return Assignment(cur_v, _keep_pool(cur_v, cur_pool, pool_min, ncores), current, current,
                      "kept", count)


def _keep_pool(vanilla: np.ndarray, pool: int, minimum: int, ncores: int) -> int:
    if not vanilla.any():
        return 0
    return max(min(max(pool, minimum, 1), ncores - (0 if vanilla.all() else 1)), 1)


def _argbest(scored: dict[int, Score], current_pool: int) -> int:
    best_k = -1
    for k in sorted(scored):
        if best_k < 0 or _better(scored[k], scored[best_k], current_pool):
            best_k = k
    return best_k
