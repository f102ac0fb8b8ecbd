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
LPT_ITEMS_PER_CORE = 2
"""The packing places the largest `2 * cores` inline tunnels one by one; the rest (each
smaller than any of those, so at most half a core when the head fits) fill the room left
as a fluid."""
SHARED_INLINE = 0.1
"""Cores: inline tunnels needing less than this in all may run on the pool's cores."""
GRID = 8
"""With many candidates for vanilla, this many k values first, then around the best."""


def stable_head(x: F64, k: int) -> np.ndarray | None:
    """Exactly the first k (>= 1) of np.argsort(x, kind="stable"), without sorting all of
    `x`: the values below the k-th smallest, then the first of those equal to it, in row
    order. None where that saves nothing (k over a quarter of `x`) or the k-th is nan."""
    if 4 * k >= x.shape[0]:
        return None
    kth = np.partition(x, k - 1)[k - 1]
    if np.isnan(kth):
        return None
    less = np.flatnonzero(x < kth)
    ties = np.flatnonzero(x == kth)[:k - less.shape[0]]
    head = np.sort(np.concatenate([less, ties]))
    return head[np.argsort(x[head], kind="stable")]


@dataclass(frozen=True, slots=True)
class Score:
    gbps: float
    cpu: float
    """Cores."""
    pool: int
    room: bool = True
    """The inline cores hold the inline tunnels' envelope demand (their peaks)."""


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


def pack(w_desc: F64, cores: int, rest: float | None = None) -> float:
    """Cores' worth of inline work carried when items (cores each, sorted largest first)
    go onto `cores` cores by LPT, each core carrying at most 1. `rest`: the total of
    further items, each smaller than these, that fill the room left as a fluid (None:
    the items beyond the first 3 per core are that rest)."""
    n = w_desc.shape[0]
    if cores <= 0 or (n == 0 and not rest):
        return 0.0
    if rest is None:
        big = min(n, LPT_ITEMS_PER_CORE * cores)
        rest = float(w_desc[big:].sum())
        w_desc = w_desc[:big]
        n = big
    if n <= cores and rest <= 0:
        return float(np.minimum(w_desc, 1.0).sum())
    heap = [0.0] * cores
    for w in w_desc.tolist():
        heapq.heapreplace(heap, heap[0] + w)
    loads = np.asarray(heap)
    return float(np.minimum(loads, 1.0).sum()) + min(rest, float(np.maximum(1.0 - loads,
                                                                             0.0).sum()))


@dataclass(frozen=True, slots=True)
class _View:
    """One vanilla set, reduced to what scoring it needs (independent of the pool)."""

    nv: int
    n_inline: int
    peak_need: float
    """The inline tunnels' envelope demand, cores (each at most one core)."""
    s_v: float
    """Gbps the vanilla tunnels can carry (each up to the vanilla ceiling)."""
    head: F64
    """The largest inline items (cores), sorted, at most LPT_ITEMS_PER_CORE per core."""
    rest: float
    """The other inline items' total (cores)."""

    @property
    def inline_total(self) -> float:
        return float(self.head.sum()) + self.rest


