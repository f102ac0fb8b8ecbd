"""The simulated DataPlane: counters, operations, errors, fault injection."""

from __future__ import annotations

import numpy as np
import pytest

from wghybrid.dataplane import DataPlane, PermanentError, TransientError
from wghybrid.model import Mode, SetCryptCores, SetPeerCore, SetPeerMode, SetThreadedNapi
from wghybrid.sim import (
    GatewayModel,
    ModelParams,
    Scenario,
    ScenarioError,
    SimDataPlane,
    SimGateway,
    TunnelSpec,
    load_scenario,
    parse_scenario,
)

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dp(clock: FakeClock) -> SimDataPlane:
    return SimDataPlane("mixed", clock=clock)


def test_is_a_dataplane(dp: SimDataPlane) -> None:
    assert isinstance(dp, DataPlane)


async def test_counters_integrate_delivered_rate(dp: SimDataPlane, clock: FakeClock) -> None:
    s0 = await dp.sample()
    assert s0.now == 0.0 and len(s0.peers) == len(dp.gateway.scenario.tunnels)
    assert int(s0.peers.rx_bytes.sum()) == 0
    clock.t = 5.0
    s1 = await dp.sample()
    assert s1.now == 5.0
    ev = dp.gateway.last
    assert ev is not None
    gbps = (s1.peers.rx_bytes - s0.peers.rx_bytes).astype(float) * 8 / 1e9 / 5.0
    # Offered load is nearly steady over 5 s, so the average is close to the last step.
    assert gbps.sum() == pytest.approx(ev.total_gbps, rel=0.05)
    cpu = (s1.peers.rx_cpu_ns + s1.peers.tx_cpu_ns).astype(float).sum() / 5e9
    busy = (s1.core_busy_ns - s0.core_busy_ns).astype(float).sum() / 5e9
    assert cpu == pytest.approx(busy, rel=1e-6)
    assert np.all(s1.peers.rx_packets >= s0.peers.rx_packets)
    assert np.all(s1.peers.tx_bytes > 0)


async def test_apply_changes_what_is_sampled(dp: SimDataPlane, clock: FakeClock) -> None:
    key = dp.gateway.scenario.tunnels[3].public_key
    await dp.apply(SetPeerMode("wg0", key, Mode.INLINE))
    await dp.apply(SetPeerCore("wg0", key, 17))
    await dp.apply(SetCryptCores("wg0", frozenset({20, 21})))
    await dp.apply(SetThreadedNapi("wg0", False))
    s = await dp.sample()
    row = int(np.flatnonzero(s.peers.key == key)[0])
    assert s.peers.mode[row] == Mode.INLINE and s.peers.core[row] == 17
    assert s.interfaces[0].crypt_cores == frozenset({20, 21})
    assert s.interfaces[0].threaded_napi is False


@pytest.mark.parametrize(
    ("op", "words"),
    [
        (SetPeerMode("wg0", b"\x01" * 32, Mode.INLINE), "no peer"),
        (SetPeerMode("wg9", b"\x01" * 32, Mode.INLINE), "wg9"),
        (SetCryptCores("wg0", frozenset({40})), "core 40"),
        (SetCryptCores("wg0", frozenset()), "empty"),
        (SetThreadedNapi("eth0", True), "eth0"),
    ],
)
async def test_bad_operations_are_permanent(dp: SimDataPlane, op: object, words: str) -> None:
    with pytest.raises(PermanentError, match=words):
        await dp.apply(op)  # type: ignore[arg-type]


async def test_core_out_of_range_is_permanent(dp: SimDataPlane) -> None:
    key = dp.gateway.scenario.tunnels[0].public_key
    with pytest.raises(PermanentError, match="core 32 does not exist"):
        await dp.apply(SetPeerCore("wg0", key, 32))
    with pytest.raises(PermanentError, match="core -1"):
        await dp.apply(SetPeerCore("wg0", key, -1))


async def test_injected_faults_are_consumed(dp: SimDataPlane) -> None:
    key = dp.gateway.scenario.tunnels[0].public_key
    dp.faults.transient_applies = 2
    for _ in range(2):
        with pytest.raises(TransientError):
            await dp.apply(SetPeerMode("wg0", key, Mode.INLINE))
    assert dp.gateway.mode[0] == Mode.VANILLA
    await dp.apply(SetPeerMode("wg0", key, Mode.INLINE))
    assert dp.gateway.mode[0] == Mode.INLINE
    dp.faults.permanent_applies = 1
    with pytest.raises(PermanentError):
        await dp.apply(SetPeerMode("wg0", key, Mode.VANILLA))
    dp.faults.transient_samples = 1
    with pytest.raises(TransientError):
        await dp.sample()
    assert len((await dp.sample()).peers) == len(dp.gateway.scenario.tunnels)


async def test_closed_refuses(dp: SimDataPlane) -> None:
    await dp.close()
    with pytest.raises(PermanentError):
        await dp.sample()


def test_peer_vanishes_and_returns_with_new_epoch() -> None:
    gw = SimGateway(load_scenario("mixed"))
    key = gw.scenario.tunnels[5].public_key
    gw.advance(2.0)
    gw.remove_peer(key)
    assert key not in set(gw.sample().peers.key.tolist())
    with pytest.raises(PermanentError):
        gw.apply(SetPeerMode("wg0", key, Mode.INLINE))
    gw.advance(3.0)
    gw.add_peer(key)
    s = gw.sample()
    row = int(np.flatnonzero(s.peers.key == key)[0])
    assert s.peers.epoch[row] == 1 and s.peers.rx_bytes[row] == 0


