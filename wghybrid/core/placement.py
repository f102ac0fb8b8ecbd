"""Planning: modes and cores -> a list of typed operations (pure, vectorised).

Stage five of a tick: sample -> rates -> estimate -> assign -> **place** -> apply.

Takes plain data (`PlanInput`: what the data plane reports, what each peer wants, what
each peer costs) and returns a `Plan`. It performs no I/O, keeps no state of its own, and
an unchanged situation yields an empty plan; applying a plan and planning again on the
result yields nothing.

Layout of a gateway's managed cores:
- the *vanilla pool*: the cores the crypt workers of every device may run on, sized to
  the vanilla tunnels' CPU demand with hysteresis (grow above (1-headroom) of its size,
  shrink only when the demand fits a pool one core smaller with twice the headroom);
- the *inline cores*: every other managed core. Inline tunnels are placed one per core
  where possible, by measured load (least-loaded core first, largest tunnel first), so
  that they share a core neither with each other nor with crypt work while there are
  cores enough; vanilla tunnels' serial (TX) work is spread over the pool.

A tunnel changes core only when the move cuts the load gap between the hottest and the
coldest inline core by `migrate_improvement` of it (irqbalance's migrateval idea). Mode
changes and core moves together are bounded by `max_moves` per tick; operator pins come
first and device settings (pool, threaded NAPI) are not counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from wghybrid.core.assign import stable_head
from wghybrid.model import (
    F64,
    I32,
    KEY_LEN,
    U8,
    Keys,
    Mode,
    Operation,
    Plan,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    raw_key,
)
from wghybrid.policy import NapiPolicy, Placement

MIN_LOAD = 0.01
"""Every inline tunnel weighs at least this much (cores), so idle tunnels still spread
one per core instead of piling onto the first empty one."""

MIN_GAP = 0.05
"""A load gap (cores) below this is noise: no rebalancing move for it."""

MOVE_GAIN = 0.1
"""A move off a short core must let the two cores carry this much more (cores)."""

SHORT_MARGIN = 0.15
"""A core is short (relieved) when its tunnels' typical loads exceed a whole core by more
than this fraction: a saturated core's tunnels are censored, and the estimate reads each
of them at least a tenth above what it gets (core/estimate.py, a third of the probe
gain), so a saturated core reads about 1.1 cores whatever its tunnels really want: it is
only known to be full, not short. Judged against the placement's `core_capacity`
instead, its "relief" moved a mouse per tick between cores that were all full (shipped
mixed: 54 core moves in 480 s of steady load, each from a core reading 1.04-1.12 to one
reading 0.8 whose own envelope was already at a whole core)."""

COLDS = 4
"""Cold cores a short core's tunnels are offered to, the least loaded first."""

SPREAD_GAP = 0.35
"""Inline cores whose estimated loads differ by more than this (cores) are evened out,
short or not: what noise does to a placement spread by load stays well under it, what a
change of the inline cores leaves behind (tunnels packed onto the cores that were inline
while the pool was larger) does not."""


def _move(i: int, hot: int, cold: int, core_load: F64, load: F64, new_core: I32,
          touched: np.ndarray, budget: int) -> int:
    """Move tunnel i from core `hot` to `cold`; a tunnel's first move costs one budget."""
    core_load[hot] -= load[i]
    core_load[cold] += load[i]
    new_core[i] = cold
    if not touched[i]:
        budget -= 1
        touched[i] = True
    return budget


