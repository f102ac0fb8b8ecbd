"""Estimation and assignment: censored demand is found out; the gateway-wide choice."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.core.assign import SHARED_INLINE, Model, assign, pack
from wghybrid.core.estimate import Cap, Costs, alone, censoring, update_demand
from wghybrid.model import Mode

pytestmark = pytest.mark.unit

COSTS = Costs()
CAP_I = COSTS.inline_tunnel_gbps  # 2.8


def choose(demand: list[float], mode: list[int], cores: int = 32, pool: int = 0,
           free: list[bool] | None = None) -> tuple[list[int], int, str]:
    d = np.asarray(demand, np.float64)
    m = np.asarray(mode, np.uint8)
    f = np.ones(d.shape[0], bool) if free is None else np.asarray(free)
    a = assign(d, m, f, COSTS, cores, pool, promote_gbps=2.0, demote_gbps=1.0, pool_min=2,
               min_gain=0.03)
    return [int(Mode.VANILLA if v else Mode.INLINE) for v in a.vanilla], a.pool, a.rule


def test_pack_is_lpt_with_a_fluid_tail() -> None:
    assert pack(np.array([0.5, 0.5, 0.5]), 2) == pytest.approx(1.5)  # 1.0 + 0.5
    assert pack(np.array([1.5, 0.2]), 2) == pytest.approx(1.2)  # capped at one core each
    assert pack(np.array([0.6] * 4), 2) == pytest.approx(2.0)
    assert pack(np.array([]), 4) == 0.0
    assert pack(np.array([0.3]), 0) == 0.0


def test_spare_cpu_gives_an_elephant_vanilla() -> None:
    modes, pool, rule = choose([8.0] + [0.2] * 20, [Mode.INLINE] * 21)
    assert modes[0] == Mode.VANILLA and set(modes[1:]) == {Mode.INLINE}
    assert pool >= 2 and rule == "throughput"


def test_overload_keeps_everyone_inline() -> None:
    # 64 tunnels wanting 3 Gbps on 32 cores: vanilla costs more per Gbps, so no tunnel
    # gets it, however much it wants (the most efficient assignment wins).
    modes, pool, _ = choose([3.0] * 64, [Mode.INLINE] * 64)
    assert set(modes) == {Mode.INLINE} and pool == 0


def test_overload_demotes_vanilla_tunnels_to_inline() -> None:
    modes, _, rule = choose([3.0] * 64, [Mode.VANILLA] * 64, pool=32)
    assert modes.count(Mode.INLINE) > 48 and rule == "throughput"


def test_more_tunnels_than_cores_are_not_left_vanilla() -> None:
    # 48 tunnels at ~2 Gbps on 32 cores, all found vanilla (upstream): most go inline.
    rng = np.random.default_rng(1)
    d = list(rng.uniform(1.5, 2.5, 48))
    modes, _, _ = choose(d, [Mode.VANILLA] * 48, pool=32)
    assert modes.count(Mode.INLINE) >= 40


def test_small_gains_keep_the_current_assignment() -> None:
    # Nothing to gain: the current assignment is kept, pool included.
    modes, pool, rule = choose([6.0, 0.3, 0.3], [Mode.VANILLA, Mode.INLINE, Mode.INLINE],
                               pool=4)
    assert modes == [Mode.VANILLA, Mode.INLINE, Mode.INLINE] and rule == "kept" and pool == 4


def test_pinned_and_dwelling_tunnels_keep_their_mode() -> None:
    modes, _, _ = choose([8.0, 0.1], [Mode.INLINE, Mode.VANILLA], free=[False, False])
    assert modes == [Mode.INLINE, Mode.VANILLA]


def test_below_demote_goes_inline_whatever_the_gain() -> None:
    modes, _, rule = choose([0.01, 6.0], [Mode.VANILLA, Mode.VANILLA], pool=8)
    assert modes[0] == Mode.INLINE and modes[1] == Mode.VANILLA


def test_below_demote_goes_inline_also_when_the_search_keeps_everything() -> None:
    # An idle vanilla tunnel beside an inline one: the search's best is the current
    # assignment (nothing to gain either way), and the floor still sends it inline (seen
    # in the kernel e2e: a tunnel an override had made vanilla never came back).
    for cores in (2, 32):
        for heavy in (0.0, 0.3, 2.0):
            modes, _, rule = choose([0.0, heavy], [Mode.VANILLA, Mode.INLINE], cores=cores,
                                    pool=1)
            assert modes == [Mode.INLINE, Mode.INLINE] and rule == "floor", (cores, heavy)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.0, 12.0), min_size=1, max_size=60), st.integers(2, 32))
def test_the_choice_never_scores_below_the_current_one(demand: list[float], cores: int) -> None:
    d = np.asarray(demand)
    m = np.full(d.shape[0], Mode.INLINE, np.uint8)
    a = assign(d, m, np.ones(d.shape[0], bool), COSTS, cores, 0, promote_gbps=2.0,
               demote_gbps=1.0, pool_min=2, min_gain=0.03)
    assert a.chosen.gbps >= a.current.gbps * (1 - 3e-3) - 1e-9
    assert 0 <= a.pool <= cores
    if a.pool == cores and not a.vanilla.all():
        # a shared pool only where the inline tunnels are too light to need a core
        assert float(d[~a.vanilla].sum()) * COSTS.inline < SHARED_INLINE
    if a.vanilla.any():
        assert a.pool >= 1


def test_censoring_reads_inline_work_not_busy_time() -> None:
    gbps = np.array([2.8, 0.5, 0.5, 4.5])
    cpu = np.array([1.0, 0.18, 0.18, 2.2])
    mode = np.array([Mode.INLINE, Mode.INLINE, Mode.INLINE, Mode.VANILLA], np.uint8)
    core = np.array([0, 1, 1, 3], np.int32)
    # core 1 is busy (threads fill it) but its inline tunnels use 0.36 of it: not capped.
    busy = np.array([1.0, 1.0, 0.2, 0.5])
    cause = censoring(gbps, cpu, gbps, np.zeros(4), mode, core, busy, frozenset({2, 3}),
                      COSTS, 0.95)
    assert cause.tolist() == [Cap.CORE, Cap.NONE, Cap.NONE, Cap.SERIAL]


def test_a_censored_solitary_tunnel_is_found_out_within_three_ticks() -> None:
    # Inline, alone on its core, capped at 2.8 while it wants 4.5: the estimate must pass
    # what inline can carry (so the assignment offers vanilla) within three readings.
    prev = None
    for tick in range(3):
        cause = np.array([Cap.CORE if tick else Cap.NONE], np.uint8)
        measured = np.array([1.0 if tick == 0 else CAP_I])
        prev = update_demand(prev, measured, cause, np.array([True]), 1.0, 0.3, 15.0, 3.0,
                             grow=np.array([True]), ceiling=6.5)
    assert prev is not None and prev.gbps[0] > CAP_I * 1.25
    assert prev.gbps[0] <= 6.5


def test_a_censored_shared_core_does_not_compound() -> None:
    prev = None
    for _ in range(10):
        prev = update_demand(prev, np.array([1.4, 1.4]), np.array([Cap.CORE, Cap.CORE],
                             np.uint8), np.array([True, True]), 1.0, 0.3, 15.0, 3.0,
                             grow=np.array([False, False]), ceiling=6.5)
    # read as a third of the probe above what it got, and not held: no compounding
    assert prev is not None and np.allclose(prev.gbps, 1.4 * (1 + 0.3 / 3))


def test_demand_falls_slowly_in_the_envelope_and_follows_in_the_mean() -> None:
    prev = update_demand(None, np.array([4.0]), np.zeros(1, np.uint8), np.array([True]), 1.0,
                         0.3, 15.0, 3.0)
    for _ in range(3):
        prev = update_demand(prev, np.array([1.0]), np.zeros(1, np.uint8), np.array([True]),
                             1.0, 0.3, 15.0, 3.0)
    assert prev.gbps[0] < 2.6  # the mean: three 3-s half-lives' worth towards 1.0
    assert prev.peak[0] > 3.4  # the envelope: 15-s half-life


def test_alone_counts_inline_tunnels_per_core() -> None:
    mode = np.array([Mode.INLINE, Mode.INLINE, Mode.INLINE, Mode.VANILLA], np.uint8)
    core = np.array([0, 1, 1, 0], np.int32)
    assert alone(mode, core, 4).tolist() == [True, False, False, False]


def test_vanilla_cost_rises_with_vanilla_load() -> None:
    c = Costs()
    assert c.vanilla_cost(13.0) < c.vanilla_cost(48.0) == pytest.approx(c.vanilla)
    # capacity inverts cost: s * cost(s) == cores
    s = c.vanilla_capacity(10.0)
    assert s * c.vanilla_cost(s) == pytest.approx(10.0, rel=1e-6)
    m = Model(np.array([5.0, 5.0]), c, 8)
    assert m.score(np.array([True, True]), 8).gbps == pytest.approx(10.0)


@settings(max_examples=200, deadline=None)
@given(demand=st.lists(st.one_of(st.sampled_from([0.0, -0.0, 0.5, 1.0, 2.0, float("nan")]),
                                 st.floats(0, 10)), min_size=1, max_size=400),
       ncores=st.integers(1, 8), vanilla=st.lists(st.integers(0, 399), max_size=60))
def test_the_model_orders_only_the_head_and_scores_as_a_full_sort(
    demand: list[float], ncores: int, vanilla: list[int],
) -> None:
    """The head of the tunnels by demand (ties in row order) is what a stable sort of all
    of them gives, however far a vanilla set makes scoring look; and a model of many
    tunnels orders only that head."""
    d = np.array(demand)
    m = Model(d, Costs(), ncores)
    full = np.argsort(-np.maximum(d, 0.0), kind="stable")
    vidx = np.unique(np.array([v for v in vanilla if v < d.shape[0]], dtype=np.int64))
    m.view(vidx)
    k = m.order.shape[0]
    assert k >= min(d.shape[0], 2 * ncores + vidx.shape[0])
    assert m.order.tolist() == full[:k].tolist()
    assert (m.rank[full[:k]] == np.arange(k)).all() and (np.delete(m.rank, full[:k]) >= k).all()


def test_a_model_of_many_tunnels_sorts_only_the_head() -> None:
    d = np.random.default_rng(1).lognormal(-3.0, 1.5, 100_000)
    m = Model(d, Costs(), 32)
    m.score(d > 3.0, 4)
    assert 64 <= m.order.shape[0] < 1_000
    assert m.order.tolist() == np.argsort(-d, kind="stable")[:m.order.shape[0]].tolist()
