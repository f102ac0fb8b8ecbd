"""Invariants of the gateway model, for any load and configuration (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.model import Mode
from wghybrid.sim import GatewayModel, default_cores

pytestmark = pytest.mark.unit

CORES = 8
MODEL = GatewayModel(cores=CORES)


@st.composite
def configs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, frozenset[int], bool]:
    n = draw(st.integers(0, 40))
    gbps = st.floats(0.0, 20.0, allow_nan=False)
    offered = np.array(draw(st.lists(gbps, min_size=n, max_size=n)), dtype=np.float64)
    mode = np.array(draw(st.lists(st.sampled_from([0, 1]), min_size=n, max_size=n)),
                    dtype=np.uint8)
    core = np.array(draw(st.lists(st.integers(-1, CORES - 1), min_size=n, max_size=n)),
                    dtype=np.int32)
    pool = frozenset(draw(st.sets(st.integers(0, CORES - 1), min_size=1)))
    return offered, mode, core, pool, draw(st.booleans())


@st.composite
def devices(draw: st.DrawFn) -> tuple[np.ndarray, list[frozenset[int]], list[bool]]:
    n = draw(st.integers(0, 40))
    ndev = draw(st.integers(1, 3))
    iface = np.array(draw(st.lists(st.integers(0, ndev - 1), min_size=n, max_size=n)),
                     dtype=np.int32)
    pools = [frozenset(draw(st.sets(st.integers(0, CORES - 1), min_size=1)))
             for _ in range(ndev)]
    return iface, pools, [draw(st.booleans()) for _ in range(ndev)]


@settings(max_examples=300, deadline=None)
@given(configs(), st.none() | devices())
def test_conservation_and_bounds(cfg: tuple, devs: tuple | None) -> None:
    offered, mode, core, pool, threaded = cfg
    if devs is None:
        ev = MODEL.evaluate(offered, mode, core, pool, threaded)
    else:
        iface, pools, flags = devs
        n = min(len(offered), len(iface))
        offered, mode, core, iface = offered[:n], mode[:n], core[:n], iface[:n]
        ev = MODEL.evaluate(offered, mode, core, pools, flags, iface)
    assert np.all(ev.delivered_gbps >= -1e-9)
    assert np.all(ev.delivered_gbps <= offered + 1e-9)
    assert np.all(ev.core_busy >= 0.0) and np.all(ev.core_busy <= 1.0 + 1e-12)
    # Every core-second the tunnels are charged for is a busy core-second somewhere.
    charged = float((ev.cpu_rx + ev.cpu_tx).sum())
    assert charged == pytest.approx(ev.cores_used, rel=1e-6, abs=1e-9)
    # One tunnel never exceeds what its serial stage can carry.
    cap = np.where(mode == Mode.INLINE, 2.8, 5.0)
    assert np.all(ev.delivered_gbps <= cap * 1.0001)


@settings(max_examples=200, deadline=None)
@given(configs(), st.floats(1.05, 3.0))
def test_more_offered_load_never_reduces_total_throughput_of_inline(cfg: tuple,
                                                                     k: float) -> None:
    offered, _, core, pool, threaded = cfg
    inline = np.ones_like(core, dtype=np.uint8)
    placed = np.where(core < 0, default_cores(len(core), CORES), core)
    # Inline only: each core's total is min(1 core, demand): monotone in the load.
    lo = MODEL.evaluate(offered, inline, placed, pool, threaded)
    hi = MODEL.evaluate(offered * k, inline, placed, pool, threaded)
    assert hi.total_gbps >= lo.total_gbps - 1e-9


def test_core_busy_never_goes_below_zero() -> None:
    # Found by test_conservation_and_bounds: core 1 carries only vanilla tunnels of devices
    # 0 and 1, both scaled to 0 (their pool, core 0, is full of an inline tunnel), and
    # `used - own[d]` left -5.6e-17 there.
    ev = MODEL.evaluate(np.array([1.5, 2.0, 6.0, 1.0]), np.array([0, 0, 1, 0], np.uint8),
                        np.array([1, 2, 0, 1], np.int32), [frozenset({0})] * 3,
                        [False, False, False], np.array([1, 2, 0, 0], np.int32))
    assert ev.core_busy.min() >= 0.0


def test_default_placement_is_round_robin() -> None:
    ev = MODEL.evaluate(np.ones(10), np.ones(10, np.uint8), np.full(10, -1, np.int32),
                        frozenset({0}), True)
    assert ev.core.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]


def test_empty_pool_starves_vanilla_only() -> None:
    ev = MODEL.evaluate(np.array([3.0, 1.0]), np.array([0, 1], np.uint8),
                        np.array([0, 1], np.int32), frozenset(), True)
    assert ev.delivered_gbps.tolist() == [0.0, 1.0]


def test_rejects_cores_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        MODEL.evaluate(np.ones(1), np.ones(1, np.uint8), np.array([CORES], np.int32),
                       frozenset({0}), True)


def test_no_tunnels() -> None:
    ev = MODEL.evaluate(np.zeros(0), np.zeros(0, np.uint8), np.zeros(0, np.int32),
                        frozenset({0}), False)
    assert ev.total_gbps == 0.0 and ev.cores_used == 0.0


def test_one_device_by_index_is_the_same_as_no_index() -> None:
    rng = np.random.default_rng(3)
    offered = rng.exponential(2.0, 30)
    mode = rng.integers(0, 2, 30).astype(np.uint8)
    core = rng.integers(-1, CORES, 30).astype(np.int32)
    a = MODEL.evaluate(offered, mode, core, frozenset({5, 6, 7}), False)
    b = MODEL.evaluate(offered, mode, core, [frozenset({5, 6, 7})], [False],
                       np.zeros(30, np.int32))
    assert np.allclose(a.delivered_gbps, b.delivered_gbps, rtol=1e-12, atol=0)
    assert np.allclose(a.core_busy, b.core_busy, rtol=1e-12, atol=0)
    assert a.black_hole_cores == b.black_hole_cores


def test_devices_with_disjoint_cores_do_not_interact() -> None:
    """Device 0 on cores 0-3, device 1 on cores 4-7, softirq NAPI (threaded NAPI threads
    may run on any core, so they would interact): each delivers what it would alone, and
    the crypt contention is per device (its own ring)."""
    offered = np.full(4, 9.0)
    mode = np.zeros(4, np.uint8)
    core = np.array([0, 1, 4, 5], np.int32)
    iface = np.array([0, 0, 1, 1], np.int32)
    pools = [frozenset(range(4)), frozenset(range(4, 8))]
    flags = [False, False]
    both = MODEL.evaluate(offered, mode, core, pools, flags, iface)
    alone0 = MODEL.evaluate(np.r_[offered[:2], 0, 0], mode, core, pools, flags, iface)
    alone1 = MODEL.evaluate(np.r_[0, 0, offered[2:]], mode, core, pools, flags, iface)
    assert both.delivered_gbps[:2] == pytest.approx(alone0.delivered_gbps[:2])
    assert both.delivered_gbps[2:] == pytest.approx(alone1.delivered_gbps[2:])
    assert both.black_hole_cores == (3, 7)
    assert both.total_gbps > 0.9 * 4 * 5.0


def test_devices_sharing_a_short_pool_are_served_in_order() -> None:
    offered = np.full(8, 9.0)
    mode = np.zeros(8, np.uint8)
    core = np.array([0, 1, 2, 3, 0, 1, 2, 3], np.int32)
    iface = np.array([0, 0, 0, 0, 1, 1, 1, 1], np.int32)
    pool = frozenset({4, 5})
    ev = MODEL.evaluate(offered, mode, core, [pool, pool], [True, True], iface)
    assert ev.delivered_gbps[:4].sum() > ev.delivered_gbps[4:].sum()
    assert ev.core_busy[[4, 5]] == pytest.approx([1.0, 1.0])