def _spread(
    core_load: F64, cores: np.ndarray, movable: np.ndarray, load: F64, new_core: I32,
    touched: np.ndarray, budget: int, limit: float, typical: F64 | None = None,
    typ_core: F64 | None = None,
) -> int:
    """Move tunnels from the most to the least loaded core while they differ by more than
    SPREAD_GAP and a move narrows the gap without making the least loaded core short (over
    `limit`: that is `_rebalance`'s to relieve, and the next tick would undo the move).
    Loads compared are the typical ones (`typical`, `typ_core`: the mean demand, as in
    `_rebalance`), the landing is checked on the envelope (`load`, `core_load`): envelopes
    move with noise (every tunnel's peak follows its highest recent reading), and the
    gap between the highest and lowest sum of them crossed SPREAD_GAP every few ticks.
    Updates the arrays in place; returns the budget left."""
    if typical is None or typ_core is None:
        typical, typ_core = load, core_load.copy()
    while budget > 0 and cores.size > 1:
        loads = typ_core[cores]
        hot, cold = int(cores[np.argmax(loads)]), int(cores[np.argmin(loads)])
        gap = typ_core[hot] - typ_core[cold]
        if gap <= SPREAD_GAP:
            break
        on_hot = np.flatnonzero(movable & (new_core == hot))
        if on_hot.size < 2:
            break
        w = typical[on_hot]
        after = np.abs((typ_core[hot] - w) - (typ_core[cold] + w))
        after[core_load[cold] + load[on_hot] > limit] = np.inf
        k = int(np.argmin(after))
        if after[k] > gap - MOVE_GAIN:
            break  # a move must even the cores out by a tenth of a core: no mice shuffled
        i = int(on_hot[k])
        typ_core[hot] -= typical[i]
        typ_core[cold] += typical[i]
        budget = _move(i, hot, cold, core_load, load, new_core, touched, budget)
    return budget


@dataclass(frozen=True, slots=True, eq=False)
class PlanInput:
    """Everything the planner looks at, as plain arrays (one row per peer)."""

    now: float
    ifnames: tuple[str, ...]
    iface: I32
    key: Keys
    mode: U8
    """Observed mode."""
    core: I32
    """Observed core (-1: the data plane's default)."""
    want: U8
    """Mode the classifier wants (ignored where pinned or unmanaged)."""
    eligible: np.ndarray
    """bool: the peer has dwelt long enough in its mode to change automatically."""
    urgency: F64
    """Order of automatic mode changes when the budget is short (larger first)."""
    pin_mode: np.ndarray
    """int8: -1, or the Mode an operator pinned."""
    pin_core: I32
    """-1, or the core an operator pinned."""
    managed: np.ndarray
    """bool: False for peers marked unmanaged (a permanent error): left alone."""
    load_inline: F64
    """Cores the peer uses (or would use) running inline."""
    load_vanilla: F64
    """Cores the peer uses (or would use) running vanilla, crypt work included."""
    cores: tuple[int, ...]
    """Managed cores, sorted."""
    crypt_cores: tuple[frozenset[int], ...]
    """Observed crypt pool per interface (same order as ifnames)."""
    threaded_napi: tuple[bool, ...]
    """Observed threaded-NAPI flag per interface."""
    pool: frozenset[int] | None
    """The pool decided last tick (None: none yet; derived from observation)."""
    core_busy: F64 = field(default_factory=lambda: np.zeros(0))
    """Measured busy fraction per core (empty: not measured yet). A pool whose cores are
    busier than its tunnels' own CPU says is short: vanilla tunnels' counters only show
    what they got, not what they wanted."""
    measured: bool = True
    """False on a baseline reading (no rates yet): only operator pins are carried out."""
    saturated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """Per core, whether it is saturated now (measured). When given, a core is relieved
    only while it is saturated: an estimate alone does not move tunnels. Empty: not
    measured, the estimate decides."""
    settled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """bool per peer: it may be moved to relieve a short core (empty: every peer). A peer
    that moved recently is not moved again for that: moves under noise would chain."""
    load_typical: F64 = field(default_factory=lambda: np.zeros(0))
    """Cores the peer usually uses running inline (its mean demand; `load_inline` is its
    envelope). Empty: the same as `load_inline`. A short core is relieved only when the
    typical loads of its tunnels overload it (see `_rebalance`)."""
    pool_size: int | None = None
    """The pool size decided by the assignment stage (None: sized here from
    `load_vanilla` with the grow/shrink hysteresis of `size_pool`)."""


