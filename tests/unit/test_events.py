"""wghybrid.daemon.events: the event log (ring, sequence ids, filters), its renderings (log line,
journal fields, JSON), and the daemon's use of it: every change and refusal an event, in
the journal with WGH_* fields, names instead of keys, a dry run's plan only when it
changes."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from factory import Gateway, key
from test_controller import FlakyPlane, offered_to_delivered

from wghybrid import _log
from wghybrid.daemon import events as ev
from wghybrid.daemon.service import Daemon
from wghybrid.daemon.state import StateStore
from wghybrid.dataplane import PermanentError, TransientError
from wghybrid.model import Mode, Override, Reason, SetPeerCore, SetPeerMode, encode_key
from wghybrid.policy import Classify, Policy

pytestmark = pytest.mark.unit

WALL = 1_800_000_000.0


def test_the_ring_is_bounded_and_ids_only_grow() -> None:
    log = ev.EventLog(size=5, clock=lambda: WALL)
    for i in range(12):
        e = log.emit(ev.MODE, ev.DONE, interface="wg0", public_key=key(i), value="inline")
        assert e.seq == i + 1
    assert len(log) == 5 and log.oldest == 8 and log.latest == 12
    assert [e.seq for e in log.after(0, 100)] == [8, 9, 10, 11, 12]
    assert log.missed(0) == 7 and log.missed(7) == 0 and log.missed(10) == 0
    assert [e.seq for e in log.after(10, 100)] == [11, 12]
    assert [e.seq for e in log.after(8, 2)] == [9, 10]
    assert log.after(12, 100) == [] and log.after(99, 100) == []
    assert [e.seq for e in log.last(2)] == [11, 12]


def test_filters_by_interface_and_by_peer_name_or_key() -> None:
    log = ev.EventLog()
    log.emit(ev.MODE, ev.DONE, interface="wg0", public_key=key(1), name="alice", value="inline")
    log.emit(ev.MODE, ev.DONE, interface="wg1", public_key=key(2), value="vanilla")
    log.emit(ev.CRYPT_CORES, ev.DONE, interface="wg0", value="0-3")
    assert [e.seq for e in log.last(10, ev.matcher("wg0"))] == [1, 3]
    assert [e.seq for e in log.last(10, ev.matcher(None, "alice"))] == [1]
    assert [e.seq for e in log.last(10, ev.matcher(None, encode_key(key(2))))] == [2]
    assert log.last(10, ev.matcher("wg0", encode_key(key(2)))) == []


def test_lines_name_the_peer_and_say_what_happened() -> None:
    why = Reason("fits-inline", "measured 0.2 Gbps", (("demand_gbps", 0.25),))
    e = ev.Event(1, WALL, ev.MODE, ev.DONE, "wg0", key(7), "mouse-007", "inline", why)
    assert ev.line(e) == "[#] peer wg0/mouse-007 mode inline  # fits-inline: measured 0.2 Gbps"
    unnamed = ev.Event(2, WALL, ev.CORE, ev.DONE, "wg0", key(7), "", "3")
    assert ev.line(unnamed) == f"[#] peer wg0/{encode_key(key(7))[:8]} core 3"
    would = ev.Event(3, WALL, ev.MODE, ev.WOULD, "wg0", key(7), "mouse-007", "inline",
                     dry_run=True)
    assert ev.line(would) == "[dry-run] would: peer wg0/mouse-007 mode inline"
    gone = ev.Event(4, WALL, ev.MODE, ev.WITHDRAWN, "wg0", key(7), "mouse-007", "inline")
    assert ev.line(gone) == "[dry-run] no longer would: peer wg0/mouse-007 mode inline"
    failed = ev.Event(5, WALL, ev.MODE, ev.FAILED, "wg0", key(7), "m", "inline", error="EBUSY")
    assert ev.line(failed) == "[!] peer wg0/m mode inline: EBUSY (transient, retrying next tick)"
    lost = ev.Event(6, WALL, ev.MODE, ev.UNMANAGED, "wg0", key(7), "m", "inline", error="ENOENT")
    assert "permanent: the peer is now unmanaged" in ev.line(lost)
    pin = ev.Event(7, WALL, ev.OVERRIDE_SET, ev.DONE, "wg0", key(7), "m", "mode vanilla",
                   Reason("override", "bulk backup"), ev.OPERATOR, "uid 0 (root)")
    assert ev.line(pin) == "[#] override wg0/m mode vanilla (bulk backup) by uid 0 (root)"
    bad = ev.Event(8, WALL, ev.POLICY_RELOAD, ev.REJECTED, value="default", error="x: y",
                   cause=ev.OPERATOR, by="SIGHUP")
    assert ev.line(bad) == "[!] policy reload rejected by SIGHUP, keeping 'default': x: y"
    assert ev.level(bad) == logging.ERROR and ev.level(failed) == logging.WARNING
    assert ev.level(e) == logging.INFO


def test_journal_fields_and_json() -> None:
    why = Reason("more-than-inline", "wants 6 Gbps", (("demand_gbps", 6.5), ("censored", 1.0)))
    e = ev.Event(9, WALL, ev.MODE, ev.DONE, "wg0", key(3), "elephant-0", "vanilla", why)
    fields = ev.journal_fields(e)
    assert fields["WGH_INTERFACE"] == "wg0"
    assert fields["WGH_PEER"] == encode_key(key(3))
    assert fields["WGH_NAME"] == "elephant-0"
    assert fields["WGH_OP"] == "mode" and fields["WGH_VALUE"] == "vanilla"
    assert fields["WGH_RULE"] == "more-than-inline" and fields["WGH_CAUSE"] == "automatic"
    assert fields["WGH_DEMAND_GBPS"] == "6.5" and fields["WGH_CENSORED"] == "1"
    assert fields["WGH_SEQ"] == "9" and fields["WGH_DRY_RUN"] == "0"
    assert all(k.startswith("WGH_") and k.isupper() for k in fields)
    data = ev.event_json(e)
    assert data["public_key"] == encode_key(key(3)) and data["name"] == "elephant-0"
    assert data["reason"] == {"rule": "more-than-inline", "text": "wants 6 Gbps",
                              "numbers": {"demand_gbps": 6.5, "censored": 1.0}}
    assert data["text"] == ev.line(e) and data["error"] is None
    assert ev.field_name("odd name-1") == "WGH_ODD_NAME_1"


def test_a_dry_runs_plan_diff_reports_only_changes() -> None:
    diff = ev.PlanDiff()
    a = SetPeerMode("wg0", key(1), Mode.VANILLA)
    b = SetPeerCore("wg0", key(1), 3)
    assert diff.update([a, b]) == ([a, b], [])
    again = SetPeerMode("wg0", key(1), Mode.VANILLA, Reason("x", "other numbers"))
    assert diff.update([again, b]) == ([], [])  # the same plan: nothing to say
    moved = SetPeerCore("wg0", key(1), 4)
    assert diff.update([a, moved]) == ([moved], [])  # another target: said once
    assert diff.update([moved]) == ([], [a])


async def test_a_follower_waits_for_the_next_event() -> None:
    log = ev.EventLog()
    assert not await log.wait(0, 0.01)
    waiter = asyncio.ensure_future(log.wait(0, 5.0))
    await asyncio.sleep(0)
    log.emit(ev.MODE, ev.DONE, interface="wg0")
    assert await waiter
    log.close()
    assert not await log.wait(1, 5.0)  # closed: returns at once


# ---------------------------------------------------------------------------------------
# The daemon's events


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("wghybrid")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def make(tmp_path: Path, gw: Gateway, fail: dict[bytes, Exception] | None = None,
         dry_run: bool = False, names: dict[bytes, str] | None = None) -> Daemon:
    pol = Policy(interval=1.0, smoothing=2.0, classify=Classify(min_dwell=0.0, latent_heat=0.0),
                 names=names or {})
    return Daemon(dataplane=FlakyPlane(gw, fail or {}), policy=pol,  # type: ignore[arg-type]
                  load_policy=lambda: pol, store=StateStore(tmp_path), backend="sim",
                  dry_run=dry_run, wall=lambda: WALL + gw.now)


async def ticks(d: Daemon, gw: Gateway, offered: np.ndarray, n: int) -> None:
    for _ in range(n):
        gw.advance(1.0, offered_to_delivered(gw, offered))
        await d.tick()


async def test_every_change_is_an_event_in_the_journal_with_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from systemd.journal import JournalHandler

    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    _log.setup_logging("info")
    (handler,) = [h for h in logging.getLogger("wghybrid").handlers
                  if getattr(h, "_wghybrid", False)]
    assert isinstance(handler, JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    handler.send = lambda MESSAGE, **f: sent.append((MESSAGE, f))  # type: ignore[attr-defined]
    gw = Gateway(2, cores=8)
    d = make(tmp_path, gw, names={key(1): "elephant-0"})
    await ticks(d, gw, np.array([0.1, 8.0]), 6)
    assert gw.mode.tolist()[1] == Mode.VANILLA
    modes = [(m, f) for m, f in sent if f.get("WGH_OP") == "mode"]
    assert modes, [m for m, _ in sent]
    msg, fields = next((m, f) for m, f in modes if f.get("WGH_NAME") == "elephant-0")
    # journalctl -u wghybrid WGH_INTERFACE=wg0 selects it
    assert fields["WGH_INTERFACE"] == "wg0" and fields["WGH_PEER"] == encode_key(key(1))
    assert fields["WGH_VALUE"] == "vanilla" and fields["WGH_RESULT"] == "done"
    assert fields["WGH_RULE"] == "more-than-inline" and fields["WGH_CAUSE"] == "automatic"
    assert float(fields["WGH_DEMAND_GBPS"]) > 2.8
    assert msg.startswith("[#] peer wg0/elephant-0 mode vanilla  # more-than-inline: ")
    # the same events are in the ring, as data
    mine = d.events.last(100, ev.matcher("wg0", "elephant-0"))
    assert any(e.op == ev.MODE and e.value == "vanilla" for e in mine)
    assert [e.seq for e in d.events.last(100)] == list(range(1, d.events.latest + 1))


async def test_refusals_are_events(tmp_path: Path) -> None:
    gw = Gateway(3, cores=8)
    d = make(tmp_path, gw, {key(0): TransientError("EBUSY"), key(1): PermanentError("ENOENT")})
    await ticks(d, gw, np.array([0.1, 0.1, 0.1]), 4)
    results = {(e.public_key, e.result) for e in d.events.last(1000)}
    assert (key(0), ev.FAILED) in results and (key(1), ev.UNMANAGED) in results
    lost = next(e for e in d.events.last(1000) if e.result == ev.UNMANAGED)
    assert lost.error == "ENOENT"
    assert sum(e.result == ev.UNMANAGED for e in d.events.last(1000)) == 1


async def test_overrides_and_reloads_are_events_with_who(tmp_path: Path) -> None:
    gw = Gateway(2, cores=8)
    d = make(tmp_path, gw, names={key(1): "bob"})
    await ticks(d, gw, np.array([0.1, 0.1]), 2)
    pin = Override("wg0", key(1), Mode.VANILLA, None, d.wall() + 1.5, "test", d.wall())
    await d.set_override(pin, by="uid 1000 (alice)")
    await ticks(d, gw, np.array([0.1, 0.1]), 1)
    done = [e for e in d.events.last(100) if e.public_key == key(1)]
    done = done[[e.op for e in done].index(ev.OVERRIDE_SET):]
    assert done[0].op == ev.OVERRIDE_SET and done[0].by == "uid 1000 (alice)"
    assert done[0].cause == ev.OPERATOR and done[0].name == "bob"
    carried = next(e for e in done if e.op == ev.MODE)
    assert carried.cause == ev.OVERRIDE and carried.by == "uid 1000 (alice)"
    await ticks(d, gw, np.array([0.1, 0.1]), 3)  # the wall clock passes the expiry
    expired = [e for e in d.events.last(100) if e.op == ev.OVERRIDE_EXPIRE]
    assert len(expired) == 1 and expired[0].name == "bob" and expired[0].by == ""
    assert ev.line(expired[0]) == "[#] override wg0/bob expired"

    def bad() -> Policy:
        raise ValueError("policy.toml: interval: must be > 0")

    d._load_policy = bad
    with pytest.raises(ValueError):
        await d.reload_policy(by="SIGHUP")
    last = d.events.last(1)[0]
    assert (last.op, last.result, last.by) == (ev.POLICY_RELOAD, ev.REJECTED, "SIGHUP")
    assert "interval" in last.error


async def test_a_dry_run_reports_its_plan_only_when_it_changes(tmp_path: Path) -> None:
    gw = Gateway(2, cores=8)
    d = make(tmp_path, gw, dry_run=True)
    await ticks(d, gw, np.array([0.1, 8.0]), 3)
    first = d.events.latest
    would = d.events.last(1000)
    assert would and all(e.result == ev.WOULD and e.dry_run for e in would)
    assert any(e.op == ev.MODE and e.value == "vanilla" for e in would)
    await ticks(d, gw, np.array([0.1, 8.0]), 5)
    # nothing was applied, the controller plans the same again: no new event
    assert gw.mode.tolist() == [Mode.INLINE, Mode.INLINE]
    assert d.events.latest == first
    await ticks(d, gw, np.array([0.1, 0.1]), 12)  # the elephant is gone: withdrawn
    assert any(e.result == ev.WITHDRAWN and e.value == "vanilla" for e in d.events.last(1000))
