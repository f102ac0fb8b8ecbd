"""The event log and explain end to end: the daemon on the simulated gateway (a subprocess,
its real unix socket), read through GET /v1/events, GET /v1/peers/.../explain and the CLI
(`wghybrid log [-f]`, `wghybrid explain`); a dry run's would-be plan."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_daemon import DaemonProcess, wait_until

pytestmark = pytest.mark.sim


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = DaemonProcess(tmp_path)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


async def test_events_and_explain_of_an_elephant(daemon: DaemonProcess) -> None:
    daemon.start()
    await daemon.wait_ticks(1)

    async def promoted() -> list[dict[str, Any]]:
        events = (await daemon.get("/v1/events", peer="elephant-0", limit="1000"))["events"]
        return [e for e in events if e["op"] == "mode" and e["value"] == "vanilla"]

    (event,) = await wait_until(promoted, "elephant-0's mode change in /v1/events")
    assert event["interface"] == "wg0" and event["name"] == "elephant-0"
    assert event["result"] == "done" and event["cause"] == "automatic"
    assert event["reason"]["rule"] == "more-than-inline"
    assert event["reason"]["numbers"]["demand_gbps"] > 2.8
    assert event["text"].startswith("[#] peer wg0/elephant-0 mode vanilla  # more-than-inline")
    assert event["text"] in daemon.log  # the log line is the event's rendering
    everything = await daemon.get("/v1/events", limit="1000")
    seqs = [e["seq"] for e in everything["events"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    async def explained_vanilla() -> dict[str, Any] | None:
        data: dict[str, Any] = await daemon.get("/v1/peers/wg0/elephant-0/explain")
        return data if data["peer"]["mode"] == "vanilla" else None

    # status (and explain) are as of the last tick's sample: a tick after the change
    explained = await wait_until(explained_vanilla, "explain to show elephant-0 vanilla")
    assert explained["peer"]["name"] == "elephant-0"
    assert any(e["seq"] == event["seq"] for e in explained["events"])
    assert explained["controller"]["demand_gbps"] > 0 and explained["controller"]["measured"]
    text = "\n".join(explained["text"])
    for words in ("Measured (last tick)", "Estimated demand", "Compared, for the whole",
                  "Last events:"):
        assert words in text

    out = daemon.cli("explain", "wg0", "elephant-0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith("wg0/elephant-0 (")
    assert "Estimated demand" in out.stdout and "mode vanilla" in out.stdout
    as_json = daemon.cli("explain", "wg0", explained["peer"]["public_key"], "--json")
    assert json.loads(as_json.stdout)["peer"]["name"] == "elephant-0"
    log = daemon.cli("log", "wg0", "elephant-0")
    assert log.returncode == 0 and "[#] peer wg0/elephant-0 mode vanilla" in log.stdout
    lines = daemon.cli("log", "--json", "--limit", "2").stdout.splitlines()
    assert len(lines) == 2 and all(json.loads(x)["seq"] for x in lines)
    assert daemon.stop() == 0


async def test_bad_input_to_the_new_endpoints_and_commands(daemon: DaemonProcess) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    async with daemon.session() as s:
        for query, field in (("since=x", "since"), ("limit=5000", "limit"),
                             ("follow=maybe", "follow"), ("bogus=1", "bogus")):
            async with s.get("/v1/events?" + query) as r:
                assert r.status == 400 and (await r.json())["field"] == field
        for path, what in (("/v1/peers/wg9/x/explain", "unknown interface 'wg9'"),
                           ("/v1/peers/wg0/nobody/explain", "unknown peer 'nobody' on 'wg0'")):
            async with s.get(path) as r:
                assert r.status == 404 and (await r.json())["error"] == what
    for argv, code, message in (
        (("explain", "wg0", "nobody"), 1, "unknown peer 'nobody' on 'wg0'"),
        (("explain", "wg9", "mouse-0"), 1, "unknown interface 'wg9'"),
        (("explain", "wg0"), 2, "the following arguments are required: PEER"),
        (("log", "--since", "-3"), 2, "bad event id '-3'"),
        (("log", "--limit", "0"), 2, "bad limit '0'"),
    ):
        out = daemon.cli(*argv)
        assert out.returncode == code and message in out.stderr, (argv, out)
        assert "Traceback" not in out.stderr
    assert "Traceback" not in daemon.log and "internal error" not in daemon.log


async def test_log_follow_shows_an_override_with_who_set_it(daemon: DaemonProcess) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    follower = subprocess.Popen(
        [sys.executable, "-m", "wghybrid", "--socket", str(daemon.socket), "log", "-f",
         "--since", "0", "wg0", "mouse-1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # --since 0: the follower shows the override whenever it connects (it used to
        # sleep 1 s and hope: a loaded machine started it after the override was set)
        out = daemon.cli("override", "set", "wg0", "mouse-1", "--mode", "vanilla")
        assert out.returncode == 0, out.stderr
        assert follower.stdout is not None
        os.set_blocking(follower.stdout.fileno(), False)
        seen: list[str] = []

        async def shown() -> bool:
            chunk = follower.stdout.read() if follower.stdout else None  # type: ignore[union-attr]
            if chunk:
                seen.extend(chunk.splitlines())
            return any("[#] override wg0/mouse-1 mode vanilla" in x for x in seen)

        await wait_until(shown, "the override in `wghybrid log -f`")
        me = pwd.getpwuid(os.getuid()).pw_name
        line = next(x for x in seen if "override wg0/mouse-1" in x)
        assert line.endswith(f" by uid {os.getuid()} ({me})")
        assert all("mouse-1" in x for x in seen if x.strip())  # the filter holds
    finally:
        follower.terminate()
        follower.communicate(timeout=10)  # reaps it and closes its pipes
    assert daemon.stop() == 0


async def test_a_dry_run_says_what_it_would_do_once(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, extra=("--dry-run",))
    try:
        d.start()
        await d.wait_ticks(1)
        want = "[dry-run] would: peer wg0/elephant-0 mode vanilla"
        await wait_until(lambda: _contains(d, want), "the would-be mode change")
        ticks = (await d.get("/v1/health"))["ticks"]
        await d.wait_ticks(ticks + 20)  # 20 more ticks planning the same
        assert d.log.count(want) == 1
        events = (await d.get("/v1/events", peer="elephant-0", limit="1000"))["events"]
        would = [e for e in events if e["op"] == "mode"]
        assert [e["result"] for e in would] == ["would"] and would[0]["dry_run"] is True
        assert all(p["mode"] == "inline" for p in (await d.peers()).values())
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)
    assert "[#] peer" not in d.log


async def _contains(d: DaemonProcess, text: str) -> bool:
    return text in d.log


def test_the_event_ring_is_bounded() -> None:
    from wghybrid.daemon.events import RING_SIZE, EventLog

    log = EventLog()
    t0 = time.perf_counter()
    for _ in range(RING_SIZE + 500):
        log.emit("mode", "done", interface="wg0")
    assert len(log) == RING_SIZE and log.oldest == 501
    assert time.perf_counter() - t0 < 5.0
