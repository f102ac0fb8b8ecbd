"""The oracle: never worse than either static mode, and the obvious answers on clear cases."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.model import Mode
from wghybrid.sim import GatewayModel, load_scenario, oracle

pytestmark = pytest.mark.unit

MODEL = GatewayModel(cores=32)
ALL = frozenset(range(32))


def static(offered: np.ndarray, mode: Mode) -> float:
    n = offered.shape[0]
    return MODEL.evaluate(offered, np.full(n, mode, np.uint8), np.full(n, -1, np.int32),
                          ALL, True).total_gbps


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 12.0, allow_nan=False), min_size=1, max_size=80))
def test_never_worse_than_a_static_mode(loads: list[float]) -> None:
    offered = np.array(loads)
    r = oracle(MODEL, offered)
    best = max(static(offered, Mode.VANILLA), static(offered, Mode.INLINE))
    assert r.delivered_gbps_total >= best * (1 - 1e-3) - 1e-9
    assert r.delivered_gbps_total == pytest.approx(r.evaluation.total_gbps)
    assert r.delivered_gbps_total <= offered.sum() + 1e-9
    # The configuration it reports is the one it evaluated.
    ev = MODEL.evaluate(offered, r.mode, r.core, r.crypt_cores, r.threaded_napi)
    assert ev.total_gbps == pytest.approx(r.delivered_gbps_total)


def test_mice_go_inline_one_core_each_when_possible() -> None:
    r = oracle(MODEL, np.full(20, 1.0))
    assert np.all(r.mode == Mode.INLINE)
    assert len(set(r.core.tolist())) == 20
    assert r.delivered_gbps_total == pytest.approx(20.0)


def test_elephants_go_vanilla_mice_inline_on_other_cores() -> None:
    offered = np.r_[np.full(4, 9.0), np.full(100, 0.2)]
    r = oracle(MODEL, offered)
    assert np.all(r.mode[:4] == Mode.VANILLA) and np.all(r.mode[4:] == Mode.INLINE)
    assert not set(r.core[4:].tolist()) & r.crypt_cores
    assert r.delivered_gbps_total == pytest.approx(4 * 5.0 + 20.0, rel=0.02)


def test_prefers_fewer_cores_at_equal_throughput() -> None:
    offered = np.full(8, 0.5)  # both static modes deliver 4 Gbps
    r = oracle(MODEL, offered)
    assert r.delivered_gbps_total == pytest.approx(4.0)
    assert np.all(r.mode == Mode.INLINE)


def test_restricted_cores() -> None:
    r = oracle(MODEL, np.full(10, 2.0), cores=frozenset({4, 5, 6}))
    assert set(r.core.tolist()) <= {4, 5, 6} and r.crypt_cores <= {4, 5, 6}
    with pytest.raises(ValueError):
        oracle(MODEL, np.ones(2), cores=frozenset())


def test_mixed_scenario_beats_static_modes_clearly() -> None:
    offered = load_scenario("mixed").offered(100.0)
    r = oracle(MODEL, offered)
    best = max(static(offered, Mode.VANILLA), static(offered, Mode.INLINE))
    assert r.delivered_gbps_total > 1.2 * best


def test_previous_answer_is_kept_when_nothing_is_gained() -> None:
    rng = np.random.default_rng(5)
    offered = rng.uniform(0.05, 0.4, 150)
    first = oracle(MODEL, offered)
    # Loads move a little; every tunnel still fits where it is.
    again = oracle(MODEL, offered * rng.uniform(0.95, 1.0, 150), previous=first)
    assert np.array_equal(again.mode, first.mode) and np.array_equal(again.core, first.core)
    assert again.crypt_cores == first.crypt_cores
    # An elephant appears: the previous answer no longer wins.
    grown = offered.copy()
    grown[:3] = 9.0
    moved = oracle(MODEL, grown, previous=first)
    assert np.all(moved.mode[:3] == Mode.VANILLA)