class Model:
    """The fluid model of one gateway for one tick: demands, costs, cores.

    Vanilla sets are given as row indices; everything per set costs O(set + cores), not
    O(tunnels), so that many candidates can be scored at 100,000 tunnels."""

    def __init__(self, demand: F64, costs: Costs, ncores: int, *, pool_headroom: float = 0.15,
                 core_fill: float = 0.9, peak: F64 | None = None) -> None:
        self.demand = np.maximum(demand, 0.0)
        self.costs = costs
        self.ncores = ncores
        self.pool_util = 1.0 - pool_headroom
        """Fraction of the pool's cores vanilla work may fill (the rest: headroom for
        bursts and for the Reception stages' imbalance)."""
        self.core_fill = core_fill
        """Fraction of a core inline tunnels fill when counting the cores they need."""
        self.w = self.demand * costs.inline
        self.total_w = float(self.w.sum())
        # The tunnels by demand, largest first (ties: in row order), as far as scoring
        # has looked: a view needs the first LPT_ITEMS_PER_CORE * cores + |vanilla set|
        # only, and sorting every tunnel was most of a tick at 100,000 tunnels.
        self.order = np.zeros(0, dtype=np.intp)
        """The first `order.shape[0]` rows of a stable argsort of -demand."""
        self.rank = np.zeros(0, dtype=np.intp)
        """Per row, its position in that order (`order.shape[0]` beyond the known ones)."""
        self.sorted_w = np.zeros(0)
        self._rank_head(min(self.demand.shape[0], 4 * LPT_ITEMS_PER_CORE * ncores))
        self.v_cap = np.minimum(self.demand, costs.vanilla_tunnel_gbps)
        self.peak_w = (np.minimum(np.maximum(peak, self.demand) * costs.inline, 1.0)
                       if peak is not None else np.minimum(self.w, 1.0))
        self.total_peak_w = float(self.peak_w.sum())

    def _rank_head(self, k: int) -> None:
        """Know the order of the `k` largest demands (at least)."""
        n = self.demand.shape[0]
        k = min(max(k, 1), n)
        if n == 0 or self.order.shape[0] >= k:
            return
        neg = -self.demand
        order = stable_head(neg, k)
        if order is None:
            order = np.argsort(neg, kind="stable")
        self.order = order
        self.rank = np.full(n, order.shape[0], dtype=np.intp)
        self.rank[order] = np.arange(order.shape[0])
        self.sorted_w = self.w[order]

    def view(self, vidx: np.ndarray) -> _View:
        n = self.demand.shape[0]
        nv = int(vidx.shape[0])
        span = LPT_ITEMS_PER_CORE * self.ncores
        width = min(n, span + nv)
        if width > self.order.shape[0]:
            self._rank_head(max(width, 2 * self.order.shape[0]))
        head_pos = np.arange(width)
        if nv:
            taken = np.zeros(width, dtype=bool)
            r = self.rank[vidx]
            taken[r[r < width]] = True
            head_pos = head_pos[~taken]
        head = self.sorted_w[head_pos[:span]]
        rest = self.total_w - float(self.w[vidx].sum()) - float(head.sum())
        peak_need = self.total_peak_w - float(self.peak_w[vidx].sum())
        return _View(nv, n - nv, peak_need, float(self.v_cap[vidx].sum()), head,
                     max(rest, 0.0))

    def score_view(self, v: _View, pool: int) -> Score:
        c = self.costs
        if pool >= self.ncores and v.n_inline:
            # A shared pool (the inline tunnels are too light to need cores of their own):
            # inline work runs first (softirq), the crypt workers get the rest.
            got_i = min(v.inline_total, float(self.ncores)) / c.inline
            room = max(self.ncores - got_i * c.inline, 0.0)
            got_v = min(v.s_v, c.vanilla_capacity(room * self.pool_util / c.pool_share))
        else:
            got_v = (min(v.s_v, c.vanilla_capacity(pool * self.pool_util / c.pool_share))
                     if pool > 0 and v.nv else 0.0)
            got_i = pack(v.head, self.ncores - pool, v.rest) / c.inline if v.n_inline else 0.0
        room = pool >= self.ncores or v.peak_need <= (self.ncores - pool) * self.core_fill
        return Score(got_v + got_i, got_v * c.vanilla_cost(got_v) + got_i * c.inline, pool,
                     room)

    def pools_view(self, v: _View, minimum: int, current: int) -> list[int]:
        """Pool sizes worth scoring for this vanilla set."""
        if v.nv == 0:
            return [0]
        # Inline tunnels needing under SHARED_INLINE of a core in all may share the pool's
        # cores; otherwise they get at least one core of their own.
        shared = v.n_inline and v.inline_total < SHARED_INLINE
        own = 1 if v.n_inline and not shared else 0
        lo = max(1, min(minimum, self.ncores - own))
        hi = self.ncores - own
        if hi < lo:
            return [max(1, hi)]
        need = math.ceil(v.s_v * self.costs.vanilla_cost(v.s_v) * self.costs.pool_share
                         / self.pool_util - 1e-9)
        fit = math.ceil(max(v.inline_total, v.peak_need) / self.core_fill - 1e-9)
        want = {need, need + 1, self.ncores - fit, self.ncores - fit - 1, current}
        return sorted({min(max(p, lo), hi) for p in want})

    def best_pool_idx(self, vidx: np.ndarray, minimum: int, current: int) -> Score:
        v = self.view(vidx)
        best: Score | None = None
        for p in self.pools_view(v, minimum, current):
            s = self.score_view(v, p)
            if best is None or _better(s, best, current):
                best = s
        assert best is not None
        return best

    # Masks, for callers that have them.
    def score(self, vanilla: np.ndarray, pool: int) -> Score:
        return self.score_view(self.view(np.flatnonzero(vanilla)), pool)

    def best_pool(self, vanilla: np.ndarray, minimum: int, current: int) -> Score:
        return self.best_pool_idx(np.flatnonzero(vanilla), minimum, current)

    def inline_need(self, vanilla: np.ndarray) -> float:
        return self.view(np.flatnonzero(vanilla)).inline_total

    def vanilla_gbps(self, vanilla: np.ndarray) -> float:
        return float(self.v_cap[vanilla].sum())


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
    if a.room != b.room:
        return a.room  # as much now, and room for the peaks: fewer cores short later
    return abs(a.pool - current_pool) < abs(b.pool - current_pool)


