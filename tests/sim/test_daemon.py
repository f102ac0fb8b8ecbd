"""The whole daemon on the simulated gateway, as a subprocess, through its real unix socket.

Each test writes a small scenario and a fast policy (ticks every 0.1 s, short dwell), runs
`python -m wghybrid run --backend sim`, and talks to it with aiohttp's UnixConnector (and,
where an operator would, with the real CLI). Waiting is always polling of the daemon's
state against a deadline.

`DaemonProcess` is also used by test_api_fuzz.py and test_api_transport.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.sim

DEADLINE = 20.0

SCENARIO = """
name = "daemon-test"
description = "four mice; one elephant that starts sending at t=1 s"
cores = 8
duration = 3600
interface = "wg0"
[[group]]
name = "mouse"
count = 4
gbps = 0.2
initial_mode = "inline"
[[group]]
name = "elephant"
count = 1
gbps = 8.0
initial_mode = "inline"
active = [[1.0, 3600.0]]
"""

POLICY = """
name = "{name}"
interval = {interval}
smoothing = 0.3
restore_on_stop = {restore}
[classify]
promote_gbps = 2.0
demote_gbps = 1.0
min_dwell = 0.5
latent_heat = 0.3
"""


def policy_text(name: str = "fast", interval: float = 0.1, restore: bool = False) -> str:
    return POLICY.format(name=name, interval=interval, restore=str(restore).lower())


async def wait_until(
    probe: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE
) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` at the deadline."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {deadline:g} s waiting for {what} (last: {last!r})")


class DaemonProcess:
    """`wghybrid run --backend sim` in a subprocess, with its own socket and state dir."""

    def __init__(
        self,
        tmp: Path,
        scenario: str = SCENARIO,
        policy: str | None = None,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.socket = tmp / "run" / "api.sock"
        self.state_dir = tmp / "state"
        self.policy = tmp / "policy.toml"
        self.scenario = tmp / "scenario.toml"
        self.scenario.write_text(scenario)
        if not self.policy.exists() or policy is not None:
            self.policy.write_text(policy if policy is not None else policy_text())
        self.extra = extra
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.log_path = tmp / "daemon-0.log"

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "wghybrid", "run", "--backend", "sim",
            "--scenario", str(self.scenario), "--policy", str(self.policy),
            "--state-dir", str(self.state_dir), "--socket", str(self.socket),
            *self.extra,
        ]

    def start(self) -> DaemonProcess:
        assert self.proc is None or self.proc.poll() is not None
        self.log_path = self.tmp / f"daemon-{self.runs}.log"
        self.runs += 1
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.env or {})
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv(), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url="http://wghybrid",
            connector=aiohttp.UnixConnector(path=str(self.socket)),
            timeout=aiohttp.ClientTimeout(total=10),
        )

    async def get(self, path: str, **params: str) -> Any:
        async with self.session() as s, s.get(path, params=params) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json() if path != "/metrics" else await r.text()

    async def wait_ticks(self, n: int) -> dict[str, Any]:
        """Wait until the daemon answers and has done at least `n` ticks (in this run)."""

        async def probe() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log}")
            try:
                health: dict[str, Any] = await self.get("/v1/health")
            except (aiohttp.ClientConnectionError, FileNotFoundError):
                return None
            return health if health["ticks"] >= n else None

        result: dict[str, Any] = await wait_until(probe, f"{n} ticks")
        return result

    async def peers(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in (await self.get("/v1/peers"))["peers"]}

    async def metric(self, name: str) -> float:
        for line in (await self.get("/metrics")).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise AssertionError(f"metric {name} not exported")

    async def metric_sum(self, name: str) -> float:
        """The sum of every series of `name`, whatever its labels."""
        values = [float(line.rsplit(" ", 1)[1])
                  for line in (await self.get("/metrics")).splitlines()
                  if line.startswith((name + " ", name + "{"))]
        if not values:
            raise AssertionError(f"metric {name} not exported")
        return sum(values)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon ignored signal {sig}:\n{self.log}") from None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wghybrid", "--socket", str(self.socket), *args],
            capture_output=True, text=True, timeout=30,
        )


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = DaemonProcess(tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


QUIET_SCENARIO = SCENARIO.split('[[group]]\nname = "elephant"')[0].replace(
    "four mice; one elephant that starts sending at t=1 s", "four mice")
"""SCENARIO without the elephant: traffic that never asks for a change."""


@pytest.fixture
def quiet_daemon(tmp_path: Path) -> Any:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def mode_changes(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[#] peer" in line and " mode " in line]


async def test_an_elephant_appears_and_is_moved_to_vanilla(daemon: DaemonProcess) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    before = await daemon.peers()
    assert {p["mode"] for p in before.values()} == {"inline"}
    assert before["elephant-0"]["class"] == "mouse"

    async def moved() -> dict[str, Any] | None:
        peer = (await daemon.peers())["elephant-0"]
        return peer if peer["mode"] == "vanilla" else None

    peer = await wait_until(moved, "elephant-0 to become vanilla")
    assert not peer["pinned"]

    async def uncapped() -> dict[str, Any] | None:
        peer = (await daemon.peers())["elephant-0"]
        return peer if peer["rx_bps"] > 2.9e9 else None

    # No longer capped by one inline core (~2.8 Gbps): the smoothed rate climbs past it.
    peer = await wait_until(uncapped, "elephant-0 to carry more than one inline core")
    assert peer["mode"] == "vanilla" and peer["class"] == "elephant"
    after = await daemon.peers()
    assert all(after[f"mouse-{i}"]["mode"] == "inline" for i in range(4))
    # the log names the peer (its key only when it has no name)
    assert "[#] peer wg0/elephant-0 mode vanilla" in daemon.log
    assert await daemon.metric_sum("wghybrid_mode_changes_total") >= 1
    assert daemon.stop() == 0
    assert "fail-static" in daemon.log
    # fail-static: the simulated kernel keeps the mode the daemon left
    saved = json.loads((daemon.state_dir / "sim-gateway.json").read_text())
    assert 0 in saved["mode"] and 1 in saved["mode"]  # vanilla and inline both present


async def test_an_override_pins_a_peer_and_survives_a_restart(
    quiet_daemon: DaemonProcess,
) -> None:
    # No elephant: with one, the second run's "no transitions" raced the elephant's
    # promotion (the resumed simulation is past its start, so it is due one min_dwell after
    # the restart, about when the 5 ticks are done).
    daemon = quiet_daemon
    daemon.start()
    await daemon.wait_ticks(1)
    key = (await daemon.peers())["mouse-1"]["public_key"]
    # through the real CLI, as an operator would
    done = daemon.cli("override", "set", "wg0", key, "--mode", "vanilla", "--core", "5",
                      "--reason", "maintenance window")
    assert done.returncode == 0, done.stderr

    async def pinned() -> dict[str, Any] | None:
        p = (await daemon.peers())["mouse-1"]
        return p if p["mode"] == "vanilla" and p["core"] == 5 and p["pinned"] else None

    await wait_until(pinned, "mouse-1 pinned vanilla on core 5")
    state = json.loads((daemon.state_dir / "state.json").read_text())
    assert [(o["public_key"], o["mode"], o["core"]) for o in state["overrides"]] == [
        (key, "vanilla", 5)
    ]
    assert daemon.stop() == 0

    daemon.start()
    await daemon.wait_ticks(5)
    overrides = (await daemon.get("/v1/overrides"))["overrides"]
    assert [(o["public_key"], o["mode"], o["core"], o["reason"]) for o in overrides] == [
        (key, "vanilla", 5, "maintenance window")
    ]
    p = (await daemon.peers())["mouse-1"]
    assert (p["mode"], p["core"], p["pinned"]) == ("vanilla", 5, True)
    assert await daemon.metric_sum("wghybrid_mode_changes_total") == 0
    assert mode_changes(daemon.log) == []

    done = daemon.cli("override", "clear", "wg0", key)
    assert done.returncode == 0, done.stderr
    assert (await daemon.get("/v1/overrides"))["overrides"] == []
    assert json.loads((daemon.state_dir / "state.json").read_text())["overrides"] == []


async def test_a_bad_policy_is_rejected_and_the_old_one_keeps_running(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    await daemon.wait_ticks(1)

    # a good reload by SIGHUP takes effect
    daemon.policy.write_text(policy_text(name="second"))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)

    async def policy_named(name: str) -> Any:
        status = await daemon.get("/v1/status")
        return status if status["policy"]["name"] == name else None

    await wait_until(lambda: policy_named("second"), "the reloaded policy")

    # a bad one by SIGHUP is rejected, logged and shown in status
    daemon.policy.write_text(policy_text(name="third", interval=-1))
    daemon.proc.send_signal(signal.SIGHUP)

    async def rejected() -> Any:
        status = await daemon.get("/v1/status")
        return status if status["policy"]["error"] else None

    status = await wait_until(rejected, "the reload error in status")
    assert status["policy"]["name"] == "second"
    assert str(daemon.policy) in status["policy"]["error"]
    assert "interval" in status["policy"]["error"]
    assert "policy reload rejected" in daemon.log
    ticks = (await daemon.get("/v1/health"))["ticks"]
    await daemon.wait_ticks(ticks + 3)  # the loop goes on with the old policy

    # the same through the API: 422 naming file and key, old policy still in force
    async with daemon.session() as s, s.post("/v1/policy/reload", json={}) as r:
        assert r.status == 422
        body = await r.json()
    assert str(daemon.policy) in body["error"] and "interval" in body["error"]
    assert (await daemon.get("/v1/policy"))["policy"]["name"] == "second"
    assert (await daemon.get("/v1/policy"))["error"] == body["error"]

    # fixed: the API reload succeeds and clears the error
    daemon.policy.write_text(policy_text(name="fourth"))
    async with daemon.session() as s, s.post("/v1/policy/reload", json={}) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["policy"]["name"] == "fourth"
    status = await daemon.get("/v1/status")
    assert (status["policy"]["name"], status["policy"]["error"]) == ("fourth", None)
    assert daemon.stop() == 0


async def test_sigkill_mid_run_loses_no_override_and_causes_no_transition(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    keys = {name: p["public_key"] for name, p in (await daemon.peers()).items()}
    async with daemon.session() as s:
        for name, body in (
            ("mouse-0", {"mode": "vanilla", "reason": "pinned before the crash"}),
            ("mouse-2", {"core": 3, "expires_in": 3600}),
        ):
            req = {"interface": "wg0", "public_key": keys[name], **body}
            async with s.post("/v1/overrides", json=req) as r:
                assert r.status == 201, await r.text()

    async def settled() -> dict[str, Any] | None:
        peers = await daemon.peers()
        ok = (
            peers["elephant-0"]["mode"] == "vanilla"
            and peers["mouse-0"]["mode"] == "vanilla"
            and peers["mouse-2"]["core"] == 3
        )
        return peers if ok else None

    await wait_until(settled, "the elephant moved and both overrides applied")
    overrides_before = (await daemon.get("/v1/overrides"))["overrides"]
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL

    daemon.start()
    await daemon.wait_ticks(10)
    assert (await daemon.get("/v1/overrides"))["overrides"] == overrides_before
    after = await daemon.peers()
    assert {n: p["mode"] for n, p in after.items()} == {
        "elephant-0": "vanilla", "mouse-0": "vanilla",
        "mouse-1": "inline", "mouse-2": "inline", "mouse-3": "inline",
    }
    assert after["mouse-2"]["core"] == 3
    assert after["mouse-0"]["pinned"] and after["mouse-2"]["pinned"]
    assert await daemon.metric_sum("wghybrid_mode_changes_total") == 0
    assert mode_changes(daemon.log) == []
    assert daemon.stop() == 0


async def test_sd_notify_ready_watchdog_and_status(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    sock.setblocking(False)
    d = DaemonProcess(tmp_path, env={"NOTIFY_SOCKET": str(notify_path)})
    messages: list[str] = []

    async def received(want: str, times: int = 1) -> bool:
        while True:
            try:
                messages.extend(sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                break
        return sum(m.startswith(want) for m in messages) >= times

    try:
        d.start()
        await wait_until(lambda: received("READY=1"), "READY=1")
        await wait_until(lambda: received("WATCHDOG=1", 3), "three WATCHDOG=1")
        assert d.stop() == 0
        await wait_until(lambda: received("STOPPING=1"), "STOPPING=1")
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
        sock.close()
    assert messages.count("READY=1") == 1
    assert messages.count("WATCHDOG=1") >= 3
    assert messages.index("READY=1") < messages.index("WATCHDOG=1")
    statuses = [m for m in messages if m.startswith("STATUS=")]
    assert statuses and all("\n" not in s for s in statuses)
    assert any(s.startswith("STATUS=5 peers: ") and "policy fast" in s for s in statuses)


async def test_dry_run_decides_and_changes_nothing(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, extra=("--dry-run",))
    try:
        d.start()
        await d.wait_ticks(1)
        await wait_until(
            lambda: _contains(d, "[dry-run] would: peer"), "a dry-run decision in the log"
        )
        status = await d.get("/v1/status")
        assert status["dry_run"] is True
        assert all(p["mode"] == "inline" for p in (await d.peers()).values())
        assert await d.metric_sum("wghybrid_mode_changes_total") == 0
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    assert "[#] peer" not in d.log
    assert not (d.state_dir / "state.json").exists()
    assert not (d.state_dir / "sim-gateway.json").exists()


async def _contains(d: DaemonProcess, text: str) -> bool:
    return text in d.log


async def test_restore_on_stop_puts_back_the_modes_found(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, policy=policy_text(restore=True))
    try:
        d.start()
        await d.wait_ticks(1)

        async def moved() -> bool:
            return bool((await d.peers())["elephant-0"]["mode"] == "vanilla")

        await wait_until(moved, "elephant-0 to become vanilla")
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    assert "restoring the modes found at start" in d.log
    saved = json.loads((d.state_dir / "sim-gateway.json").read_text())
    assert saved["mode"] == [1, 1, 1, 1, 1]  # all inline again, as found