def test_reload_resets_counters_and_modes() -> None:
    gw = SimGateway(load_scenario("mixed"))
    gw.apply(SetPeerMode("wg0", gw.scenario.tunnels[0].public_key, Mode.INLINE))
    gw.advance(1.0)
    before = gw.sample()
    gw.reload()
    after = gw.sample()
    assert int(after.peers.rx_bytes.sum()) == 0 and np.all(after.peers.epoch == 1)
    assert np.all(after.peers.mode == Mode.VANILLA)
    assert np.all(after.core_busy_ns == before.core_busy_ns)  # /proc/stat does not reset


def _bytes_over(gw: SimGateway, row: int, t0: float, t1: float) -> float:
    gw.advance(t0)
    a = float(gw.rx_bytes[row])
    gw.advance(t1)
    return float(gw.rx_bytes[row]) - a


def test_a_change_of_path_costs_traffic_once() -> None:
    quiet = SimGateway(load_scenario("few-elephants"))
    moved = SimGateway(load_scenario("few-elephants"))
    key = moved.scenario.tunnels[0].public_key
    moved.advance(10.0)
    moved.apply(SetPeerCore("wg0", key, 0))  # its default core: not a change
    moved.apply(SetPeerMode("wg0", key, Mode.VANILLA))  # its mode already: not a change
    assert _bytes_over(moved, 0, 10.0, 11.0) == pytest.approx(
        _bytes_over(quiet, 0, 10.0, 11.0))
    moved.apply(SetPeerCore("wg0", key, 20))  # an idle core
    lost = _bytes_over(quiet, 0, 11.0, 12.0) - _bytes_over(moved, 0, 11.0, 12.0)
    rate = float(quiet.last.delivered_gbps[0]) * 1e9 / 8  # type: ignore[union-attr]
    cost = moved.model.params.switch_cost_s
    assert lost == pytest.approx(rate * cost, rel=0.05)
    assert _bytes_over(moved, 0, 12.0, 13.0) == pytest.approx(
        _bytes_over(quiet, 0, 12.0, 13.0))


def test_keys_read_back_from_a_peer_table_still_match() -> None:
    """numpy "S32" drops trailing NULs when an element is read; a key ending in 0x00 (one
    real key in 256) must still find its peer."""
    key = b"k" * 30 + b"\0\0"
    scenario = Scenario(name="nul", description="", cores=4, duration=10.0,
                        tunnels=(TunnelSpec("wg0", key, "t", 1, Mode.VANILLA),))
    gw = SimGateway(scenario)
    read_back = gw.sample().peers.key[0]
    assert bytes(read_back) == b"k" * 30
    gw.apply(SetPeerMode("wg0", bytes(read_back), Mode.INLINE))
    assert gw.mode[0] == Mode.INLINE


def test_scenario_keys_never_end_in_nul() -> None:
    for name in ("mixed", "steady-mice"):
        assert all(t.public_key[-1] != 0 for t in load_scenario(name).tunnels)


def test_model_and_scenario_are_exposed() -> None:
    model = GatewayModel(cores=32, params=ModelParams(switch_cost_s=0.0))
    dp = SimDataPlane("few-elephants", model=model)
    assert dp.model is model and dp.scenario.name == "few-elephants"


async def test_default_clock_runs_from_construction_at_speed() -> None:
    dp = SimDataPlane("few-elephants", speed=1000.0)
    a = await dp.sample()
    b = await dp.sample()
    assert 0.0 <= a.now <= b.now
    assert dp.gateway.time == b.now


def test_loop_replays_the_scenario() -> None:
    gw = SimGateway("elephants-churn", loop=True)
    duration = gw.scenario.duration
    assert np.array_equal(gw.offered(100.0), gw.offered(100.0 + duration))
    held = SimGateway("elephants-churn")
    assert np.array_equal(held.offered(duration + 100.0), held.offered(duration))


TWO_DEVICES = """
name = "two"
duration = 60
interface = "wg0"
[[group]]
name = "a"
count = 3
gbps = 9.0
[[group]]
name = "b"
interface = "wg1"
count = 2
gbps = 9.0
initial_mode = "inline"
"""


async def test_two_devices_each_with_its_own_pool_and_flag(clock: FakeClock) -> None:
    dp = SimDataPlane(parse_scenario(TWO_DEVICES), clock=clock)
    s = await dp.sample()
    assert [d.name for d in s.interfaces] == ["wg0", "wg1"]
    assert s.peers.iface.tolist() == [0, 0, 0, 1, 1]
    await dp.apply(SetCryptCores("wg1", frozenset({30, 31})))
    await dp.apply(SetThreadedNapi("wg0", False))
    s = await dp.sample()
    assert s.interfaces[0].crypt_cores == frozenset(range(32))
    assert s.interfaces[1].crypt_cores == frozenset({30, 31})
    assert [d.threaded_napi for d in s.interfaces] == [False, True]
    wg1_key = dp.scenario.tunnels[3].public_key
    with pytest.raises(PermanentError, match="no peer"):
        await dp.apply(SetPeerMode("wg0", wg1_key, Mode.VANILLA))  # right key, wrong device
    await dp.apply(SetPeerMode("wg1", wg1_key, Mode.VANILLA))
    assert dp.gateway.mode[3] == Mode.VANILLA
    clock.t = 2.0
    s = await dp.sample()
    assert np.all(s.peers.rx_bytes > 0)


def test_bad_device_name_is_rejected() -> None:
    with pytest.raises(ScenarioError, match=r"group\[1\]\.interface"):
        parse_scenario(TWO_DEVICES.replace('"wg1"', '"wg 1"'))