def assign(
    demand: F64, mode: U8, free: np.ndarray, costs: Costs, ncores: int, current_pool: int,
    *, promote_gbps: float, demote_gbps: float, pool_min: int, min_gain: float,
    pool_headroom: float = 0.15, core_fill: float = 0.9, peak: F64 | None = None,
) -> Assignment:
    """The assignment to aim for. `free`: tunnels whose mode may change now (managed, not
    pinned, past their dwell); the others keep `mode` (pins already applied to it)."""
    model = Model(demand, costs, ncores, pool_headroom=pool_headroom, core_fill=core_fill,
                  peak=peak)
    cur_v = mode == Mode.VANILLA
    cur_pool = min(current_pool, ncores) if cur_v.any() else 0
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

    base_idx = np.flatnonzero(base_v)
    scored: dict[int, Score] = {}

    def try_k(k: int) -> None:
        nonlocal count
        if k in scored or not 0 <= k <= cand.size:
            return
        scored[k] = model.best_pool_idx(np.concatenate([base_idx, cand[:k]]), pool_min,
                                        cur_pool)
        count += 1

    if cand.size <= 2 * GRID:
        for k in range(cand.size + 1):
            try_k(k)
    else:
        for k in np.linspace(0, cand.size, GRID).round().astype(int).tolist():
            try_k(k)
        try_k(int((cur_v[cand]).sum()))
        try_k(int((demand[cand] > costs.inline_tunnel_gbps).sum()))
        k_best = _argbest(scored, cur_pool)
        step = max(1, cand.size // (GRID - 1))
        for dk in sorted({-step // 2, -2, -1, 1, 2, step // 2} - {0}):
            try_k(k_best + dk)
        k_best = _argbest(scored, cur_pool)
        for dk in (-1, 1):
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
    kept = bool(np.array_equal(best_v, cur_v))
    if not kept and gain > max(MIN_GAIN_GBPS, min_gain * current.gbps):
        return Assignment(best_v, best.pool, best, current, "throughput", count)
    if not kept and gain > -TIE * current.gbps \
            and saving > max(MIN_SAVING_CORES, min_gain * current.cpu):
        return Assignment(best_v, best.pool, best, current, "cpu", count)
    # The modes are kept, but the operator's demote floor applies whatever the search
    # found: also when its best is the current assignment (an idle tunnel left vanilla by
    # an override stayed vanilla for good when this came after that case's return).
    low = cur_v & free & (demand < demote_gbps)
    if low.any():
        v = cur_v & ~low
        s = model.best_pool(v, pool_min, cur_pool) if v.any() else model.score(v, 0)
        return Assignment(v, s.pool, s, current, "floor", count)
    if kept and best.pool != cur_pool and gain > max(MIN_GAIN_GBPS, min_gain * current.gbps):
        return Assignment(cur_v, best.pool, best, current, "pool", count)
    return Assignment(cur_v, _keep_pool(cur_v, cur_pool, pool_min, ncores), current, current,
                      "kept", count)


def _keep_pool(vanilla: np.ndarray, pool: int, minimum: int, ncores: int) -> int:
    if not vanilla.any():
        return 0
    return max(min(max(pool, minimum, 1), ncores), 1)


def _argbest(scored: dict[int, Score], current_pool: int) -> int:
    best_k = -1
    for k in sorted(scored):
        if best_k < 0 or _better(scored[k], scored[best_k], current_pool):
            best_k = k
    return best_k