@dataclass(frozen=True, slots=True, eq=False)
class PlanOutput:
    plan: Plan
    pool: frozenset[int]
    mode: U8
    """Mode of every peer once the plan is applied."""
    core: I32
    """Core of every peer once the plan is applied."""
    rows: tuple[int, ...] = ()
    """For each operation of `plan`, the peer row it is about (-1: a device setting)."""
    spread: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    """bool per peer: moved by evening out (`_spread`), not to relieve its core."""


def size_pool(demand: float, current: int, minimum: int, headroom: float) -> int:
    """Cores the vanilla pool needs for `demand` cores of crypt work, with hysteresis."""
    if demand <= 0 and current == 0:
        return minimum
    needed = max(minimum, math.ceil(demand / max(1.0 - headroom, 0.05)))
    if current < minimum or demand > (1.0 - headroom) * current:
        return max(needed, current if current >= minimum else minimum)
    if current - 1 >= minimum and demand < (1.0 - 2.0 * headroom) * (current - 1):
        return needed
    return current


def _choose_pool(
    prev: frozenset[int], size: int, cores: tuple[int, ...], inline_load: F64
) -> frozenset[int]:
    """Resize the pool, keeping the cores it has: grow onto the least inline-loaded cores
    (highest number first on ties), shrink from the lowest-numbered."""
    pool = sorted(c for c in prev if c in cores)
    if len(pool) > size:
        return frozenset(sorted(pool)[len(pool) - size:])
    rest = [c for c in cores if c not in pool]
    rest.sort(key=lambda c: (inline_load[c], -c))
    return frozenset(pool + rest[: size - len(pool)])


EVACUATE_SHARE = 0.75
"""A saturated core's largest tunnel using at least this much of it (typical load), with
the others together under `SHORT_MARGIN`, is the one pushing: the others are moved off."""


def _evacuate(hot: int, cores: np.ndarray, movable: np.ndarray, new_core: I32, typical: F64,
              typ_core: F64, core_load: F64, load: F64, limit: float,
              budget: int) -> list[tuple[int, int]]:
    """Moves that leave the largest tunnel of a saturated core alone on it: the others
    (small: together under SHORT_MARGIN of a core, so the core reads full, never short,
    and no single move gains MOVE_GAIN) each to the least loaded inline core they fit on
    (typical and envelope within `limit`). None unless all of them are movable and fit
    within the budget. Alone, a capped tunnel's estimate compounds (estimate.py): if it
    wants more than a core, the assignment can give it vanilla; while it shares the core,
    it reads as one core's worth and no stage finds out more."""
    on = np.flatnonzero(new_core == hot)
    if on.size < 2:
        return []
    big = int(on[np.argmax(typical[on])])
    others = on[on != big]
    if typical[big] < EVACUATE_SHARE or float(typical[others].sum()) > SHORT_MARGIN \
            or not movable[others].all() or others.size > budget:
        return []
    t_core, e_core = typ_core.copy(), core_load.copy()
    colds = cores[cores != hot]
    moves: list[tuple[int, int]] = []
    for i in others[np.argsort(-typical[others], kind="stable")].tolist():
        fits = colds[(t_core[colds] + typical[i] <= limit) & (e_core[colds] + load[i] <= limit)]
        if fits.size == 0:
            return []
        to = int(fits[np.argmin(e_core[fits])])
        t_core[to] += typical[i]
        e_core[to] += load[i]
        moves.append((i, to))
    return moves


