"""The controller: the decision side of a tick, pure (no I/O), state owned by the caller.

    sample (I/O) -> rates -> estimate -> assign -> place -> apply (I/O)

`Controller.plan()` runs the pure stages on one `GatewaySample` and returns a `Plan`;
`wghybrid.daemon.tick.run_tick` does the I/O on either side. It decides for the gateway as a
whole (docs/controller.md):

1. rates (`rates.py`): smoothed rates for people, instantaneous ones for deciding;
2. estimate (`estimate.py`): each tunnel's demand, found out even where its reading is
   censored (capped by its core, its mode or a saturated pool), and each mode's cost in
   cores per Gbps, learned from this gateway's counters;
3. assign (`assign.py`): the vanilla set and pool size that deliver the most for the
   estimated demand, then use the least CPU, kept unless another beats it by a margin;
   a tunnel changes mode only once the change has been wanted for `latent_heat`
   seconds and the tunnel has dwelt `min_dwell` seconds in its mode;
4. place (`placement.py`): cores for tunnels that change mode, and moves off cores that
   are short, by estimated demand.

Every operation carries its `Reason` (the numbers that caused it).

State kept per peer, aligned row for row with the last sample: smoothed and instantaneous
rates, demand estimate, class (elephant: wants more than one inline core), when it entered
its mode (shown) and when its mode last changed (dwell), the change it wants and since
when, the mode it was found in; per gateway: learned costs, the pool decided last, what the
data plane refused for good (unmanaged peers, unsupported device knobs).

Adoption: a peer seen for the first time keeps the mode it is in; no mode changes for
`ADOPT_SETTLE` seconds (its readings settle), and afterwards only when the traffic says so
(the assignment is kept unless another beats it by the margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from wghybrid.core.assign import Assignment, Model, assign
from wghybrid.core.estimate import (
    Cap,
    Costs,
    Demand,
    alone,
    censoring,
    dominant,
    update_demand,
)
from wghybrid.core.placement import SHORT_MARGIN, PlanInput, PlanOutput, plan_operations
from wghybrid.core.rates import KeyIndex, Rates, reindex, update_rates_pair
from wghybrid.core.stall import Alignment
from wghybrid.core.status import build_status
from wghybrid.model import (
    F64,
    U8,
    GatewaySample,
    InterfaceStatus,
    Mode,
    Operation,
    Override,
    PeerClass,
    PeerId,
    Plan,
    Reason,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    format_cores,
    raw_key,
)
from wghybrid.policy import Policy

NEVER = -np.inf
ADOPT_SETTLE = 15.0
"""Seconds after adoption before a peer's mode may change (its readings settle)."""
SHORT_PERSIST = 5.0
"""Seconds a core must stay saturated before tunnels are moved off it."""


@dataclass(frozen=True, slots=True, eq=False)
class Classes:
    """Per peer, its demand class (shown): elephant when its estimated demand exceeds
    what one inline core carries, mouse below 80 % of it, unchanged between."""

    pclass: U8
    heat: F64
    """Unused since the gateway-wide controller (kept zero): the persistence of a wanted
    change is `_PeerState.want_since`."""


@dataclass(frozen=True, slots=True, eq=False)
class _PeerState:
    """Per-peer controller state, aligned with `rates`."""

    classes: Classes
    mode_since: F64
    """When the peer entered its mode, or was adopted (shown as time in mode)."""
    found_mode: U8
    last_mode: U8
    demand: Demand | None
    """Estimated demand (`estimate.update_demand`), None before the first reading."""
    changed_at: F64
    """When its mode last changed, or when it was adopted: the dwell runs from it."""
    want_mode: U8
    want_since: F64
    """Since when the assignment has wanted `want_mode` for it (nan: it wants no change)."""
    last_core: np.ndarray
    moved_at: F64
    key_at_change: U8
    """The peer's demand class and the gateway's state when the controller last changed
    its mode (255: never, or an operator did): it changes back only once one of them has
    changed."""
    auto: np.ndarray
    """bool: the last plan changed this peer's mode automatically."""
    """When its core last changed (-inf: never seen moving)."""


def rows_prev_ok(rows: np.ndarray | None, prev: Rates) -> np.ndarray:
    """bool per row of the new sample: it has a row in `prev` (rows None: same rows)."""
    if rows is None:
        return np.ones(len(prev), dtype=bool)
    return rows >= 0


