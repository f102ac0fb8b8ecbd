"""Classification hysteresis: promote/demote levels, latent heat, saturation signal."""

from __future__ import annotations

import numpy as np
import pytest

from wghybrid.core.classify import Classes, adopt_classes, update_classes
from wghybrid.model import Mode, PeerClass
from wghybrid.policy import Classify

pytestmark = pytest.mark.unit

P = Classify(promote_gbps=2.0, demote_gbps=1.0, inline_saturation=0.85, latent_heat=5.0)


def run(pclass: int, gbps: float, cpu: float, inline: bool, seconds: int) -> list[int]:
    c = Classes(np.array([pclass], np.uint8), np.zeros(1))
    seen = []
    for _ in range(seconds):
        c = update_classes(c, np.array([gbps]), np.array([cpu]), np.array([inline]),
                           np.array([True]), 1.0, P)
        seen.append(int(c.pclass[0]))
    return seen


def test_adoption_matches_the_mode_found() -> None:
    c = adopt_classes(np.array([Mode.VANILLA, Mode.INLINE], np.uint8))
    assert list(c.pclass) == [PeerClass.ELEPHANT, PeerClass.MOUSE]


def test_sustained_excess_promotes_after_latent_heat() -> None:
    # 2x the threshold = excess 1.0 per second: 5 s of heat needed.
    seen = run(PeerClass.MOUSE, 4.0, 0.5, False, 6)
    assert seen == [0, 0, 0, 0, 1, 1]


def test_small_excess_takes_longer() -> None:
    seen = run(PeerClass.MOUSE, 2.2, 0.5, False, 60)  # 10 % over: 50 s
    assert seen.index(1) == 49


def test_between_thresholds_nothing_moves() -> None:
    assert run(PeerClass.MOUSE, 1.5, 0.4, True, 100) == [0] * 100
    assert run(PeerClass.ELEPHANT, 1.5, 0.4, False, 100) == [1] * 100


def test_saturated_inline_core_is_the_elephant_signal() -> None:
    # 1.9 Gbps is under promote, but the one core it has is full: it wants more.
    seen = run(PeerClass.MOUSE, 1.9, 1.0, True, 40)
    assert 1 in seen
    # The same rate and CPU on a vanilla path says nothing about saturation.
    assert run(PeerClass.MOUSE, 1.9, 1.0, False, 40) == [0] * 40


def test_vanilla_tunnel_falls_back_when_its_rate_drops() -> None:
    seen = run(PeerClass.ELEPHANT, 0.0, 0.0, False, 6)
    assert seen == [1, 1, 1, 1, 0, 0]


def test_a_burst_does_not_flip_and_heat_drains() -> None:
    c = Classes(np.array([0], np.uint8), np.zeros(1))
    one = np.array([True])
    for gbps in [10.0, 10.0, 10.0, 0.5, 0.5, 0.5, 0.5, 10.0, 10.0]:  # capped at +1/s
        c = update_classes(c, np.array([gbps]), np.zeros(1), one, one, 1.0, P)
    assert c.pclass[0] == PeerClass.MOUSE


def test_invalid_rates_keep_class_and_heat() -> None:
    c = Classes(np.array([0], np.uint8), np.array([3.0]))
    c2 = update_classes(c, np.array([100.0]), np.zeros(1), np.array([True]),
                        np.array([False]), 10.0, P)
    assert c2.pclass[0] == 0 and c2.heat[0] == 3.0
