"""The planner: pool sizing, inline spread, budgets, and its properties."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from factory import key
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.core.placement import (
    MIN_LOAD,
    MOVE_GAIN,
    SHORT_MARGIN,
    PlanInput,
    PlanOutput,
    _rebalance,
    _spread,
    plan_operations,
    size_pool,
)
from wghybrid.model import Mode, SetCryptCores, SetPeerCore, SetPeerMode, SetThreadedNapi
from wghybrid.policy import NapiPolicy, Placement

pytestmark = pytest.mark.unit


def make(
    mode: list[int], want: list[int] | None = None, core: list[int] | None = None,
    load: list[float] | None = None, cores: int = 8, pool: frozenset[int] | None = None,
    crypt: frozenset[int] | None = None, eligible: bool = True, threaded: bool = False,
) -> PlanInput:
    n = len(mode)
    m = np.asarray(mode, np.uint8)
    ld = np.asarray(load if load is not None else [0.1] * n, np.float64)
    return PlanInput(
        now=100.0, ifnames=("wg0",), iface=np.zeros(n, np.int32),
        key=np.array([key(i) for i in range(n)], dtype="S32"), mode=m,
        core=np.asarray(core if core is not None else [-1] * n, np.int32),
        want=np.asarray(want if want is not None else mode, np.uint8),
        eligible=np.full(n, eligible), urgency=ld.copy(),
        pin_mode=np.full(n, -1, np.int8), pin_core=np.full(n, -1, np.int32),
        managed=np.ones(n, bool), load_inline=ld, load_vanilla=ld * 1.9,
        cores=tuple(range(cores)),
        crypt_cores=(crypt if crypt is not None else frozenset(range(cores)),),
        threaded_napi=(threaded,), pool=pool,
    )


def applied(inp: PlanInput, out: PlanOutput) -> PlanInput:
    """The situation after the data plane carried out `out.plan`."""
    mode, core = inp.mode.copy(), inp.core.copy()
    crypt, threaded = inp.crypt_cores[0], inp.threaded_napi[0]
    for op in out.plan:
        if isinstance(op, SetPeerMode):
            mode[int.from_bytes(op.public_key[:4], "big")] = op.mode
        elif isinstance(op, SetPeerCore):
            core[int.from_bytes(op.public_key[:4], "big")] = op.core
        elif isinstance(op, SetCryptCores):
            crypt = op.cores
        elif isinstance(op, SetThreadedNapi):
            threaded = op.enabled
    return replace(inp, mode=mode, core=core, crypt_cores=(crypt,), threaded_napi=(threaded,),
                   pool=out.pool)


def test_pool_sizing_has_hysteresis() -> None:
    assert size_pool(0.0, 0, 2, 0.25) == 2
    assert size_pool(3.0, 2, 2, 0.25) == 4  # 3 > 0.75*2: grow to ceil(3/0.75)
    assert size_pool(2.9, 4, 2, 0.25) == 4  # fits: stay
    assert size_pool(1.6, 4, 2, 0.25) == 4  # 1.6 >= 0.5*3: not enough slack to shrink
    assert size_pool(1.0, 4, 2, 0.25) == 2  # 1.0 < 0.5*3: shrink to what it needs


def test_inline_tunnels_get_a_core_each_while_cores_last() -> None:
    out = plan_operations(make([Mode.INLINE] * 6, load=[0.3] * 6), Placement())
    assert sorted(out.core.tolist()) == [0, 1, 2, 3, 4, 5]
    assert out.pool == frozenset()
    assert all(isinstance(op, SetPeerCore) for op in out.plan)


def test_elephant_goes_vanilla_with_a_pool_disjoint_from_inline_cores() -> None:
    inp = make([Mode.INLINE] * 4, want=[Mode.VANILLA, 1, 1, 1], core=[0, 1, 2, 3],
               load=[0.95, 0.2, 0.2, 0.2], threaded=False)
    out = plan_operations(inp, Placement(vanilla_pool_min=2))
    assert out.mode.tolist() == [Mode.VANILLA, 1, 1, 1]
    assert len(out.pool) >= 2
    assert not out.pool & set(out.core[1:].tolist())
    assert out.core[0] in out.pool
    kinds = [type(op) for op in out.plan]
    assert kinds[:2] == [SetCryptCores, SetThreadedNapi]  # device first, then the peer
    assert SetPeerMode in kinds


def test_dwell_and_budget_bound_changes() -> None:
    n = 10
    inp = make([Mode.INLINE] * n, want=[Mode.VANILLA] * n, core=list(range(n)), cores=16,
               load=[float(i) / 10 for i in range(n)], eligible=False)
    assert plan_operations(inp, Placement()).mode.tolist() == [Mode.INLINE] * n
    out = plan_operations(replace(inp, eligible=np.ones(n, bool)), Placement(max_moves=3))
    moved = np.flatnonzero(out.mode == Mode.VANILLA).tolist()
    assert moved == [7, 8, 9]  # the most urgent three


def test_pins_apply_regardless_of_dwell_and_budget() -> None:
    inp = make([Mode.INLINE] * 3, core=[0, 1, 2], eligible=False)
    inp = replace(inp, pin_mode=np.array([Mode.VANILLA, -1, -1], np.int8),
                  pin_core=np.array([-1, 5, -1], np.int32))
    out = plan_operations(inp, Placement(max_moves=0))
    assert out.mode.tolist()[0] == Mode.VANILLA and out.core.tolist()[1] == 5


def test_unmanaged_peers_are_left_alone() -> None:
    inp = make([Mode.INLINE] * 2, want=[Mode.VANILLA] * 2, core=[-1, -1])
    inp = replace(inp, managed=np.array([False, True]))
    out = plan_operations(inp, Placement())
    assert out.mode[0] == Mode.INLINE and out.core[0] == -1
    assert out.mode[1] == Mode.VANILLA


def test_rebalance_moves_only_off_short_cores() -> None:
    # Imbalanced but not short (at most core_capacity), by less than SPREAD_GAP
    # (0.5 + 0.3 against 0.5): nobody loses traffic, no move.
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.5, 0.3, 0.5], cores=2)
    assert plan_operations(inp, Placement()).plan == ()
    # By more than SPREAD_GAP (0.5 + 0.4 against 0.05: what a change of the inline cores
    # leaves behind): evened out, one move.
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.5, 0.4, 0.05], cores=2)
    assert [type(op) for op in plan_operations(inp, Placement()).plan] == [SetPeerCore]
    # Short (0.6 + 0.4 = 1.0) but no room on the other core (0.7): a move would only make
    # that one short. No move.
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.6, 0.4, 0.7], cores=2)
    assert plan_operations(inp, Placement()).plan == ()


def test_a_short_core_is_relieved_only_while_measured_saturated() -> None:
    load = np.array([0.7, 0.6, 0.05])
    for saturated, moves in ((None, 1), (np.array([True, True]), 1),
                             (np.array([False, False]), 0)):
        core_load = np.array([1.3, 0.05])
        new_core = np.array([0, 0, 1], np.int32)
        touched = np.zeros(3, bool)
        left = _rebalance(core_load, np.array([0, 1]), np.ones(3, bool), load, new_core,
                          touched, 8, Placement(), limit=0.9, saturated=saturated)
        assert 8 - left == moves, saturated


def test_spreading_never_makes_a_core_short() -> None:
    # 0.3 + 0.3 + 0.35 against 0.55: a gap over SPREAD_GAP, evened by one move (0.65 and
    # 0.85), unless 0.85 is over the cores' capacity: a core made short by spreading is
    # one the next plan relieves again (found by the property test below).
    for limit, moves in ((1.0, 1), (0.8, 0)):
        load = np.array([0.3, 0.3, 0.35, 0.55])
        core_load = np.array([0.95, 0.55])
        new_core = np.array([0, 0, 0, 1], np.int32)
        left = _spread(core_load, np.array([0, 1]), np.ones(4, bool), load, new_core,
                       np.zeros(4, bool), 8, limit)
        assert 8 - left == moves, limit
        assert core_load.max() <= max(limit, 0.95)


def _typical_rebalance(typ: list[float], env: list[float], cores_of: list[int], ncores: int,
                       budget: int = 8) -> tuple[int, np.ndarray]:
    """_rebalance on typical loads `typ` and envelopes `env` (every core saturated)."""
    typical, load = np.asarray(typ), np.asarray(env)
    new_core = np.asarray(cores_of, np.int32)
    core_load = np.bincount(new_core, weights=load, minlength=ncores).astype(np.float64)
    typ_core = np.bincount(new_core, weights=typical, minlength=ncores).astype(np.float64)
    left = _rebalance(core_load, np.arange(ncores), np.ones(len(typ), bool), load, new_core,
                      np.zeros(len(typ), bool), budget, Placement(), limit=0.9,
                      saturated=np.ones(ncores, bool), typical=typical, typ_core=typ_core)
    return budget - left, new_core


def test_a_core_short_only_by_its_envelope_is_not_relieved() -> None:
    # Two tunnels whose peaks add up to 1.4 cores but whose means to 0.8: noise saturates
    # the core now and then, and a move would win nothing back for long. Judged on the
    # envelope alone (the old behaviour), one of them moves to the idle core.
    moves, _ = _typical_rebalance([0.4, 0.4, 0.05], [0.7, 0.7, 0.05], [0, 0, 1], 2)
    assert moves == 0
    moves, _ = _typical_rebalance([0.7, 0.7, 0.05], [0.7, 0.7, 0.05], [0, 0, 1], 2)
    assert moves == 1


def test_a_saturated_core_is_short_only_past_the_censoring_margin() -> None:
    # A saturated core's censored tunnels read about a tenth over what they get: 1.1
    # cores is full, not short. Past a whole core by SHORT_MARGIN it is relieved.
    under = (1.0 + SHORT_MARGIN) / 2 - 0.01
    moves, _ = _typical_rebalance([under, under, 0.05], [under, under, 0.05], [0, 0, 1], 2)
    assert moves == 0
    over = (1.0 + SHORT_MARGIN) / 2 + 0.05
    moves, _ = _typical_rebalance([over, over, 0.05], [over, over, 0.05], [0, 0, 1], 2)
    assert moves == 1


def test_relief_never_fills_the_cold_core_past_capacity() -> None:
    # A saturated pair (0.7 + 0.6) and cores holding 0.5 each: a move makes a new
    # saturated pair (1.1 or 1.2) and would gain 0.4 cores on paper; the shortness would
    # only travel from core to core, a move per dwell. With a core holding 0.25, the 0.6
    # fits there (0.85): one move.
    moves, _ = _typical_rebalance([0.7, 0.6, 0.5, 0.5], [0.7, 0.6, 0.5, 0.5],
                                  [0, 0, 1, 2], 3)
    assert moves == 0
    moves, where = _typical_rebalance([0.7, 0.6, 0.5, 0.25], [0.7, 0.6, 0.5, 0.25],
                                      [0, 0, 1, 2], 3)
    assert moves == 1 and where.tolist() == [0, 2, 1, 2]


def test_a_full_core_gives_a_tunnel_to_an_empty_core() -> None:
    # A capped tunnel read as 0.9 of a core sharing a saturated core with a 0.2 one: 1.1
    # cores, full but not short. With an empty core beside it, one of the two moves there
    # and the big one has a core to itself (alone and still capped, its estimate
    # compounds and the assignment can give it vanilla). Without an empty core (0.5 on
    # each other core) nothing moves: full is not short.
    moves, where = _typical_rebalance([0.9, 0.2, 0.5], [0.9, 0.2, 0.5], [0, 0, 1], 3)
    assert moves == 1 and where[0] != where[1] and 2 in where.tolist()
    moves, _ = _typical_rebalance([0.9, 0.2, 0.5, 0.5], [0.9, 0.2, 0.5, 0.5],
                                  [0, 0, 1, 2], 3)
    assert moves == 0


def test_a_full_core_is_left_to_its_largest_tunnel_when_the_others_are_small() -> None:
    # A 0.95 tunnel with three 0.03 mice on a saturated core (full, not short; no single
    # mouse move gains MOVE_GAIN): the mice go to cores with room and the big tunnel is
    # left alone. Not when the others are more than SHORT_MARGIN together (a pair that
    # only fills its core is not relieved), nor past the budget, nor without room.
    typ = [0.95, 0.03, 0.03, 0.03, 0.5, 0.6]
    env = [1.0, 0.03, 0.03, 0.03, 0.55, 0.65]
    moves, where = _typical_rebalance(typ, env, [0, 0, 0, 0, 1, 2], 3)
    assert moves == 3 and (where[1:4] != 0).all() and where[0] == 0
    moves, _ = _typical_rebalance(typ, env, [0, 0, 0, 0, 1, 2], 3, budget=2)
    assert moves == 0
    moves, _ = _typical_rebalance([0.8, 0.3, 0.5, 0.5], [0.8, 0.3, 0.5, 0.5], [0, 0, 1, 2], 3)
    assert moves == 0
    moves, _ = _typical_rebalance([0.95, 0.03, 0.03, 0.03, 0.89, 0.89],
                                  [1.0, 0.03, 0.03, 0.03, 0.89, 0.89], [0, 0, 0, 0, 1, 2], 3)
    assert moves == 0


def test_spreading_does_not_shuffle_mice() -> None:
    # Typical loads 0.9 against 0.5 (a gap over SPREAD_GAP) on a core of mice of 0.03:
    # each move evens the cores by 0.06, under MOVE_GAIN: no move. A 0.2 tunnel there
    # evens them by 0.4: one move.
    for small, moves in ((0.03, 0), (0.2, 1)):
        n_mice = round((0.9 - small) / 0.03)
        load = np.array([small] + [0.03] * n_mice + [0.5])
        new_core = np.array([0] * (n_mice + 1) + [1], np.int32)
        core_load = np.bincount(new_core, weights=load, minlength=2).astype(np.float64)
        left = _spread(core_load, np.array([0, 1]), np.ones(load.size, bool), load, new_core,
                       np.zeros(load.size, bool), 8, 1.0, load.copy(), core_load.copy())
        assert 8 - left == moves, small


def test_moves_made_by_evening_out_are_marked() -> None:
    # 0.5 + 0.4 against 0.05: evened out by one move, which the plan marks as such (the
    # controller's Reason says "spread"; read off the source core's load alone, a move
    # evening out a core whose censored tunnels read over the shortness margin was
    # labelled "core-short", as were 13 of steady-noisy's 18 moves after the warm-up).
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.5, 0.4, 0.05], cores=2)
    out = plan_operations(inp, Placement())
    moved = out.core != inp.core
    assert moved.sum() == 1 and out.spread.tolist() == moved.tolist()
    # A relief move is not marked.
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.7, 0.6, 0.05], cores=2)
    out = plan_operations(inp, Placement())
    assert (out.core != inp.core).sum() == 1 and not out.spread.any()


def test_threaded_napi_follows_policy() -> None:
    inp = make([Mode.INLINE], core=[0])
    assert plan_operations(inp, Placement(threaded_napi=NapiPolicy.AUTO)).plan == ()
    out = plan_operations(inp, Placement(threaded_napi=NapiPolicy.ON))
    assert out.plan == (SetThreadedNapi("wg0", True),)


situations = st.integers(1, 40).flatmap(
    lambda n: st.tuples(
        st.lists(st.sampled_from([Mode.VANILLA, Mode.INLINE]), min_size=n, max_size=n),
        st.lists(st.sampled_from([Mode.VANILLA, Mode.INLINE]), min_size=n, max_size=n),
        st.lists(st.integers(-1, 15), min_size=n, max_size=n),
        st.lists(st.floats(0.0, 0.5), min_size=n, max_size=n),
        st.lists(st.booleans(), min_size=n, max_size=n),
        st.integers(2, 16),
    )
)


@settings(max_examples=300, deadline=None)
@given(situations)
def test_applying_a_plan_then_planning_again_yields_nothing(s: tuple) -> None:
    mode, want, core, load, elig, ncores = s
    core = [c if c < ncores else -1 for c in core]
    inp = make(mode, want, core, load, cores=ncores)
    inp = replace(inp, eligible=np.asarray(elig))
    params = Placement(max_moves=10**6)
    first = plan_operations(inp, params)
    again = plan_operations(applied(inp, first), params)
    assert again.plan == ()


@settings(max_examples=300, deadline=None)
@given(situations)
def test_no_core_is_oversubscribed_by_a_plan(s: tuple) -> None:
    """With enough room (mean inline load per inline core <= 0.5), no core's inline
    load exceeds one core by MOVE_GAIN or more (a smaller excess is tolerated: moving for
    it would be churn), and inline tunnels stay off the crypt pool."""
    mode, want, core, load, elig, ncores = s
    core = [c if c < ncores else -1 for c in core]
    inp = make(mode, want, core, load, cores=ncores)
    out = plan_operations(inp, Placement(max_moves=10**6))
    inline = out.mode == Mode.INLINE
    inline_cores = [c for c in range(ncores) if c not in out.pool]
    demand = float(np.maximum(np.asarray(load), MIN_LOAD)[inline].sum())
    if not inline.any() or not inline_cores or demand > 0.5 * len(inline_cores):
        return
    per_core = np.bincount(out.core[inline], weights=np.maximum(np.asarray(load), MIN_LOAD)[inline],
                           minlength=ncores)
    assert per_core.max() < 1.0 + MOVE_GAIN
    assert not set(out.core[inline].tolist()) & out.pool
    if out.pool:
        assert set(out.core[~inline].tolist()) <= out.pool


def test_pinned_tunnels_overloading_a_core_do_not_break_rebalancing() -> None:
    # Two pinned inline tunnels fill core 0 past one core: nothing there may move, and
    # the planner must say so rather than fail.
    inp = make([Mode.INLINE] * 3, core=[0, 0, 1], load=[0.7, 0.6, 0.1], cores=2)
    inp = replace(inp, pin_core=np.array([0, 0, -1], np.int32),
                  pin_mode=np.array([Mode.INLINE, Mode.INLINE, -1], np.int8))
    out = plan_operations(inp, Placement())
    assert out.core.tolist() == [0, 0, 1]


@settings(max_examples=200, deadline=None)
@given(situations, st.data())
def test_pins_never_break_the_planner(s: tuple, data: st.DataObject) -> None:
    mode, want, core, load, elig, ncores = s
    n = len(mode)
    core = [c if c < ncores else -1 for c in core]
    inp = make(mode, want, core, load, cores=ncores)
    pin_mode = data.draw(st.lists(st.sampled_from([-1, Mode.VANILLA, Mode.INLINE]),
                                  min_size=n, max_size=n))
    pin_core = data.draw(st.lists(st.integers(-1, ncores - 1), min_size=n, max_size=n))
    inp = replace(inp, pin_mode=np.asarray(pin_mode, np.int8),
                  pin_core=np.asarray(pin_core, np.int32))
    out = plan_operations(inp, Placement())
    pinned = np.asarray(pin_mode) >= 0
    assert (out.mode[pinned] == np.asarray(pin_mode)[pinned]).all()
    has_core = np.asarray(pin_core) >= 0
    assert (out.core[has_core] == np.asarray(pin_core)[has_core]).all()