def _rebalance(
    core_load: F64, cores: np.ndarray, movable: np.ndarray, load: F64, new_core: I32,
    touched: np.ndarray, budget: int, params: Placement, limit: float = 1.0,
    saturated: np.ndarray | None = None, typical: F64 | None = None,
    typ_core: F64 | None = None,
) -> int:
    """Relieve short cores: while the budget lasts, take the hottest core that carries
    more than `limit` (its tunnels lose traffic) with two movable tunnels or more (and,
    when `saturated` is given, that is measured saturated), and make the one move of one
    of its tunnels to one of the least-loaded cores that most increases what the two
    cores carry, sum(min(load, limit)); stop when no move gains `MOVE_GAIN` of a core
    and `migrate_improvement` of the hot core's excess. A move that fills the cold core
    past `limit` is refused: it only moves the shortness (shipped
    crowded-cores: the smaller tunnel of a saturated pair, moved onto a core with one
    tunnel, made a new saturated pair there, whose larger tunnel then read as wanting
    the whole core, and so on: 49 moves in 270 s for nothing; swapping the larger one with
    a smaller one elsewhere did the same, 62 moves). An imbalance between
    cores that are not short costs nothing, so it moves nothing: with noisy loads,
    moving for balance alone is churn.

    `typical` (per tunnel, default `load`; `typ_core` its sum per core, kept in step) is
    the load a tunnel usually has (its mean demand) where `load` is what it may reach
    (its envelope): shortness and gains are judged on the typical load, what a move is
    expected to deliver; the cold cores are chosen on the envelope. A core that noise
    saturates now and then, its tunnels' peaks over the limit but their means under it,
    loses little and nothing a move would win back for long: under +-30 % noise, peaks
    always add up over the limit somewhere, and relieving them was a core move every few
    seconds.

    With `typical` given (inline cores), a core that is only *full* (saturated, over
    `limit` but not short) is not relieved onto cores holding tunnels, but: while an
    inline core is empty (no tunnel at all), one of its tunnels may move there, past
    `limit` (a tunnel alone has all inline can give it: nothing is passed on), for
    the same gain; and a core whose largest tunnel holds most of it beside small ones is
    left to that tunnel (`_evacuate`). Both leave a capped tunnel alone on a core, where
    its estimate can compound and show whether it wants more than a core.
    Updates `core_load`, `new_core` and `touched` in place; returns the budget left."""
    ncores = core_load.shape[0]
    short_at = limit
    if typical is None or typ_core is None:
        typical, typ_core = load, core_load.copy()
    else:
        short_at = max(limit, 1.0) * (1.0 + SHORT_MARGIN)
    isolate = short_at > limit  # inline cores, judged on typical loads
    while budget > 0 and cores.size > 1:
        count = np.bincount(np.clip(new_core[movable], 0, ncores - 1), minlength=ncores)
        full = (count[cores] >= 2) & (typ_core[cores] > limit)
        if saturated is not None and saturated.shape[0] >= ncores:
            full &= saturated[cores]
        short = full & (typ_core[cores] > short_at)
        # An empty core beside a saturated shared one is wasted: a core only full (its
        # censored tunnels read about a core in all, not short by SHORT_MARGIN) gives
        # one of its tunnels to an empty core. Alone there, a tunnel has all that inline
        # can give it, and if still capped its estimate compounds (estimate.py) and the
        # assignment can give it vanilla: a capped tunnel sharing a saturated core with
        # mice read as one core's worth, the core as "full", and it stayed capped for
        # the whole high half of an out-of-phase swing.
        empty = core_load < MIN_LOAD / 2
        spare = bool(isolate and empty[cores].any())
        if not (short.any() or (isolate and full.any())):
            break
        moves: list[tuple[int, int]] = []  # (tunnel, to core)
        hots = full if isolate else short
        for hot in cores[hots][np.argsort(-core_load[cores][hots], kind="stable")].tolist():
            on_hot = np.flatnonzero(movable & (new_core == hot))
            colds = cores[cores != hot]
            if typ_core[hot] <= short_at:
                colds = colds[empty[colds]] if spare else colds[:0]  # full: only onto empty
            colds = colds[np.argsort(core_load[colds], kind="stable")[:COLDS]]
            excess = typ_core[hot] - limit
            need = max(MOVE_GAIN, params.migrate_improvement * excess)
            if colds.size == 0:
                moves = _evacuate(hot, cores, movable, new_core, typical, typ_core,
                                  core_load, load, limit, budget)
                if moves:
                    break
                continue
            t_hot, t_cold = typ_core[hot], typ_core[colds]
            w = typical[on_hot][:, None]
            gain = (np.minimum(t_hot - w, limit) + np.minimum(t_cold[None, :] + w, limit)
                    - min(t_hot, limit) - np.minimum(t_cold, limit)[None, :])
            # Filling the cold core past the limit only moves the shortness, unless the
            # cold core is empty: the tunnel then has the core to itself.
            landing_ok = empty[colds] if isolate else np.zeros(colds.size, dtype=bool)
            gain[(t_cold[None, :] + w > limit) & ~landing_ok[None, :]] = -np.inf
            k = int(np.argmax(gain))
            if float(gain.flat[k]) >= need:
                moves = [(int(on_hot[k // colds.size]), int(colds[k % colds.size]))]
                break
            if isolate:
                moves = _evacuate(hot, cores, movable, new_core, typical, typ_core, core_load,
                                  load, limit, budget)
                if moves:
                    break
        if not moves:
            break
        for i, to in moves:
            src = int(new_core[i])
            typ_core[src] -= typical[i]
            typ_core[to] += typical[i]
            budget = _move(i, src, to, core_load, load, new_core, touched, budget)
    return budget


_MODE_OF = {int(m): m for m in Mode}
_INLINE = int(Mode.INLINE)


def _raw_keys(key: Keys, rows: np.ndarray) -> list[bytes]:
    """`raw_key` of each of `rows`' keys."""
    picked = key[rows]
    if picked.dtype.kind == "S" and picked.dtype.itemsize == KEY_LEN:
        return list(np.ascontiguousarray(picked).view(f"V{KEY_LEN}").ravel().tolist())
    return [raw_key(k) for k in picked]


def _first_stable(x: F64, k: int) -> np.ndarray:
    """np.argsort(x, kind="stable")[:k], without sorting all of `x` when k is small."""
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    head = stable_head(x, k)
    return head if head is not None else np.argsort(x, kind="stable")[:k]


def _on(core: np.ndarray, cores: frozenset[int]) -> np.ndarray:
    """bool per row: its core is one of `cores` (np.isin's answer, by a table lookup)."""
    if not cores:
        return np.zeros(core.shape[0], dtype=bool)
    if min(cores) < 0:  # not a core number; np.isin would still match it
        return np.isin(core, list(cores))
    member = np.zeros(max(cores) + 1, dtype=bool)
    member[list(cores)] = True
    inside = (core >= 0) & (core < member.shape[0])
    return inside & member[np.where(inside, core, 0)]


def plan_operations(inp: PlanInput, params: Placement) -> PlanOutput:
    n = inp.key.shape[0]
    ncores = (max(inp.cores) + 1) if inp.cores else 1
    ncores = max(ncores, int(inp.core.max()) + 1 if n else 0)
    ops_first: list[Operation] = []  # operator pins
    budget = params.max_moves
    managed = inp.managed

    # -- 1. modes ---------------------------------------------------------------
    target = inp.mode.copy()
    pinned = managed & (inp.pin_mode >= 0)
    target[pinned] = inp.pin_mode[pinned].astype(np.uint8)
    auto = managed & ~pinned & inp.eligible & (inp.want != inp.mode) & inp.measured
    cand = np.flatnonzero(auto)
    if cand.size > budget:
        # Budget short: the most urgent first, the rest next tick.
        if budget > 0:
            cand = cand[np.argpartition(-inp.urgency[cand], budget - 1)[:budget]]
        else:
            cand = cand[:0]
    target[cand] = inp.want[cand]
    touched = np.zeros(n, dtype=bool)
    touched[cand] = True
    budget -= int(cand.size)

    # -- 2. the vanilla pool ------------------------------------------------------
    inline = target == Mode.INLINE
    vanilla = ~inline
    if inp.pool is None:
        observed = frozenset().union(*inp.crypt_cores) if inp.crypt_cores else frozenset()
        prev_pool = frozenset(c for c in observed if c in inp.cores)
        if len(prev_pool) == len(inp.cores) and inline.any():
            prev_pool = frozenset()  # the stock "all cores" mask is not a decision
    else:
        prev_pool = inp.pool
    demand_v = float(inp.load_vanilla[vanilla].sum())
    if inp.core_busy.shape[0] >= ncores and prev_pool:
        on_pool = inline & _on(inp.core, prev_pool)
        busy = float(inp.core_busy[list(prev_pool)].sum()) - float(inp.load_inline[on_pool].sum())
        demand_v = max(demand_v, busy)
    demand_i = float(inp.load_inline[inline].sum())
    n_inline = int(inline.sum())
    if vanilla.any() and inp.pool_size is not None:
        size = max(1, min(inp.pool_size, len(inp.cores)))  # a full pool is shared
    elif vanilla.any():
        size = size_pool(demand_v, len(prev_pool), max(params.vanilla_pool_min, 1),
                         params.pool_headroom)
        inline_min = 0
        if n_inline:
            inline_min = min(n_inline, max(1, math.ceil(demand_i / params.core_capacity)))
        size = max(1, min(size, len(inp.cores) - inline_min))
    else:
        size = 0
    keep_core = np.where(inline & (inp.core >= 0) & (inp.core < ncores), inp.core, 0)
    inline_load_now: F64 = np.bincount(
        keep_core[inline], weights=np.maximum(inp.load_inline[inline], MIN_LOAD),
        minlength=ncores,
    ).astype(np.float64)
    pool = _choose_pool(prev_pool, size, inp.cores, inline_load_now) if size else frozenset()
    if not inp.measured:
        pool = prev_pool
    inline_cores = np.asarray([c for c in inp.cores if c not in pool] or list(inp.cores),
                              dtype=np.int64)

    # -- 3. cores -----------------------------------------------------------------
    new_core = inp.core.copy()
    is_inline_core = np.zeros(ncores, dtype=bool)
    is_inline_core[inline_cores] = True
    is_pool_core = np.zeros(ncores, dtype=bool)
    is_pool_core[list(pool)] = True
    pin_core = managed & (inp.pin_core >= 0) & (inp.pin_core < ncores)
    new_core[pin_core] = inp.pin_core[pin_core]
    valid_core = (new_core >= 0) & (new_core < ncores)
    clipped = np.where(valid_core, new_core, 0)
    misplaced = managed & ~pin_core & inp.measured & np.where(
        inline, ~(valid_core & is_inline_core[clipped]),
        ~(valid_core & is_pool_core[clipped]) & bool(pool),
    )
    load = np.maximum(inp.load_inline, MIN_LOAD)
    typical = load if inp.load_typical.shape[0] != n \
        else np.minimum(np.maximum(inp.load_typical, MIN_LOAD), load)
    settled_inline = inline & ~misplaced
    on_core = clipped[settled_inline]
    core_load = np.bincount(on_core, weights=load[settled_inline],
                            minlength=ncores).astype(np.float64)
    typ_core = np.bincount(on_core, weights=typical[settled_inline],
                           minlength=ncores).astype(np.float64)
    # Peers that switch mode are placed whatever the budget: a mode change without its
    # core would start the new path on the data plane's default core.
    must = np.flatnonzero(misplaced & (target != inp.mode))
    rest = np.flatnonzero(misplaced & (target == inp.mode))
    if rest.size > budget:
        rest = rest[_first_stable(-load[rest], max(budget, 0))]
    budget -= int(rest.size)
    place = np.concatenate([must, rest]).astype(np.int64)
    # Largest first onto the least-loaded core (LPT): max load <= mean + largest.
    order = place[np.argsort(-np.where(inline[place], load[place], 0.0), kind="stable")]
    pool_list = np.asarray(sorted(pool), dtype=np.int64)
    pool_count = np.bincount(clipped[vanilla & valid_core & ~misplaced],
                             minlength=ncores).astype(np.float64)
    for i in order.tolist():
        if inline[i]:
            c = int(inline_cores[np.argmin(core_load[inline_cores])])
            core_load[c] += load[i]
            typ_core[c] += typical[i]
        else:
            c = int(pool_list[np.argmin(pool_count[pool_list])])
            pool_count[c] += 1
        new_core[i] = c
        touched[i] = True

    # Rebalance: inline tunnels over the inline cores, and vanilla tunnels' serial work
    # over the pool.
    movable = managed & ~pin_core & inp.measured
    if inp.settled.shape[0] == n:
        movable &= inp.settled
    sat = inp.saturated if inp.saturated.shape[0] else None
    budget = _rebalance(core_load, inline_cores, movable & inline, load, new_core, touched,
                        budget, params, limit=params.core_capacity, saturated=sat,
                        typical=typical, typ_core=typ_core)
    before_spread = new_core.copy()
    budget = _spread(core_load, inline_cores, movable & inline, load, new_core, touched, budget,
                     params.core_capacity, typical, typ_core)
    spread = new_core != before_spread
    if pool:
        vload = np.maximum(inp.load_vanilla, MIN_LOAD)
        settled_v = vanilla & _on(new_core, pool)
        vcore_load = np.bincount(new_core[settled_v], weights=vload[settled_v],
                                 minlength=ncores).astype(np.float64)
        budget = _rebalance(vcore_load, pool_list, movable & vanilla, vload, new_core, touched,
                            budget, params)

    # -- 4. operations, in the order the data plane should see them ------------------
    ops: list[Operation] = []
    rows: list[int] = []
    rows_first: list[int] = []
    ifn = inp.ifnames
    at = np.flatnonzero((target != inp.mode) | (new_core != inp.core))
    # Per changed row, its values as Python objects, read once.
    for i, name_at, key, want, was, to, now_on, first in zip(
            at.tolist(), inp.iface[at].tolist(), _raw_keys(inp.key, at), target[at].tolist(),
            inp.mode[at].tolist(), new_core[at].tolist(), inp.core[at].tolist(),
            (pinned[at] | pin_core[at]).tolist(), strict=True):
        name = ifn[name_at]
        mode_op = SetPeerMode(name, key, _MODE_OF[want])
        core_op = SetPeerCore(name, key, to)
        seq: list[Operation] = []
        moved = to != now_on
        if want == was:
            seq = [core_op]
        elif want == _INLINE:
            seq = [core_op, mode_op] if moved else [mode_op]  # core first: start inline there
        else:
            seq = [mode_op, core_op] if moved else [mode_op]  # leave inline, then move
        (ops_first if first else ops).extend(seq)
        (rows_first if first else rows).extend([i] * len(seq))

    dev_ops: list[Operation] = []
    for k, name in enumerate(ifn):
        on_dev = inp.iface == k
        if not inp.measured:
            continue
        if pool and inp.crypt_cores[k] != pool:
            dev_ops.append(SetCryptCores(name, pool))
        if params.threaded_napi is NapiPolicy.AUTO:
            want_napi = bool((vanilla & on_dev).any())
        else:
            want_napi = params.threaded_napi is NapiPolicy.ON
        if inp.threaded_napi[k] != want_napi:
            dev_ops.append(SetThreadedNapi(name, want_napi))
    # Device settings first, so that tunnels turning vanilla land on a ready pool.
    return PlanOutput(tuple(dev_ops + ops_first + ops), pool, target, new_core,
                      tuple([-1] * len(dev_ops) + rows_first + rows), spread)
