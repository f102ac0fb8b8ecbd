"""The daemon's loop in-process, on the simulated data plane with injected faults.

A manual clock drives the simulated gateway (and the daemon's wall clock) where a test
needs determinism; the cadence tests use real time with wide margins.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from wghybrid.daemon.api import build_app
from wghybrid.daemon.notify import watchdog_period
from wghybrid.daemon.service import Daemon
from wghybrid.daemon.state import StateStore
from wghybrid.dataplane import DataPlaneError, PermanentError, TransientError
from wghybrid.model import Mode, Operation, Override, SetPeerMode, encode_key, short_key
from wghybrid.policy.load import parse_policy
from wghybrid.sim import SimDataPlane, parse_scenario

pytestmark = pytest.mark.sim

SCENARIO = """
name = "loop-test"
cores = 8
duration = 3600
[[group]]
name = "mouse"
count = 3
gbps = 0.2
initial_mode = "inline"
"""

POLICY = """
name = "loop"
interval = {interval}
smoothing = 0.3
[classify]
min_dwell = 0.5
latent_heat = 0.3
"""


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_daemon(
    tmp_path: Path,
    clock: Clock | None = None,
    interval: float = 1.0,
    sample_timeout: float = 5.0,
    notes: list[str] | None = None,
) -> tuple[Daemon, SimDataPlane]:
    dp = SimDataPlane(parse_scenario(SCENARIO), clock=clock)
    policy = parse_policy(POLICY.format(interval=interval), online_cores=8)
    wall = (lambda: 1_800_000_000.0 + clock.t) if clock is not None else time.time
    d = Daemon(
        dataplane=dp,
        policy=policy,
        load_policy=lambda: policy,
        store=StateStore(tmp_path / "state"),
        backend="sim",
        sample_timeout=sample_timeout,
        op_timeout=0.5,
        notify=(notes.append if notes is not None else (lambda _m: None)),
        wall=wall,
    )
    d.restore_state(d.store.load())
    return d, dp


async def quiesce(d: Daemon, clock: Clock) -> None:
    """Tick (one simulated second apart) until the controller has nothing left to do."""
    for _ in range(30):
        clock.t += 1.0
        result = await d.tick()
        if result is not None and not result.plan:
            return
    raise AssertionError("the controller never settled")


def fail_mode_ops(dp: SimDataPlane, key: bytes, error: DataPlaneError, times: int) -> None:
    """Make the next `times` mode changes of peer `key` fail with `error`."""
    apply = dp.apply
    left = [times]

    async def failing(op: Operation) -> None:
        if isinstance(op, SetPeerMode) and op.public_key == key and left[0] > 0:
            left[0] -= 1
            raise error
        await apply(op)

    dp.apply = failing  # type: ignore[method-assign]


def peers(d: Daemon) -> dict[bytes, tuple[Mode, int, str | None]]:
    return {p.public_key: (p.mode, p.core, p.unmanaged) for i in d.snapshot for p in i.peers}


async def test_transient_errors_are_retried_next_tick(tmp_path: Path) -> None:
    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    key = dp.gateway.keys[0].tobytes()
    await d.set_override(Override("wg0", key, Mode.VANILLA, reason="test"))
    fail_mode_ops(dp, key, TransientError("EBUSY (test)"), 1)
    clock.t += 1.0
    result = await d.tick()
    assert result is not None
    (failed,) = [r for r in result.results if r.error is not None]
    assert failed.op.describe() == f"peer wg0/{short_key(key)} mode vanilla"
    assert not failed.permanent
    assert d.last_error is not None and "EBUSY" in d.last_error
    assert d.health().status == "degraded"
    assert dp.gateway.mode[0] == Mode.INLINE
    assert d.metrics.transient_errors._value.get() == 1
    clock.t += 1.0
    await d.tick()
    assert dp.gateway.mode[0] == Mode.VANILLA
    assert d.last_error is None and d.health().status == "ok"
    await quiesce(d, clock)
    assert peers(d)[key][0] == Mode.VANILLA


async def test_a_permanent_error_marks_the_peer_unmanaged_across_restarts(
    tmp_path: Path,
) -> None:
    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    key = dp.gateway.keys[1].tobytes()
    await d.set_override(Override("wg0", key, Mode.VANILLA))
    fail_mode_ops(dp, key, PermanentError("EOPNOTSUPP (test)"), 1)
    clock.t += 1.0
    await d.tick()
    clock.t += 1.0
    await d.tick()
    reason = peers(d)[key][2]
    assert reason is not None and "EOPNOTSUPP" in reason
    saved = json.loads((tmp_path / "state" / "state.json").read_text())
    assert [u["reason"] for u in saved["unmanaged"]] == [reason]
    # a new daemon (restart) restores the mark and leaves the peer alone
    d2, dp2 = make_daemon(tmp_path, clock)
    assert d2.overrides  # the override persisted too
    for _ in range(3):
        clock.t += 1.0
        result = await d2.tick()
        assert result is not None
        assert all(getattr(op, "public_key", None) != key for op in result.plan)
    assert dp2.gateway.mode[1] == Mode.INLINE
    assert peers(d2)[key][2] == reason


async def test_expired_overrides_are_dropped_and_the_drop_persisted(tmp_path: Path) -> None:
    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    key = dp.gateway.keys[2].tobytes()
    await d.set_override(Override("wg0", key, Mode.VANILLA, expires=d.wall() + 5))
    state_file = tmp_path / "state" / "state.json"
    assert len(json.loads(state_file.read_text())["overrides"]) == 1
    clock.t += 1.0
    await d.tick()
    assert dp.gateway.mode[2] == Mode.VANILLA
    clock.t += 10.0
    await d.tick()
    assert d.overrides == {} and d.live_overrides() == []
    assert json.loads(state_file.read_text())["overrides"] == []


async def test_ready_only_after_the_first_successful_tick(tmp_path: Path) -> None:
    clock = Clock()
    notes: list[str] = []
    d, dp = make_daemon(tmp_path, clock, notes=notes)
    dp.faults.transient_samples = 1
    assert await d.tick() is None
    assert "READY=1" not in notes and "WATCHDOG=1" in notes
    assert d.health().status == "degraded" and d.last_error is not None
    clock.t = 1.0
    assert await d.tick() is not None
    assert notes.count("READY=1") == 1
    clock.t = 2.0
    await d.tick()
    assert notes.count("READY=1") == 1 and notes.count("WATCHDOG=1") == 3
    assert all("\n" not in n for n in notes)


async def test_a_slow_sample_times_out_and_the_loop_goes_on(tmp_path: Path) -> None:
    d, dp = make_daemon(tmp_path, interval=0.05, sample_timeout=0.1)
    dp.faults.sample_delay = 0.3
    task = asyncio.create_task(d.run_loop())
    try:
        end = time.monotonic() + 10
        while d.metrics.sample_errors._value.get() < 2 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert d.metrics.sample_errors._value.get() >= 2
        assert d.ticks == 0 and d.last_error is not None and "longer than" in d.last_error
        dp.faults.sample_delay = 0.0
        while d.ticks < 3 and time.monotonic() < end:
            await asyncio.sleep(0.02)
        assert d.ticks >= 3 and d.last_error is None
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 5)


async def test_an_overrunning_tick_skips_missed_slots_instead_of_bunching(
    tmp_path: Path,
) -> None:
    d, dp = make_daemon(tmp_path, interval=0.1)
    dp.faults.sample_delay = 0.25  # every tick overruns two slots
    starts: list[float] = []
    tick = d.tick

    async def timed_tick() -> object:
        starts.append(time.monotonic())
        return await tick()

    d.tick = timed_tick  # type: ignore[method-assign]
    task = asyncio.create_task(d.run_loop())
    try:
        end = time.monotonic() + 10
        while len(starts) < 5 and time.monotonic() < end:
            await asyncio.sleep(0.02)
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 5)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    # each tick waits for the next slot boundary (0.3 s) rather than starting at once
    assert all(g > 0.27 for g in gaps), gaps
    assert d.metrics.ticks_skipped._value.get() >= 2 * (len(starts) - 2)


async def test_the_api_answers_while_a_tick_is_stuck_in_the_data_plane(tmp_path: Path) -> None:
    d, dp = make_daemon(tmp_path, interval=0.05, sample_timeout=5.0)
    await d.tick()
    dp.faults.sample_delay = 2.0
    app = build_app(d)
    app.cleanup_ctx.append(d.loop_ctx)
    async with TestClient(TestServer(app)) as client:
        await asyncio.sleep(0.2)  # let the loop enter its slow sample
        t0 = time.monotonic()
        for path in ("/v1/status", "/v1/health", "/v1/peers", "/metrics"):
            resp = await client.get(path)
            assert resp.status == 200
        key = dp.gateway.keys[0].tobytes()
        resp = await client.post(
            "/v1/overrides",
            json={"interface": "wg0", "public_key": encode_key(key), "mode": "vanilla"},
        )
        assert resp.status == 201, await resp.text()
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0, elapsed  # the data plane was stuck for 2 s
        dp.faults.sample_delay = 0.0
        d.request_stop()


def test_watchdog_period_follows_systemd_environment() -> None:
    pid = str(os.getpid())
    assert watchdog_period({}) is None
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({"WATCHDOG_USEC": "junk"}) is None


async def test_the_watchdog_is_pinged_between_ticks_longer_than_its_period(
    tmp_path: Path,
) -> None:
    notes: list[str] = []
    d, _ = make_daemon(tmp_path, interval=30.0, notes=notes)
    d.watchdog_period = 0.05
    task = asyncio.create_task(d.run_loop())
    try:
        end = time.monotonic() + 10
        while notes.count("WATCHDOG=1") < 5 and time.monotonic() < end:
            await asyncio.sleep(0.02)
    finally:
        d.request_stop()
        await asyncio.wait_for(task, 5)
    assert d.ticks == 1  # one tick, yet the watchdog kept being fed
    assert notes.count("WATCHDOG=1") >= 5


async def test_an_unexpected_exception_is_a_logged_json_500(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d, _ = make_daemon(tmp_path)
    await d.tick()

    def broken() -> object:
        raise RuntimeError("bug in a handler")

    d.health = broken  # type: ignore[assignment,method-assign]
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.get("/v1/health")
        assert resp.status == 500
        assert await resp.json() == {"error": "internal error (logged by the daemon)",
                                     "field": None}
        assert (await client.get("/v1/status")).status == 200  # the daemon goes on
    assert "bug in a handler" in caplog.text
    assert d.metrics.internal_errors._value.get() == 1


async def test_per_peer_metrics_carry_interface_and_public_key_only(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    async with TestClient(TestServer(build_app(d)), auto_decompress=False) as client:
        resp = await client.get("/metrics", headers={"Accept-Encoding": "gzip, deflate"})
        assert resp.status == 200
        assert resp.headers["Content-Encoding"] == "gzip"
        assert resp.headers["Vary"] == "Accept-Encoding"
        text = gzip.decompress(await resp.read()).decode()
        plain = await client.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        assert await plain.text() == text  # the same tick's rendering, once
    families = {f.name: f for f in text_string_to_metric_families(text)}
    keys = {encode_key(k.tobytes()) for k in dp.gateway.keys}
    peer_families = [f for n, f in families.items() if n.startswith("wghybrid_peer_")]
    assert {f.name for f in peer_families} == {
        "wghybrid_peer_receive_bytes", "wghybrid_peer_transmit_bytes",
        "wghybrid_peer_cpu_seconds", "wghybrid_peer_info"}
    for family in peer_families:
        assert {s.labels["public_key"] for s in family.samples} == keys, family.name
        if family.name == "wghybrid_peer_info":
            # the state as labels (empty ones left out), the value always 1
            assert all({"interface", "public_key", "mode", "class"} <= set(s.labels)
                       <= {"interface", "public_key", "mode", "class", "name", "core"}
                       and s.value == 1 for s in family.samples)
        elif family.name == "wghybrid_peer_cpu_seconds":
            assert family.type == "counter"
            assert {(s.labels["public_key"], s.labels["direction"])
                    for s in family.samples} == {(k, d) for k in keys for d in ("rx", "tx")}
            assert sum(s.value for s in family.samples) > 0
        else:
            assert family.type == "counter"
            assert all(set(s.labels) == {"interface", "public_key"} for s in family.samples)
    assert "wghybrid_peer_info" in families
    assert families["wghybrid_last_tick_timestamp_seconds"].samples[0].value == d.last_tick
    assert families["wghybrid_ticks"].samples[0].value == d.ticks
    assert families["wghybrid_tick_duration_seconds"].type == "histogram"


async def test_mode_changes_are_counted_by_target_and_cause(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    key = dp.gateway.keys[0].tobytes()
    await d.set_override(Override("wg0", key, Mode.VANILLA, reason="test"))
    clock.t += 1.0
    await d.tick()
    assert dp.gateway.mode[0] == Mode.VANILLA
    text = d.metrics.render().decode()
    changes = {(s.labels["to"], s.labels["cause"]): s.value
               for f in text_string_to_metric_families(text) if f.name == "wghybrid_mode_changes"
               for s in f.samples if s.name.endswith("_total")}
    assert changes == {("vanilla", "override"): 1.0, ("vanilla", "automatic"): 0.0,
                       ("inline", "override"): 0.0, ("inline", "automatic"): 0.0}
    assert d.metrics.mode_changes_total() == 1
    clock.t += 1.0
    await d.tick()  # the snapshot shows the mode the next sample reads
    text = d.metrics.render().decode()
    info = [line for line in text.splitlines()
            if line.startswith("wghybrid_peer_info{") and encode_key(key) in line]
    assert len(info) == 1 and 'mode="vanilla"' in info[0]


async def test_per_peer_series_stop_above_the_policy_limit(tmp_path: Path) -> None:
    clock = Clock()
    d, _ = make_daemon(tmp_path, clock)
    await quiesce(d, clock)
    assert b"\nwghybrid_peer_receive_bytes_total{" in d.metrics.render()
    limited = parse_policy(POLICY.format(interval=1.0) + "[metrics]\nper_peer_max = 2\n",
                           online_cores=8)
    d.controller.set_policy(limited)
    body = d.metrics.render()
    assert b"\nwghybrid_peer_" not in body
    assert b"\nwghybrid_metrics_per_peer_series 0.0" in body
    assert b'\nwghybrid_interface_peers{class="mouse",interface="wg0",mode="inline"} 3.0' in body
