"""The controller's decisions on the simulated gateway, tick by tick (no daemon, no I/O).

Each case is a small scenario of one of the kinds the controller is judged on (flash
crowd on a shared core, overload, steady noise, oscillation); the controller only sees
the counters the simulated kernel exposes, as it would on a real gateway.
"""

from __future__ import annotations

import numpy as np
import pytest

from wghybrid.core.controller import Controller
from wghybrid.model import Mode, SetPeerCore, SetPeerMode
from wghybrid.policy.load import load_policy, shipped_policy_path
from wghybrid.sim import SimGateway, parse_scenario

pytestmark = pytest.mark.sim


def run(toml: str, seconds: int) -> tuple[SimGateway, list[np.ndarray]]:
    sc = parse_scenario(toml)
    gw = SimGateway(sc)
    ctl = Controller(load_policy(shipped_policy_path("default"), online_cores=sc.cores))
    modes = []
    for t in range(1, seconds + 1):
        gw.advance(float(t))
        for op in ctl.plan(gw.sample(), (), float(t)):
            gw.apply(op)
        modes.append(gw.mode.copy())
    return gw, modes


def changes(gw: SimGateway, after: float, kind: type) -> list[tuple[float, bytes]]:
    out = []
    for t, op in gw.log:
        if t > after and isinstance(op, kind):
            out.append((t, op.public_key))
    return out


def test_a_flash_crowd_on_a_shared_core_gets_vanilla_within_three_ticks() -> None:
    # 8 cores, 12 tunnels: some share cores. Tunnel crowd-0 rises from 0.4 to 4.5 Gbps at
    # t = 60 (past its dwell); the gateway has CPU to spare.
    gw, modes = run("""
name = "flash"
cores = 8
duration = 120
seed = 3
[[group]]
name = "crowd"
count = 1
gbps = 0.4
initial_mode = "inline"
ramp = {start = 60, end = 61, to = 4.5}
[[group]]
name = "mouse"
count = 11
gbps = 0.4
spread = 0.5
initial_mode = "inline"
""", 120)
    became = next(t for t, m in enumerate(modes, start=1) if m[0] == Mode.VANILLA)
    assert 60 < became <= 61 + 3, f"vanilla at t={became}"
    assert set(modes[-1][1:].tolist()) == {Mode.INLINE}


def test_overload_keeps_the_efficient_mode_and_does_not_oscillate() -> None:
    # 24 tunnels wanting 3 Gbps each on 8 cores: 72 Gbps offered, ~22 Gbps possible.
    # Found vanilla (upstream), they go inline once and stay.
    gw, modes = run("""
name = "overload"
cores = 8
duration = 200
seed = 5
[[group]]
name = "t"
count = 24
gbps = 3.0
spread = 0.2
noise = { sigma = 0.1, tau = 10.0 }
""", 200)
    final = modes[-1]
    assert (final == Mode.INLINE).sum() >= 20
    per_tunnel = np.sum(np.diff(np.asarray(modes), axis=0) != 0, axis=0)
    assert per_tunnel.max() <= 1, per_tunnel.tolist()


def test_steady_noise_changes_no_mode_and_moves_almost_no_core_once_settled() -> None:
    gw, _ = run("""
name = "steady"
cores = 8
duration = 300
seed = 11
[[group]]
name = "mouse"
count = 40
gbps = 0.25
spread = 0.6
initial_mode = "vanilla"
noise = { sigma = 0.3, tau = 5.0 }
[[group]]
name = "big"
count = 1
gbps = 4.0
initial_mode = "vanilla"
noise = { sigma = 0.3, tau = 5.0 }
""", 300)
    assert changes(gw, 60.0, SetPeerMode) == []
    assert len(changes(gw, 60.0, SetPeerCore)) <= 1


def test_out_of_phase_oscillation_changes_mode_once_per_change_of_class() -> None:
    # Two tunnels alternate between 1 and 4.5 Gbps every 60 s, in opposite phase.
    gw, modes = run("""
name = "osc"
cores = 8
duration = 360
seed = 2
[[group]]
name = "osc"
count = 2
initial_mode = "inline"
oscillation = { period = 120, low = 1.0, high = 4.5, shape = "square", phase_step = 0.5 }
[[group]]
name = "mouse"
count = 6
gbps = 0.3
initial_mode = "inline"
""", 360)
    m = np.asarray(modes)
    flips = np.sum(np.diff(m, axis=0) != 0, axis=0)
    # 360 s = 3 periods: at most 6 class changes per oscillating tunnel; the mice never.
    assert flips[:2].max() <= 6 and flips[2:].max() == 0
    # And it does follow the load: vanilla for some of the high phases.
    assert (m[:, 0] == Mode.VANILLA).any() and (m[:, 1] == Mode.VANILLA).any()