def prev_gbps(prev: Rates, rows: np.ndarray | None) -> F64:
    """`prev`'s smoothed Gbps, aligned with the new sample's rows (nan where new)."""
    if rows is None:
        return prev.gbps
    return np.where(rows >= 0, prev.gbps[np.where(rows >= 0, rows, 0)] if len(prev) else np.nan,
                    np.nan)


def _gb(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


@dataclass(frozen=True, slots=True, eq=False)
class Decision:
    """What the last tick saw and compared, for reasons and for explaining."""

    demand: Demand
    costs: Costs
    assignment: Assignment | None
    pool_demand_gbps: float


class Controller:
    """Decides modes and cores for every peer of one gateway, tick after tick."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._rates: Rates | None = None
        self._fast: Rates | None = None
        self._index: KeyIndex | None = None
        """The identities of `_rates`' rows, sorted (made when first needed)."""
        self._peers: _PeerState | None = None
        self._sample: GatewaySample | None = None
        self._last: PlanOutput | None = None
        self._decision: Decision | None = None
        self._pool: frozenset[int] | None = None
        self._costs = Costs()
        self._short_since: F64 = np.zeros(0)
        self._bound = False
        self._unmanaged: dict[PeerId, str] = {}
        self._unsupported: dict[tuple[str, str], str] = {}
        self._alignment: Alignment | None = None
        self._napi_off: dict[str, str] = {}
        self.transitions = 0

    # -- policy ----------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        """Takes effect at the next tick; rates, estimates and dwell clocks carry over."""
        self._policy = policy

    @property
    def costs(self) -> Costs:
        """The learned per-mode costs."""
        return self._costs

    @property
    def sample(self) -> GatewaySample | None:
        """The last tick's reading of the data plane (metrics: per-core busy time)."""
        return self._sample

    @property
    def alignment(self) -> Alignment | None:
        """The last tick's alignment of its sample with the one before (the stall
        detector reuses it rather than sorting the table again)."""
        return self._alignment

    @property
    def decision(self) -> Decision | None:
        """What the last tick estimated and compared."""
        return self._decision

    # -- the pure stages -----------------------------------------------------------
    def _adopted(self, now: float) -> float:
        """The `changed_at` of a peer adopted at `now`: its dwell ends ADOPT_SETTLE
        seconds later (or at min_dwell, if shorter). Nobody changed its mode: the dwell
        stops the controller undoing its own changes; an adopted peer only needs its
        readings to settle."""
        dwell = self._policy.classify.min_dwell
        return now - dwell + min(dwell, ADOPT_SETTLE)

    def _align(self, sample: GatewaySample, rows: np.ndarray | None) -> _PeerState:
        mode = sample.peers.mode
        n = len(sample.peers)
        st = self._peers
        if st is None or self._rates is None:
            return _PeerState(Classes(np.where(mode == Mode.VANILLA, PeerClass.ELEPHANT,
                                               PeerClass.MOUSE).astype(np.uint8),
                                      np.zeros(n)),
                              np.full(n, sample.now), mode.copy(), mode.copy(), None,
                              np.full(n, self._adopted(sample.now)), mode.copy(),
                              np.full(n, np.nan),
                              sample.peers.core.copy(), np.full(n, NEVER),
                              np.full(n, 255, np.uint8), np.zeros(n, dtype=bool))
        if rows is None:
            return st
        fresh = rows < 0
        at = np.where(fresh, 0, rows)
        # Each column gathered once, then its new rows written in place: the values of
        # np.where(fresh, new, np.where(kept, arr[at], fill)), in one pass over the rows.
        new_rows = np.flatnonzero(fresh)

        def take(arr: np.ndarray, fill: float | int, dtype: np.dtype | None = None,
                 new: np.ndarray | float | int | None = None) -> np.ndarray:
            """`arr`'s rows for the sample's, as `dtype`; new peers get `new` (an array
            aligned with the sample, or a value), else `fill`."""
            dt = arr.dtype if dtype is None else dtype
            if arr.shape[0] == 0:
                out = np.full(n, fill, dtype=dt)
            else:
                out = arr[at].astype(dt, copy=False)
            if new is None:
                out[new_rows] = fill
            elif isinstance(new, np.ndarray):
                out[new_rows] = new[new_rows]
            else:
                out[new_rows] = new
            return out

        adopted = np.where(mode == Mode.VANILLA, PeerClass.ELEPHANT, PeerClass.MOUSE)
        d = st.demand
        u8, f64 = np.dtype(np.uint8), np.dtype(np.float64)
        return _PeerState(
            Classes(take(st.classes.pclass, 0, u8, adopted), np.zeros(n)),
            take(st.mode_since, 0.0, f64, float(sample.now)),
            take(st.found_mode, 0, u8, mode),
            take(st.last_mode, 0, u8, mode),
            None if d is None else Demand(
                take(d.gbps, 0.0), take(d.measured, 0.0), take(d.censored, False),
                take(d.cause, 0), take(d.peak, 0.0),
                None if d.known is None else take(d.known, np.nan),
                None if d.known_age is None else take(d.known_age, np.inf)),
            take(st.changed_at, NEVER, f64, self._adopted(sample.now)),
            take(st.want_mode, 0, u8, mode),
            take(st.want_since, np.nan, f64, np.nan),
            take(st.last_core, -1, np.dtype(np.int32), sample.peers.core),
            take(st.moved_at, NEVER, f64, NEVER),
            take(st.key_at_change, 255, u8, 255),
            take(st.auto, False, np.dtype(bool), False),
        )

    def _key_index(self) -> KeyIndex | None:
        r = self._rates
        if r is not None and self._index is None:
            self._index = KeyIndex(r.ifnames, r.iface, r.key)
        return self._index

    def _rows_of(self, keys: Sequence[PeerId]) -> list[int]:
        index = self._key_index()
        if index is None or not keys:
            return [-1] * len(keys)
        return index.rows_of(keys).tolist()

    def plan(self, sample: GatewaySample, overrides: Sequence[Override], wall_now: float) -> Plan:
        """Fold in one sample and decide; returns the operations to apply (maybe none)."""
        pol = self._policy
        cl = pol.classify
        prev = self._rates
        rows, index = reindex(prev, self._index, sample)
        self._alignment = Alignment(None if prev is None else prev.now, rows)
        st = self._align(sample, rows)
        # The same counters smoothed and unsmoothed: decisions react within a tick; people
        # read the smoothed ones.
        rates, fast = update_rates_pair(prev, self._fast, sample, pol.smoothing, rows)
        dt = sample.now - prev.now if prev is not None else 0.0
        peers = sample.peers
        n = len(peers)
        mode = peers.mode
        now = sample.now

        # A mode the data plane now reports differently starts a new dwell.
        changed = mode != st.last_mode
        mode_since = np.where(changed, now, st.mode_since)
        changed_at = np.where(changed, now, st.changed_at)
        moved_at = np.where(peers.core != st.last_core, now, st.moved_at)
        # A core is short when inline work has kept it saturated for SHORT_PERSIST seconds
        # (a burst of noise saturates one for a tick or two: no move for that).
        # Saturated by inline work (the inline tunnels' own CPU counters): the busy time
        # of a core also counts threads that fill whatever softirq work leaves.
        inl = (mode == Mode.INLINE) & (peers.core >= 0)
        busy_now = np.bincount(peers.core[inl], weights=fast.cpu[inl],
                               minlength=sample.cores)[:sample.cores]
        if self._short_since.shape != busy_now.shape:
            self._short_since = np.full(busy_now.shape, np.nan)
        hot = busy_now >= min(cl.inline_saturation, pol.placement.core_capacity)
        self._short_since = np.where(hot, np.where(np.isnan(self._short_since), now,
                                                   self._short_since), np.nan)
        saturated = hot & (now - np.nan_to_num(self._short_since, nan=now) >= SHORT_PERSIST)

        observed_pool = frozenset().union(*(i.crypt_cores for i in sample.interfaces)) \
            if sample.interfaces else frozenset()
        gbps = fast.gbps
        cause = censoring(gbps, fast.cpu, fast.rx_pps + fast.tx_pps, fast.drop_pps, mode,
                          peers.core, fast.core_busy, self._pool or observed_pool,
                          self._costs, cl.inline_saturation)
        pool_now = [c for c in (self._pool or observed_pool) if c < fast.core_busy.shape[0]]
        # Only a pool that is not the whole machine tells where vanilla's CPU lands.
        pool_busy = float(fast.core_busy[pool_now].sum()) \
            if pool_now and len(pool_now) < sample.cores else None
        costs = self._costs.learn(gbps, fast.cpu, mode, fast.valid, dt, pool_busy)
        own = alone(mode, peers.core, sample.cores) | (fast.cpu >= cl.inline_saturation)
        solo = own | dominant(mode, peers.core, fast.cpu, sample.cores)
        # A tunnel capped on a core it shares can only be shown to want up to the whole
        # core: moving the others off gives it that (placement), and only once it has
        # the core to itself and is still capped does it want more than inline carries.
        # Without this bound a medium tunnel (half a core) on a saturated shared core
        # read as rising under +-30 % noise compounded to the vanilla ceiling, went
        # vanilla, got what it wanted there and came back inline: a flap per dwell.
        ceiling = np.where(own, max(costs.vanilla_tunnel_gbps, costs.inline_tunnel_gbps)
                           * (1 + cl.probe_gain), costs.inline_tunnel_gbps)
        before = st.demand if prev is not None else None
        if before is not None and changed.any() and before.gbps.shape == changed.shape:
            # What a tunnel got in the mode it just left (smoothed) is what it is known to
            # want at least: read against it, a capped reading in the new mode that is no
            # higher says the mode is not what limits it (vanilla tried and gave no more),
            # and it is not probed again at once.
            got = np.where(rows_prev_ok(rows, prev), prev_gbps(prev, rows), np.nan) \
                if prev is not None else np.full(n, np.nan)
            # What it got there is its last reading there, not the smoothed rate: that
            # lags a falling load by several seconds (a tunnel made inline as its load
            # fell from 4.4 to 1.1 Gbps left vanilla with a smoothed ~2 as "known", and
            # when its load rose again its capped 2.9 read as "about what vanilla gave":
            # not probed, inline for the whole high half of its swing).
            last = np.where(rows_prev_ok(rows, prev), prev_gbps(self._fast, rows), np.nan) \
                if self._fast is not None and prev is not None else got
            known = before.known if before.known is not None else np.full(n, np.nan)
            age = before.known_age if before.known_age is not None else np.full(n, np.inf)
            # The probe's estimate has done its job once the mode changed: the new mode's
            # readings find the demand out, starting from what it got before.
            restart = changed & ~np.isnan(got)
            before = replace(before, known=np.where(changed, last, known),
                             known_age=np.where(changed, 0.0, age),
                             gbps=np.where(restart, got, before.gbps),
                             peak=np.where(restart, got, before.peak))
        demand = update_demand(before, gbps, cause,
                               fast.valid, dt, cl.probe_gain, cl.demand_decay, pol.smoothing,
                               grow=solo, ceiling=ceiling)
        cap_i = costs.inline_tunnel_gbps
        pclass = np.where(demand.gbps > cap_i, PeerClass.ELEPHANT,
                          np.where(demand.gbps < cap_i * 0.8, PeerClass.MOUSE,
                                   st.classes.pclass)).astype(np.uint8)
        self._costs = costs
        self._rates, self._fast, self._sample, self._index = rates, fast, sample, index

        ifnames = rates.ifnames
        managed = np.ones(n, dtype=bool)
        if pol.interfaces is not None:
            managed &= np.isin(
                peers.iface, [k for k, name in enumerate(ifnames) if name in pol.interfaces]
            )
        if self._unmanaged:
            urows = self._rows_of(list(self._unmanaged))
            managed[[r for r in urows if r >= 0]] = False
        pin_mode = np.full(n, -1, dtype=np.int8)
        pin_core = np.full(n, -1, dtype=np.int32)
        live = [o for o in overrides if o.active(wall_now)]
        if live:
            orows = self._rows_of([o.peer for o in live])
            for o, r in zip(live, orows, strict=True):
                if r < 0:
                    continue
                if o.mode is not None:
                    pin_mode[r] = int(o.mode)
                if o.core is not None:
                    pin_core[r] = o.core

        cores = tuple(sorted(pol.cores)) if pol.cores is not None else tuple(range(sample.cores))
        cores = tuple(c for c in cores if c < sample.cores) or tuple(range(sample.cores))
        # A baseline reading (first tick, or every counter restarted): nothing is measured
        # yet, so only operator pins are carried out.
        measured = not n or bool(fast.valid.any())
        pinned = managed & (pin_mode >= 0)
        mode_eff = np.where(pinned, pin_mode, mode).astype(np.uint8)
        # The gateway's state, with hysteresis: CPU-bound from 92 % busy, not below 80 %.
        busy_all = fast.core_busy[list(cores)] if fast.core_busy.shape[0] >= sample.cores \
            else np.zeros(0)
        if busy_all.size:
            frac = float(busy_all.mean())
            self._bound = frac >= 0.92 or (self._bound and frac >= 0.8)
        key = (pclass.astype(np.uint8) * 2 + np.uint8(self._bound)).astype(np.uint8)
        # The situation a change was made for: a tunnel made vanilla is treated as an
        # elephant, one made inline on a gateway with CPU to spare as a mouse (it fits);
        # made inline on a CPU-bound gateway, as what it is (an elephant may be, for
        # efficiency). The class estimate lags the change, so it is not read back here.
        made_for = np.where(mode == Mode.VANILLA, PeerClass.ELEPHANT,
                            PeerClass.MOUSE if not self._bound else pclass)
        made_key = (made_for.astype(np.uint8) * 2 + np.uint8(self._bound)).astype(np.uint8)
        key_at_change = np.where(changed, np.where(st.auto, made_key, 255),
                                 st.key_at_change).astype(np.uint8)
        # One mode change per change of the tunnel's demand class or the gateway's state:
        # a tunnel whose situation is what it was at its last change does not go back.
        fresh_situation = key != key_at_change
        free = managed & ~pinned & fast.valid & ((now - changed_at) >= cl.min_dwell) \
            & fresh_situation
        if self._pool is not None:
            cur_pool = len(self._pool)
        else:
            cur_pool = len(observed_pool & frozenset(cores))
        pool_min = max(pol.placement.vanilla_pool_min, 1)
        chosen: Assignment | None = None
        target = mode_eff.copy()
        want_mode, want_since = st.want_mode, st.want_since
        pool_size: int | None = None
        if measured and n:
            chosen = assign(demand.gbps, mode_eff, free, costs, len(cores), cur_pool,
                            promote_gbps=cl.promote_gbps, demote_gbps=cl.demote_gbps,
                            pool_min=pool_min, min_gain=pol.placement.min_gain,
                            pool_headroom=pol.placement.pool_headroom,
                            core_fill=pol.placement.core_capacity, peak=demand.peak)
            want = np.where(chosen.vanilla, Mode.VANILLA, Mode.INLINE).astype(np.uint8)
            wants = free & (want != mode_eff)
            # Persistence: a change must be wanted, the same way, for latent_heat seconds.
            keep = wants & (want == st.want_mode) & ~np.isnan(st.want_since)
            want_since = np.where(keep, st.want_since, np.where(wants, now, np.nan))
            want_mode = np.where(wants, want, mode_eff).astype(np.uint8)
            ready = np.flatnonzero(wants & (now - want_since >= cl.latent_heat - 1e-9))
            budget = pol.placement.max_moves
            if ready.size > budget:
                value = np.where(want[ready] == Mode.VANILLA, demand.gbps[ready] - cap_i,
                                 demand.gbps[ready] * max(costs.vanilla - costs.inline, 0.0)
                                 / max(costs.inline, 1e-9))
                ready = ready[np.argsort(-value, kind="stable")[:budget]]
            target[ready] = want[ready]
            if ready.size:
                pool_size = Model(demand.gbps, costs, len(cores),
                                  pool_headroom=pol.placement.pool_headroom,
                                  core_fill=pol.placement.core_capacity,
                                  peak=demand.peak).best_pool(
                    target == Mode.VANILLA, pool_min, cur_pool).pool
                if (target == Mode.VANILLA).any() and max(chosen.pool, pool_min) < pool_size:
                    # The pool is shrinking: aim at its final size now, so that tunnels
                    # turning inline are spread over the final inline cores rather than
                    # packed onto today's few (the vanilla tunnels left in the smaller
                    # pool are on their way out within a few ticks).
                    pool_size = max(chosen.pool, pool_min)
            elif chosen.rule == "pool":
                pool_size = chosen.pool
            else:
                pool_size = max(min(max(cur_pool, pool_min), len(cores)), 1) \
                    if (target == Mode.VANILLA).any() else 0

        self._peers = _PeerState(Classes(pclass, np.zeros(n)), mode_since, st.found_mode,
                                 mode.copy(), demand, changed_at, want_mode, want_since,
                                 peers.core.copy(), moved_at, key_at_change,
                                 ~pinned & (target != mode))
        load_inline = np.minimum(np.maximum(demand.peak, 0.0) * costs.inline, 1.0)
        load_typical = np.minimum(np.maximum(demand.gbps, 0.0) * costs.inline, 1.0)
        load_vanilla = np.minimum(demand.gbps, costs.vanilla_tunnel_gbps) \
            / costs.vanilla_tunnel_gbps
        inp = PlanInput(
            now=now,
            ifnames=ifnames,
            iface=peers.iface,
            key=peers.key,
            mode=mode,
            core=peers.core,
            want=target,
            eligible=np.ones(n, dtype=bool),
            urgency=np.zeros(n),
            pin_mode=pin_mode,
            pin_core=pin_core,
            managed=managed,
            load_inline=load_inline,
            load_typical=load_typical,
            load_vanilla=load_vanilla,
            cores=cores,
            crypt_cores=tuple(i.crypt_cores for i in sample.interfaces),
            threaded_napi=tuple(i.threaded_napi for i in sample.interfaces),
            pool=self._pool,
            core_busy=rates.core_busy,
            measured=measured,
            saturated=saturated,
            settled=(now - moved_at) >= cl.min_dwell,
            pool_size=pool_size,
        )
        out = plan_operations(inp, pol.placement)
        self._last = out
        self._pool = out.pool
        v_gbps = float(np.minimum(demand.gbps[target == Mode.VANILLA],
                                  costs.vanilla_tunnel_gbps).sum())
        self._decision = Decision(demand, costs, chosen, v_gbps)
        ops = self._with_reasons(out, inp, demand, costs, chosen, pinned, pin_core, v_gbps)
        return tuple(op for op in ops if not self._refused(op))

    def _with_reasons(
        self, out: PlanOutput, inp: PlanInput, demand: Demand, costs: Costs,
        chosen: Assignment | None, pinned: np.ndarray, pin_core: np.ndarray, v_gbps: float,
    ) -> list[Operation]:
        cap_i = costs.inline_tunnel_gbps
        gw: tuple[tuple[str, float], ...] = ()
        if chosen is not None:
            gw = (("gateway_gbps_before", chosen.current.gbps),
                  ("gateway_gbps_after", chosen.chosen.gbps),
                  ("gateway_cores_before", chosen.current.cpu),
                  ("gateway_cores_after", chosen.chosen.cpu))
        cost_nums = (("inline_cores_per_gbps", costs.inline),
                     ("vanilla_cores_per_gbps", costs.vanilla),
                     ("inline_tunnel_gbps", cap_i))
        on_inline = inp.mode == Mode.INLINE
        where = np.clip(inp.core, 0, None)[on_inline]
        size = max(max(inp.cores, default=0) + 1, int(where.max()) + 1 if where.size else 0)
        core_peak = np.bincount(where, weights=inp.load_inline[on_inline], minlength=size)
        typical = inp.load_typical if inp.load_typical.shape[0] == on_inline.shape[0] \
            else inp.load_inline
        core_load = np.bincount(where, weights=typical[on_inline], minlength=size)
        # Per peer row of the plan, its numbers as Python values, read once.
        at = np.asarray([r for r in out.rows if r >= 0], dtype=np.int64)
        per_row = dict(zip(at.tolist(), zip(
            demand.gbps[at].tolist(), demand.measured[at].tolist(),
            demand.cause[at].tolist(), pinned[at].tolist(), pin_core[at].tolist(),
            inp.core[at].tolist(), inp.mode[at].tolist(), out.mode[at].tolist(),
            strict=True), strict=True))
        loads, peaks = core_load.tolist(), core_peak.tolist()
        spread = out.spread
        sat = inp.saturated.tolist()
        inline_mode, vanilla_mode = int(Mode.INLINE), int(Mode.VANILLA)
        ops: list[Operation] = []
        for op, row in zip(out.plan, out.rows, strict=True):
            if row < 0:
                ops.append(replace(op, reason=self._device_reason(op, out, costs, v_gbps)))
                continue
            d, m, cause, is_pinned, pinned_core, old, mode_was, mode_after = per_row[row]
            peer_nums = (("demand_gbps", d), ("measured_gbps", m),
                         ("censored", float(cause != Cap.NONE)))
            seen = f"measured {_gb(m)} Gbps"
            if cause != Cap.NONE:
                seen += f", capped ({Cap.NAMES[cause]}): wants at least {_gb(d)}"
            else:
                seen += f", demand estimate {_gb(d)}"
            if isinstance(op, SetPeerMode):
                if is_pinned:
                    r = Reason("override", f"operator override: mode {op.mode}", peer_nums)
                elif op.mode == vanilla_mode:
                    r = Reason(
                        "more-than-inline",
                        f"{seen} Gbps, more than one inline core carries ({_gb(cap_i)}); "
                        f"the gateway is estimated to deliver {_gb(gw[0][1])} -> "
                        f"{_gb(gw[1][1])} Gbps", peer_nums + cost_nums + gw)
                elif chosen is not None and chosen.rule == "floor":
                    r = Reason("below-demote",
                               f"{seen} Gbps, below the demote level "
                               f"({_gb(self._policy.classify.demote_gbps)})",
                               peer_nums + cost_nums)
                elif chosen is not None and chosen.rule == "cpu":
                    r = Reason(
                        "fits-inline",
                        f"{seen} Gbps, fits one inline core ({_gb(cap_i)}): as much "
                        f"throughput on {_gb(gw[2][1])} -> {_gb(gw[3][1])} cores",
                        peer_nums + cost_nums + gw)
                else:
                    r = Reason(
                        "gateway-throughput",
                        f"{seen} Gbps; inline for more gateway throughput "
                        f"({_gb(gw[0][1]) if gw else '?'} -> "
                        f"{_gb(gw[1][1]) if gw else '?'} Gbps): vanilla costs "
                        f"{_gb(costs.vanilla)} cores per Gbps, inline {_gb(costs.inline)}",
                        peer_nums + cost_nums + gw)
                ops.append(SetPeerMode(op.interface, op.public_key, op.mode, r))
                continue
            assert isinstance(op, SetPeerCore)
            here = 0 <= old < len(loads)
            if pinned_core >= 0:
                r = Reason("override", f"operator override: core {op.core}", peer_nums)
            elif mode_after != mode_was:
                r = Reason("placed", f"placed for mode {Mode(mode_after)} on "
                           f"core {op.core}, the least loaded", peer_nums)
            elif mode_after == inline_mode and here and bool(spread[row]):
                r = Reason("spread", f"core {old} usually carries "
                           f"{_gb(loads[old])} cores of inline work, core "
                           f"{op.core} {_gb(float(core_load[op.core]))}: evened out",
                           peer_nums + (("core_load_before", loads[old]),))
            elif mode_after == inline_mode and here and loads[old] > 1.0 + SHORT_MARGIN:
                r = Reason("core-short",
                           f"core {old} is short: its inline tunnels usually want "
                           f"{_gb(loads[old])} cores (at their peaks "
                           f"{_gb(peaks[old])})", peer_nums +
                           (("core_load_before", loads[old]),
                            ("core_peak_before", peaks[old])))
            elif mode_after == inline_mode and here and old not in out.pool \
                    and (len(sat) <= old or not sat[old]):
                r = Reason("spread", f"core {old} usually carries "
                           f"{_gb(loads[old])} cores of inline work, core "
                           f"{op.core} {_gb(float(core_load[op.core]))}: evened out",
                           peer_nums + (("core_load_before", loads[old]),))
            elif mode_after == inline_mode and here and old not in out.pool:
                # Saturated and full, not short (placement._rebalance): a tunnel left
                # alone on a core, or one of its small neighbours moved off.
                r = Reason("core-full",
                           f"core {old} is saturated and full (its inline tunnels usually "
                           f"want {_gb(loads[old])} cores): its largest tunnel "
                           f"gets a core to itself, where a capped reading shows whether "
                           f"it wants more than one", peer_nums +
                           (("core_load_before", loads[old]),
                            ("core_peak_before", peaks[old])))
            else:
                what = "pool" if mode_after == vanilla_mode else "inline cores"
                r = Reason("misplaced", f"core {old} is not among the {what}; "
                           f"placed on core {op.core}", peer_nums)
            ops.append(SetPeerCore(op.interface, op.public_key, op.core, r))
        return ops

    def _device_reason(self, op: Operation, out: PlanOutput, costs: Costs,
                       v_gbps: float) -> Reason:
        if isinstance(op, SetCryptCores):
            return Reason(
                "pool-size",
                f"vanilla pool of {len(op.cores)} cores ({format_cores(op.cores)}) for an "
                f"estimated {_gb(v_gbps)} Gbps of vanilla demand at {_gb(costs.vanilla)} "
                f"cores per Gbps",
                (("pool_cores", float(len(op.cores))), ("vanilla_demand_gbps", v_gbps),
                 ("vanilla_cores_per_gbps", costs.vanilla)))
        assert isinstance(op, SetThreadedNapi)
        return Reason("threaded-napi", "the device has vanilla peers (threaded NAPI spreads "
                      "their polls)" if op.enabled else "the device has no vanilla peer"
                      if self._policy.placement.threaded_napi == "auto"
                      else f"policy threaded_napi = {self._policy.placement.threaded_napi}")

    def _refused(self, op: Operation) -> bool:
        if isinstance(op, SetCryptCores):
            return (op.interface, "crypt_cores") in self._unsupported
        if isinstance(op, SetThreadedNapi):
            return (op.interface, "threaded_napi") in self._unsupported
        return False

    # -- feedback from apply ----------------------------------------------------------
    def record(self, op: Operation, error: str | None, permanent: bool = False) -> None:
        """Called by the loop after each operation (`error` None when it succeeded):
        counts transitions, and marks what failed for good (`permanent`) as unmanaged
        (peers) or unsupported (device knobs)."""
        if error is None:
            if isinstance(op, SetPeerMode):
                self.transitions += 1
            return
        if not permanent:
            return
        if isinstance(op, SetPeerMode | SetPeerCore):
            self._unmanaged[op.peer] = error
        elif isinstance(op, SetCryptCores):
            self._unsupported[(op.interface, "crypt_cores")] = error
        else:
            self._unsupported[(op.interface, "threaded_napi")] = error

    def forbid_threaded_napi(self, interface: str, reason: str) -> None:
        """Plan no threaded-NAPI change on `interface` from now on (the daemon turned it
        off there because a peer stalled with it on: wghybrid.daemon.stall); status shows
        the knob as refused, with `reason`. The daemon persists these (`napi_off`) and
        restores them at start."""
        self._unsupported[(interface, "threaded_napi")] = reason
        self._napi_off[interface] = reason

    def napi_off(self) -> dict[str, str]:
        """Devices on which `forbid_threaded_napi` was called, with the reasons."""
        return dict(self._napi_off)

    def manage(self, interface: str, public_key: bytes) -> None:
        self._unmanaged.pop(PeerId(interface, public_key), None)

    def unmanaged(self) -> dict[PeerId, str]:
        return dict(self._unmanaged)

    def mark_unmanaged(self, interface: str, public_key: bytes, reason: str) -> None:
        """Restore a mark from persisted state."""
        self._unmanaged[PeerId(interface, public_key)] = reason

    # -- reporting ------------------------------------------------------------------
    def restore_plan(self) -> Plan:
        """Operations that put every managed peer back in the mode it was found in."""
        if self._sample is None or self._peers is None:
            return ()
        peers, st, ifn = self._sample.peers, self._peers, self._rates.ifnames if self._rates else ()
        ops: list[Operation] = []
        for i in np.flatnonzero(peers.mode != st.found_mode).tolist():
            peer = PeerId(ifn[int(peers.iface[i])], raw_key(peers.key[i]))
            if peer in self._unmanaged:
                continue
            ops.append(SetPeerMode(*peer, Mode(int(st.found_mode[i]))))
        return tuple(ops)

    def status(self, overrides: Sequence[Override] = (), wall_now: float = 0.0) -> tuple[
        InterfaceStatus, ...
    ]:
        """What the controller sees and decided, per interface (for API, CLI, metrics)."""
        sample, rates, st = self._sample, self._rates, self._peers
        if sample is None or rates is None or st is None:
            return ()
        return build_status(sample, rates, st.classes.pclass, st.mode_since, self._policy,
                            self._unmanaged, self._unsupported, overrides, wall_now,
                            demand=None if st.demand is None else st.demand.gbps,
                            index=self._key_index() if self._unmanaged or overrides else None)

    # -- read-only views (explain, issue 13) -------------------------------------------
    def peer_view(self, interface: str, public_key: bytes) -> dict[str, float] | None:
        """What the controller holds for one peer as of the last tick, read-only (for
        `wghybrid explain`); None when the last sample has no such peer. Times are on the
        sample's clock (`sample.now`); nan where there is none. Keys: `row` (in the last
        sample, `decision` and its demand), `changed_at` (the dwell runs from it),
        `want_mode` and `want_since` (nan: it wants no change), `moved_at` (its core's last
        change), `key_at_change` and `key` (demand class * 2 + CPU-bound: it changes back
        only once they differ; 255: not changed by the controller), `bound` (1: the
        gateway is CPU-bound), `valid` (1: measured by the last tick)."""
        (row,) = self._rows_of([PeerId(interface, public_key)])
        st, fast = self._peers, self._fast
        if row < 0 or st is None or fast is None or row >= st.changed_at.shape[0]:
            return None
        return {
            "row": float(row),
            "changed_at": float(st.changed_at[row]),
            "want_mode": float(st.want_mode[row]),
            "want_since": float(st.want_since[row]),
            "moved_at": float(st.moved_at[row]),
            "key_at_change": float(st.key_at_change[row]),
            "key": float(int(st.classes.pclass[row]) * 2 + int(self._bound)),
            "bound": float(self._bound),
            "valid": float(bool(fast.valid[row])),
        }
