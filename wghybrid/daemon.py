"""The daemon (`wghybrid run`): one asyncio loop per gateway, the HTTP API beside it.

    serve() -> Daemon -> aiohttp app (cleanup_ctx starts the tick loop) -> unix socket
                                                                          [+ TCP/TLS]

The tick loop keeps a fixed cadence: tick k is due at `anchor + k * interval`; a tick
that overruns its slot skips the slots it missed instead of bunching up. Between ticks it
waits on the stop event with a timeout, never on a polling sleep. The API never awaits
the data plane: it reads the snapshot the last tick left (`Daemon.snapshot`), and writes
overrides that the next tick obeys.

Signals: SIGHUP reloads the policy (a bad file is rejected, the old policy keeps
running, status shows the error); SIGTERM/SIGINT stop cleanly, leaving every tunnel in
the mode it is in (fail-static) unless the policy says `restore_on_stop`.

Under systemd (NOTIFY_SOCKET set) the loop sends READY=1 after its first successful tick,
WATCHDOG=1 on every tick (so a stuck loop gets restarted) and a one-line STATUS=.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import gc
import grp
import json
import logging
import math
import os
import signal
import ssl
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from wghybrid import __version__
from wghybrid._conns import ConnectionGuard, GuardedSite, limits_for
from wghybrid._files import read_regular
from wghybrid.api import BUSY, Access, build_app
from wghybrid.core.controller import Controller
from wghybrid.core.status import counts, locate
from wghybrid.dataplane import (
    DataPlane,
    DataPlaneError,
    TransientError,
    configure_nic_steering,
)
from wghybrid.events import (
    AUTOMATIC,
    DONE,
    FAILED,
    OPERATOR,
    OVERRIDE,
    OVERRIDE_CLEAR,
    OVERRIDE_EXPIRE,
    OVERRIDE_SET,
    POLICY_RELOAD,
    REJECTED,
    UNMANAGED,
    UNSUPPORTED,
    WITHDRAWN,
    WOULD,
    Event,
    EventLog,
    PlanDiff,
    describe,
    journal_fields,
    level,
    line,
    op_fields,
)
from wghybrid.loop import OpResult, TickResult, run_tick
from wghybrid.metrics import DaemonMetrics
from wghybrid.model import (
    U64,
    GatewaySample,
    InterfaceStatus,
    Operation,
    Override,
    Reason,
    SetPeerCore,
    SetPeerMode,
    encode_key,
)
from wghybrid.policy import Policy
from wghybrid.policy.load import load_policy, shipped_policy_path
from wghybrid.sim import Faults, Scenario, SimDataPlane, load_scenario
from wghybrid.state import (
    LOCK_FILE,
    DaemonState,
    StateError,
    StateStore,
    Unmanaged,
    sorted_overrides,
)

log = logging.getLogger("wghybrid.daemon")
loop_log = logging.getLogger("wghybrid.asyncio")

DEFAULT_SOCKET = "/run/wghybrid/wghybrid.sock"
DEFAULT_STATE_DIR = "/var/lib/wghybrid"
ETC_POLICY = "/etc/wghybrid/policy.toml"
STOP_GRACE = 10.0
"""Seconds a stop waits for the tick in progress before cancelling it."""
KERNEL_LOCK = "/run/wghybrid/kernel.lock"
"""One daemon drives the kernel module at a time, whatever its state directory."""
IDLE_TIMEOUT = 15.0
"""aiohttp's keepalive_timeout: a connection that has not completed a request head this
long after it opened, or after its last answer, is closed."""
LINGER = 2.0
"""aiohttp's lingering_time: how long the unread rest of a refused body is drained."""
MAX_TOKEN_FILE = 4096
FULL_GC_EVERY = 10.0
"""Seconds between two full passes of the cyclic garbage collector (after a tick)."""

OverrideKey = tuple[str, bytes]


class ConfigError(Exception):
    """The daemon cannot start as configured; the message is the one line to show."""


class Notifier:
    """sd_notify(3) through systemd-python, only when systemd gave us a NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self._notify: Callable[[str], Any] | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                from systemd import daemon as sd_daemon  # type: ignore[attr-defined]
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but systemd-python is not installed")
            else:
                self._notify = sd_daemon.notify

    def __call__(self, message: str) -> None:
        if self._notify is not None:
            self._notify(message)


def watchdog_period(environ: dict[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd set (WATCHDOG_USEC for our PID), or None."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = int(env.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2e6


@dataclass(frozen=True, slots=True)
class Health:
    status: str
    ticks: int
    last_tick: float | None
    last_error: str | None


class Daemon:
    """Owns everything one gateway's daemon has: controller, overrides, snapshot, metrics."""

    def __init__(
        self,
        *,
        dataplane: DataPlane,
        policy: Policy,
        load_policy: Callable[[], Policy],
        store: StateStore,
        backend: str,
        dry_run: bool = False,
        op_timeout: float = 2.0,
        sample_timeout: float = 5.0,
        notify: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dataplane = dataplane
        self.controller = Controller(policy)
        self.backend = backend
        self.dry_run = dry_run
        self.version = __version__
        self.store = store
        self._load_policy = load_policy
        self._op_timeout = op_timeout
        self._sample_timeout = sample_timeout
        self._notify = notify or Notifier()
        self.clock = clock
        self.wall = wall
        self.watchdog_period = watchdog_period()
        """Half of systemd's WatchdogSec when it watches us, else None."""

        self.overrides: dict[OverrideKey, Override] = {}
        self.snapshot: tuple[InterfaceStatus, ...] = ()
        self.serial = 0
        """Bumped whenever the snapshot, the policy or an error count changes (each tick,
        at least); the API's cached answers are keyed on it."""
        self.overrides_serial = 0
        """Bumped whenever an override is set, cleared or dropped."""
        self.ticks = 0
        self.last_tick: float | None = None
        self.last_error: str | None = None
        self.policy_error: str | None = None
        self.exit_code = 0
        self.stopping = asyncio.Event()
        self._ready = False
        self._persisted_unmanaged: dict[OverrideKey, str] = {}
        self._state_lock = asyncio.Lock()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_waiter: asyncio.Task[Any] | None = None
        self.manage_gc = False
        """`wghybrid run` sets it: the daemon's process times the garbage collector's full
        passes (`_collect_garbage`); an in-process test server leaves the collector alone."""
        self._last_full_gc: float | None = None
        self.events = EventLog(clock=wall, sink=self._log_event)
        """Every change and refusal, as data (`wghybrid.events`): GET /v1/events, the log
        lines and the journal's fields are renderings of it."""
        self._override_by: dict[OverrideKey, str] = {}
        """Who set each override, where the API knew it (in memory: not persisted)."""
        self._would = PlanDiff()
        """A dry run's plan as of the last tick: events only for what changes in it."""
        self.metrics = DaemonMetrics(
            lambda: self.snapshot,
            self._info,
            per_peer_max=lambda: self.controller.policy.metrics.per_peer_max,
            costs=lambda: self.controller.costs if self.ticks else None,
            core_busy=self._core_busy,
            last_tick=lambda: self.last_tick,
        )

    # -- properties the API reads --------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self.controller.policy

    def _core_busy(self) -> U64 | None:
        sample = self.controller.sample
        return None if sample is None else sample.core_busy_ns

    def _info(self) -> dict[str, str]:
        pol = self.controller.policy
        return {
            "version": self.version,
            "backend": self.backend,
            "dry_run": str(self.dry_run).lower(),
            "policy": pol.name,
            "policy_source": pol.source,
        }

    def health(self) -> Health:
        ok = (
            self.last_tick is not None
            and self.last_error is None
            and self.wall() - self.last_tick <= 3 * self.policy.interval + self._sample_timeout
        )
        return Health("ok" if ok else "degraded", self.ticks, self.last_tick, self.last_error)

    def live_overrides(self) -> list[Override]:
        now = self.wall()
        return [o for o in sorted_overrides(self.overrides.values()) if o.active(now)]

    def present(self, keys: list[OverrideKey]) -> list[bool]:
        """For each (interface, key), whether the peer is in the last snapshot."""
        return [at is not None for at in locate(self.snapshot, keys)]

    def peer_names(self, keys: list[OverrideKey]) -> list[str]:
        """For each (interface, key) of an override, its friendly name: the snapshot's,
        else the policy's, else ""."""
        policy_names = self.policy.names
        out = []
        for key, at in zip(keys, locate(self.snapshot, keys), strict=True):
            name = at[0].name_at(at[1]) if at is not None else ""
            if not name and key in self.overrides:
                name = policy_names.get(key[1], "")
            out.append(name)
        return out

    def name_of(self, interface: str, public_key: bytes) -> str:
        """A peer's friendly name, or "": the policy's names (its `[names]` and what the
        daemon added to them, e.g. the simulated gateway's), which is also where status
        takes them from. A dict look-up: events name every operation of a tick."""
        return self.policy.names.get(public_key, "")

    def override_by(self, interface: str, public_key: bytes) -> str:
        """Who set the peer's override, where the API knew it ("" otherwise)."""
        return self._override_by.get((interface, public_key), "")

    def override_presence(self) -> list[tuple[Override, bool]]:
        live = self.live_overrides()
        return list(zip(live, self.present([(o.interface, o.public_key) for o in live]),
                        strict=True))

    # -- state ---------------------------------------------------------------------
    def restore_state(self, state: DaemonState) -> None:
        """Adopt the persisted overrides and unmanaged marks (before the first tick)."""
        for o in state.overrides:
            self.overrides[(o.interface, o.public_key)] = o
        for u in state.unmanaged:
            self.controller.mark_unmanaged(u.interface, u.public_key, u.reason)
            self._persisted_unmanaged[(u.interface, u.public_key)] = u.reason
        if state.overrides or state.unmanaged:
            log.info(
                "restored %d override(s) and %d unmanaged mark(s) from %s",
                len(state.overrides),
                len(state.unmanaged),
                self.store.path,
            )

    def _current_state(self, unmanaged: dict[OverrideKey, str]) -> DaemonState:
        marks = tuple(Unmanaged(i, k, why) for (i, k), why in sorted(unmanaged.items()))
        return DaemonState(sorted_overrides(self.overrides.values()), marks)

    async def _persist(self, unmanaged: dict[OverrideKey, str] | None = None) -> None:
        """Write overrides + unmanaged marks; the caller holds `_state_lock`."""
        marks = self._persisted_unmanaged if unmanaged is None else unmanaged
        if self.dry_run:
            self._persisted_unmanaged = dict(marks)
            return
        await asyncio.to_thread(self.store.save, self._current_state(marks))
        self._persisted_unmanaged = dict(marks)

    async def set_override(self, override: Override, by: str = "") -> Override:
        """Pin a peer (replacing its previous override); persisted before returning.
        `by`: who asked, for the event log."""
        key = (override.interface, override.public_key)
        async with self._state_lock:
            previous = self.overrides.get(key)
            self.overrides[key] = override
            try:
                await self._persist()
            except OSError:
                if previous is None:
                    del self.overrides[key]
                else:
                    self.overrides[key] = previous
                raise
            self.overrides_serial += 1
        if by:
            self._override_by[key] = by
        else:
            self._override_by.pop(key, None)
        what = [f"mode {override.mode}"] if override.mode is not None else []
        if override.core is not None:
            what.append(f"core {override.core}")
        if override.expires is not None:
            what.append(f"expires {time.strftime('%FT%TZ', time.gmtime(override.expires))}")
        self._peer_event(
            OVERRIDE_SET, DONE, override.interface, override.public_key, value=" ".join(what),
            reason=Reason("override", override.reason,
                          (("expires", override.expires),) if override.expires else ()),
            cause=OPERATOR, by=by,
        )
        return override

    async def clear_override(
        self, interface: str, public_key: bytes, by: str = ""
    ) -> Override | None:
        key = (interface, public_key)
        async with self._state_lock:
            previous = self.overrides.pop(key, None)
            if previous is None:
                return None
            try:
                await self._persist()
            except OSError:
                self.overrides[key] = previous
                raise
            self.overrides_serial += 1
        self._override_by.pop(key, None)
        self._peer_event(OVERRIDE_CLEAR, DONE, interface, public_key, cause=OPERATOR, by=by)
        return previous if previous.active(self.wall()) else None

    async def _drop_expired(self, wall_now: float) -> None:
        expired = [k for k, o in self.overrides.items() if not o.active(wall_now)]
        if not expired:
            return
        async with self._state_lock:
            dropped = [self.overrides.pop(k) for k in expired if k in self.overrides]
            try:
                await self._persist()
            except OSError as exc:
                log.error("cannot save state to %s: %s", self.store.path, exc)
            self.overrides_serial += 1
        for o in dropped:
            self._override_by.pop((o.interface, o.public_key), None)
            self._peer_event(
                OVERRIDE_EXPIRE, DONE, o.interface, o.public_key, cause=OVERRIDE,
                reason=Reason("expired", "the override's time ran out",
                              (("expires", o.expires),) if o.expires is not None else ()),
            )

    async def _persist_unmanaged(self) -> None:
        marks = self.controller.unmanaged()
        if marks == self._persisted_unmanaged:
            return
        async with self._state_lock:
            try:
                await self._persist(marks)
            except OSError as exc:
                log.error("cannot save state to %s: %s", self.store.path, exc)

    # -- policy ----------------------------------------------------------------------
    async def reload_policy(self, by: str = "") -> Policy:
        """Load the policy file again; on success it takes effect next tick. A bad file
        raises (PolicyError or OSError), is logged and shown in status; the old policy keeps
        running."""
        async with self._reload_lock:
            try:
                policy = await asyncio.to_thread(self._load_policy)
            except Exception as exc:
                self.policy_error = str(exc)
                self.metrics.policy_reload_errors.inc()
                self.serial += 1
                self.events.emit(POLICY_RELOAD, REJECTED, value=self.policy.name,
                                 error=str(exc), cause=OPERATOR, by=by,
                                 dry_run=self.dry_run)
                self._notify_status()
                raise
            self.controller.set_policy(policy)
            await configure_nic_steering(self.dataplane, policy.placement.nic_steering)
            self.policy_error = None
            self.serial += 1
            self.events.emit(POLICY_RELOAD, DONE, value=policy.name,
                             reason=Reason("loaded", f"from {policy.source}"),
                             cause=OPERATOR, by=by, dry_run=self.dry_run)
            self._notify_status()
            return policy

    def request_reload(self) -> None:
        """SIGHUP: reload in the background; errors are logged by reload_policy."""
        task = asyncio.get_running_loop().create_task(self._reload_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(Exception):
            await self.reload_policy(by="SIGHUP")

    def request_stop(self, code: int = 0) -> None:
        if not self.stopping.is_set():
            self.exit_code = code
            self._notify("STOPPING=1")
            self.stopping.set()
            self.events.close()  # event streams (GET /v1/events?follow=1) end

    # -- the loop --------------------------------------------------------------------
    async def tick(self) -> TickResult | None:
        """One tick; never raises (except cancellation): errors are logged and counted."""
        wall_now = self.wall()
        result: TickResult | None = None
        try:
            await self._drop_expired(wall_now)
            overrides = tuple(self.overrides.values())
            result = await run_tick(
                self.dataplane,
                self.controller,
                overrides,
                wall_now,
                dry_run=self.dry_run,
                op_timeout=self._op_timeout,
                sample_timeout=self._sample_timeout,
                report=self._report,
            )
            if self.dry_run:
                self._report_would(result)
            await self._after_tick(result, overrides, wall_now)
        except TransientError as exc:
            self.last_error = f"sample: {exc}"
            self.metrics.sample_errors.inc()
            log.warning("tick skipped, reading the data plane failed: %s", exc)
        except Exception as exc:
            self.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self.metrics.internal_errors.inc()
            log.exception("tick failed")
        self.serial += 1
        self._notify("WATCHDOG=1")
        self._notify_status()
        return result

    async def _after_tick(
        self, result: TickResult, overrides: tuple[Override, ...], wall_now: float
    ) -> None:
        self.snapshot = self.controller.status(overrides, wall_now)
        self.ticks += 1
        self.last_tick = wall_now
        self.metrics.observe(self.snapshot)
        self.metrics.ticks.inc()
        self.metrics.tick_duration.observe(result.duration)
        for r in result.results:
            if r.error is None and isinstance(r.op, SetPeerMode):
                self.metrics.mode_changed(r.op)
        errors = [r for r in result.results if r.error is not None]
        for r in errors:
            if r.permanent:
                self.metrics.permanent_errors.inc()
            else:
                self.metrics.transient_errors.inc()
        self.last_error = f"{self._describe(errors[-1].op)}: {errors[-1].error}" \
            if errors else None
        await self._persist_unmanaged()
        if self.manage_gc:
            self._collect_garbage()
        if not self._ready:
            self._ready = True
            self._notify("READY=1")
            log.info(
                "first tick done: %d peer(s) on %d interface(s), policy %r%s",
                sum(len(i.peers) for i in self.snapshot),
                len(self.snapshot),
                self.policy.name,
                " (dry run: changing nothing)" if self.dry_run else "",
            )

    def _collect_garbage(self) -> None:
        """The cyclic collector's full passes, at a time the loop chooses: right after a
        tick (the next one is furthest away), at most every FULL_GC_EVERY seconds.

        Left to itself, the collector runs a full pass every few thousand API requests,
        wherever it falls, and a pass over the daemon's heap (numpy, aiohttp, the
        snapshot: hundreds of thousands of objects) stalls the loop for 20-60 ms: that was
        the tick-interval jitter bench/api_load.py measured. Everything alive after the
        first tick lives as long as the daemon, so it is frozen out of the passes
        (gc.freeze); the young generations stay automatic (they are cheap)."""
        now = self.clock()
        if self._last_full_gc is None:
            gc.collect()
            gc.freeze()
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, 1_000_000)  # no automatic full pass
            self._last_full_gc = now
        elif now - self._last_full_gc >= FULL_GC_EVERY:
            gc.collect()
            self._last_full_gc = now

    # -- events ------------------------------------------------------------------------
    def _log_event(self, event: Event) -> None:
        """The event log's sink: one line, with the journal's fields (wghybrid._log)."""
        log.log(level(event), "%s", line(event), extra=journal_fields(event))

    def _peer_event(
        self, op: str, result: str, interface: str, public_key: bytes, **fields: Any
    ) -> Event:
        return self.events.emit(op, result, interface=interface, public_key=public_key,
                                name=self.name_of(interface, public_key),
                                dry_run=self.dry_run, **fields)

    def _op_event(self, op: Operation, result: str, error: str = "") -> Event:
        fields = op_fields(op)
        cause, by = AUTOMATIC, ""
        if op.reason is not None and op.reason.rule == "override":
            cause = OVERRIDE
            if isinstance(op, SetPeerMode | SetPeerCore):
                by = self.override_by(op.interface, op.public_key)
        if "public_key" in fields:
            fields["name"] = self.name_of(fields["interface"], fields["public_key"])
        return self.events.emit(fields.pop("op"), result, cause=cause, by=by, error=error,
                                dry_run=self.dry_run, **fields)

    def _describe(self, op: Operation) -> str:
        """An operation in wg-quick's words, the peer by its name where it has one."""
        fields = op_fields(op)
        if "public_key" in fields:
            fields["name"] = self.name_of(fields["interface"], fields["public_key"])
        return describe(Event(0, 0.0, fields.pop("op"), DONE, **fields))

    def _report(self, r: OpResult) -> None:
        """run_tick's report: an event per applied (or refused) operation."""
        if r.error is None:
            self._op_event(r.op, DONE)
        elif not r.permanent:
            self._op_event(r.op, FAILED, r.error)
        else:
            peer = isinstance(r.op, SetPeerMode | SetPeerCore)
            self._op_event(r.op, UNMANAGED if peer else UNSUPPORTED, r.error)

    def _report_would(self, result: TickResult) -> None:
        """A dry run applies nothing, so the controller plans the same operations tick
        after tick: an event when an operation enters the plan (`would`) and when it
        leaves it (`withdrawn`), none while it stays."""
        new, gone = self._would.update(result.plan)
        for op in gone:
            self._op_event(op, WITHDRAWN)
        for op in new:
            self._op_event(op, WOULD)

    def status_line(self) -> str:
        peers, inline, pinned, unmanaged = counts(self.snapshot)
        parts = [
            f"{peers} peers: {inline} inline, {peers - inline} vanilla",
            f"{pinned} pinned",
            f"{unmanaged} unmanaged",
            f"policy {self.policy.name}",
        ]
        if self.dry_run:
            parts.insert(0, "dry run")
        if self.policy_error:
            parts.append("reload rejected: " + self.policy_error)
        if self.last_error:
            parts.append("error: " + self.last_error)
        return "; ".join(parts).replace("\n", " ")

    def _notify_status(self) -> None:
        self._notify("STATUS=" + self.status_line())

    async def run_loop(self) -> None:
        """Tick on a fixed cadence until `stopping` is set."""
        interval = self.policy.interval
        anchor = self.clock()
        k = 0
        while not self.stopping.is_set():
            started = self.clock()
            self.metrics.tick_lateness.observe(max(0.0, started - (anchor + k * interval)))
            await self.tick()
            now = self.clock()
            if self.policy.interval != interval:
                anchor, k, interval = anchor + k * interval, 0, self.policy.interval
            due = math.floor((now - anchor) / interval) + 1
            if due > k + 1:
                self.metrics.ticks_skipped.inc(due - k - 1)
            k = max(k + 1, due)
            await self._wait_until(anchor + k * interval)

    async def _wait_until(self, deadline: float) -> None:
        """Wait for the stop event until `deadline`; when the policy's interval is longer
        than half systemd's watchdog period, wake up to ping it in between.

        One task waits on the stop event for the loop's whole life and each nap is an
        `asyncio.wait` on it with a timeout: waking up takes two turns of the event loop.
        (`wait_for(event.wait(), t)` creates, cancels and reaps a task per nap, four turns
        on Python 3.11, each behind whatever requests are ready: that is tick jitter.)"""
        if self._stop_waiter is None or self._stop_waiter.done():
            self._stop_waiter = asyncio.get_running_loop().create_task(self.stopping.wait())
        while not self.stopping.is_set():
            timeout = deadline - self.clock()
            if timeout <= 0:
                return
            if self.watchdog_period is not None and timeout > self.watchdog_period:
                timeout = self.watchdog_period
            await asyncio.wait((self._stop_waiter,), timeout=timeout)
            if self.clock() < deadline:
                self._notify("WATCHDOG=1")

    async def loop_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup_ctx: the tick loop lives as long as the application."""
        task = asyncio.get_running_loop().create_task(self.run_loop(), name="wghybrid-loop")

        def on_done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.critical("the control loop died", exc_info=t.exception())
                self.request_stop(1)

        task.add_done_callback(on_done)
        yield
        self.stopping.set()
        done, _ = await asyncio.wait([task], timeout=STOP_GRACE)
        if self._stop_waiter is not None:
            self._stop_waiter.cancel()
        if not done:
            log.warning("the tick in progress did not finish in %g s; cancelling it", STOP_GRACE)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def shutdown(self) -> None:
        """After the loop stopped: fail-static, or restore the modes found at start."""
        for task in list(self._tasks):
            task.cancel()
        if self.policy.restore_on_stop and not self.dry_run:
            plan = self.controller.restore_plan()
            log.info("restoring the modes found at start: %d change(s)", len(plan))
            for op in plan:
                op = dataclasses.replace(op, reason=Reason(
                    "restore-on-stop", "the mode it was found in (policy restore_on_stop)"))
                try:
                    await asyncio.wait_for(self.dataplane.apply(op), self._op_timeout)
                except Exception as exc:
                    self._op_event(op, FAILED, str(exc) or type(exc).__name__)
                else:
                    self._op_event(op, DONE)
        else:
            log.info("stopping; every tunnel keeps its current mode (fail-static)")
        try:
            await asyncio.wait_for(self.dataplane.close(), self._op_timeout)
        except Exception as exc:
            log.warning("closing the data plane: %s", exc)


# ---------------------------------------------------------------------------------------
# Starting and stopping: listeners, the data plane, the policy


@dataclass(frozen=True, slots=True)
class RunConfig:
    backend: str
    scenario: str
    policy: Path | None
    state_dir: Path
    socket: Path
    listen: tuple[str, int] | None
    token: str | None
    """The admin bearer token of the TCP listener."""
    tls: ssl.SSLContext | None
    dry_run: bool
    op_timeout: float
    sample_timeout: float
    sim_speed: float = 1.0
    read_token: str | None = None
    """The read-only bearer token of the TCP listener."""
    admin_gids: frozenset[int] = frozenset()
    """Groups whose members get the admin role on the unix socket."""


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `wghybrid run` (the CLI adds them to its `run` subcommand)."""
    parser.add_argument(
        "--backend",
        choices=("kernel", "sim"),
        default="kernel",
        help="data plane: the patched kernel module, or the simulated gateway (default: kernel)",
    )
    parser.add_argument(
        "--scenario",
        default="mixed",
        metavar="NAME|PATH",
        help="sim backend: a packaged scenario name or a scenario TOML file (default: mixed)",
    )
    parser.add_argument(
        "--sim-speed",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="sim backend: simulated seconds per real second (default: 1)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"policy TOML (default: {ETC_POLICY} if it exists, else the packaged default)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(DEFAULT_STATE_DIR),
        metavar="DIR",
        help=f"where overrides and unmanaged marks persist (default: {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"unix socket of the API (default: $WGHYBRID_SOCKET or {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--listen",
        default=None,
        metavar="HOST:PORT",
        help="also serve the API on TCP (requires --token-file or --read-token-file)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="admin bearer token for TCP requests (reads and changes)",
    )
    parser.add_argument(
        "--read-token-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="read-only bearer token for TCP requests (status, peers, metrics...)",
    )
    parser.add_argument(
        "--admin-group",
        action="append",
        default=[],
        metavar="GROUP",
        help="members of GROUP may change things through the unix socket (besides root and "
        "the daemon's own user; everyone else who can open the socket only reads); repeatable",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        default=None,
        metavar="FILE",
        help="serve TCP over TLS with this certificate (PEM)",
    )
    parser.add_argument(
        "--tls-key", type=Path, default=None, metavar="FILE", help="private key of --tls-cert (PEM)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="decide and report, change nothing (state is not written)",
    )
    parser.add_argument(
        "--op-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="time limit of one data-plane operation (default: 2)",
    )
    parser.add_argument(
        "--sample-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="time limit of reading the data plane's counters (default: 5)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error", "critical"),
        help="log level (default: info)",
    )


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"--listen {text!r}: expected HOST:PORT")
    host = host.removeprefix("[").removesuffix("]")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--listen {text!r}: port {port!r} is not a number") from None
    if not 0 < number < 65536:
        raise ConfigError(f"--listen {text!r}: port {number} is out of range")
    return host, number


def read_token_file(path: Path, option: str = "--token-file") -> str:
    try:
        raw = read_regular(path, MAX_TOKEN_FILE)
        token = raw.decode("utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{option} {path}: not UTF-8 text") from None
    if len(token) < 16:
        raise ConfigError(f"{option} {path}: the token must be at least 16 characters")
    if any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"{option} {path}: the token must be one word of printable characters")
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "anyone" if mode & stat.S_IROTH else "its group"
        log.warning(
            "%s %s is readable by %s (mode %04o): anyone who can read it controls the API; "
            "chmod 600 it",
            option,
            path,
            who,
            stat.S_IMODE(mode),
        )
    return token


def _admin_gids(names: list[str]) -> frozenset[int]:
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid if not name.isdigit() else int(name))
        except KeyError:
            raise ConfigError(f"--admin-group {name}: no such group") from None
    return frozenset(gids)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    socket_path = args.socket or Path(os.environ.get("WGHYBRID_SOCKET") or DEFAULT_SOCKET)
    listen = parse_listen(args.listen) if args.listen else None
    read_file = getattr(args, "read_token_file", None)
    if listen is None and (args.token_file is not None or read_file is not None):
        option = "--token-file" if args.token_file is not None else "--read-token-file"
        raise ConfigError(
            f"{option} only applies with --listen: the unix socket goes by file permissions "
            "and the client's credentials, not tokens"
        )
    token = read_token_file(args.token_file) if args.token_file else None
    read_token = read_token_file(read_file, "--read-token-file") if read_file else None
    if listen is not None and token is None and read_token is None:
        raise ConfigError("--listen needs --token-file: the API is never open on TCP without one")
    if token is not None and token == read_token:
        raise ConfigError("--token-file and --read-token-file must hold different tokens")
    admin_gids = _admin_gids(list(getattr(args, "admin_group", None) or []))
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        if listen is None:
            raise ConfigError("--tls-cert only applies with --listen")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"--tls-cert {args.tls_cert}: {exc}") from None
    if listen is not None and tls is None:
        log.warning(
            "--listen %s without --tls-cert: bearer tokens and answers cross the network in "
            "clear text; use TLS unless the path is trusted (loopback, a VPN)",
            args.listen,
        )
    for name in ("op_timeout", "sample_timeout", "sim_speed"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of seconds")
    return RunConfig(
        backend=args.backend,
        scenario=args.scenario,
        policy=args.policy,
        state_dir=args.state_dir,
        socket=socket_path,
        listen=listen,
        token=token,
        tls=tls,
        dry_run=args.dry_run,
        op_timeout=args.op_timeout,
        sample_timeout=args.sample_timeout,
        sim_speed=args.sim_speed,
        read_token=read_token,
        admin_gids=admin_gids,
    )


def _policy_loader(
    path: Path | None, online_cores: int, names: dict[bytes, str]
) -> Callable[[], Policy]:
    """A function that (re)loads the policy file: --policy, else /etc/wghybrid/policy.toml
    when it exists, else the packaged default. `names` (the sim's tunnel names) fill in
    peers the policy does not name."""
    if path is None:
        path = Path(ETC_POLICY) if Path(ETC_POLICY).exists() else shipped_policy_path()
    chosen = path

    def loader() -> Policy:
        policy = load_policy(chosen, online_cores=online_cores)
        if names:
            policy = dataclasses.replace(policy, names={**names, **policy.names})
        return policy

    return loader


class PersistentSim:
    """The simulated gateway behind the DataPlane interface, with its data-plane state
    (each peer's mode and core, the crypt pool, threaded NAPI, the scenario clock) kept in
    a file, so that it outlives the daemon as the kernel module's state does: a restarted
    or SIGKILLed daemon finds the modes it left, not the scenario's initial ones."""

    def __init__(
        self,
        scenario: Scenario,
        path: Path,
        speed: float = 1.0,
        wall: Callable[[], float] = time.time,
        persist: bool = True,
    ) -> None:
        self.path = path
        self.scenario = scenario
        self._persist = persist
        self._wall = wall
        self._speed = speed
        self._keys = [encode_key(t.public_key) for t in scenario.tunnels]
        offset = 0.0
        saved = self._load()
        start = time.monotonic()

        def clock() -> float:
            return offset + (time.monotonic() - start) * speed

        self.sim = SimDataPlane(scenario, clock=clock)
        gw = self.sim.gateway
        if saved is not None:
            offset = float(saved["time"]) + max(0.0, wall() - float(saved["wall"])) * speed
            gw.mode[:] = np.asarray(saved["mode"], dtype=np.uint8)
            gw.core[:] = np.asarray(saved["core"], dtype=np.int32)
            gw.crypt_cores = frozenset(int(c) for c in saved["crypt_cores"])
            gw.threaded_napi = bool(saved["threaded_napi"])
            gw.time = offset  # counters restart from zero here; the controller re-baselines
            log.info(
                "simulated gateway: resumed %s at t=%.1f s from %s", scenario.name, offset, path
            )

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    def _load(self) -> dict[str, Any] | None:
        try:
            saved = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("simulated gateway: ignoring %s: %s", self.path, exc)
            return None
        if not isinstance(saved, dict) or saved.get("keys") != self._keys:
            log.info("simulated gateway: %s is for another scenario; starting afresh", self.path)
            return None
        return saved

    def _state(self) -> bytes | None:
        if not self._persist:
            return None  # --dry-run: the simulated kernel keeps its state in memory only
        gw = self.sim.gateway
        data = {
            "scenario": self.scenario.name,
            "keys": self._keys,
            "mode": gw.mode.tolist(),
            "core": gw.core.tolist(),
            "crypt_cores": sorted(gw.crypt_cores),
            "threaded_napi": gw.threaded_napi,
            "time": self.sim.clock(),
            "wall": self._wall(),
        }
        return json.dumps(data).encode()

    def _write(self, data: bytes | None) -> None:
        # The simulated kernel's memory: it must survive SIGKILL of the daemon, which
        # rename() alone ensures; fsync (power loss) is not worth its latency here.
        if data is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def _save(self) -> None:
        self._write(self._state())

    async def sample(self) -> GatewaySample:
        return await self.sim.sample()

    async def apply(self, op: Operation) -> None:
        await self.sim.apply(op)
        # Saved before the operation counts as done, as the kernel's state would be. On
        # the loop, not in a thread: a thread hop per operation stretches a busy tick past
        # its slot when the machine is loaded, and the write is small (the keys are
        # encoded once, in __init__).
        self._save()

    async def close(self) -> None:
        if not self.sim.closed:
            self._save()
        await self.sim.close()


async def _open_dataplane(cfg: RunConfig) -> tuple[DataPlane, int, dict[bytes, str]]:
    """The data plane, the number of online cores, and names it knows for peers."""
    if cfg.backend == "sim":
        try:
            scenario = load_scenario(cfg.scenario)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--scenario {cfg.scenario}: {exc}") from None
        path = cfg.state_dir / "sim-gateway.json"
        cfg.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        names = {t.public_key: t.name for t in scenario.tunnels}
        sim = PersistentSim(scenario, path, cfg.sim_speed, persist=not cfg.dry_run)
        return sim, int(scenario.cores), names
    try:
        from wghybrid import kernel

        open_kernel = kernel.open_dataplane
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--backend kernel is not available in this build: {exc}") from None
    try:
        dataplane: DataPlane = await open_kernel()
    except (OSError, DataPlaneError) as exc:
        raise ConfigError(f"--backend kernel: {exc}") from None
    return dataplane, os.cpu_count() or 1, {}


async def _check_socket_free(path: Path) -> None:
    """Refuse to steal the socket of a daemon that still answers; remove a stale one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"--socket {path}: exists and is not a socket")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (OSError, TimeoutError):
        path.unlink(missing_ok=True)
        return
    writer.close()
    raise ConfigError(f"another daemon is listening on {path}")


def acquire_lock(path: Path, what: str) -> int:
    """An exclusive flock on `path` (created if need be, our pid written in it), held by
    the returned descriptor until it is closed or the process ends, however it ends."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
    except OSError as exc:
        raise ConfigError(f"cannot lock {what}: {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        other = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"cannot lock {what}: {path}: {exc.strerror or exc}") from None
        pid = f"pid {other}" if other.isdigit() else "its pid not yet written"
        raise ConfigError(
            f"another wghybrid daemon ({pid}) is running on {what} (it holds {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _locks(cfg: RunConfig) -> list[int]:
    """One daemon per state directory; one per kernel data plane (a dry run drives
    nothing, so it may watch beside the real one)."""
    try:
        cfg.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--state-dir {cfg.state_dir}: {exc.strerror or exc}") from None
    fds = [acquire_lock(cfg.state_dir / LOCK_FILE, f"the state directory {cfg.state_dir}")]
    if cfg.backend == "kernel" and not cfg.dry_run:
        try:
            lock = Path(KERNEL_LOCK)
            with contextlib.suppress(FileExistsError):
                lock.parent.mkdir(mode=0o750, parents=True)
            fds.append(acquire_lock(lock, "the kernel data plane"))
        except BaseException:
            os.close(fds[0])
            raise
    return fds


async def serve(cfg: RunConfig) -> int:
    """Run the daemon until SIGTERM/SIGINT (or a fatal error); the exit status."""
    locks = _locks(cfg)
    try:
        return await _serve_locked(cfg)
    finally:
        for fd in locks:
            os.close(fd)


async def _serve_locked(cfg: RunConfig) -> int:
    store = StateStore(cfg.state_dir)
    try:
        state = store.load()
    except (StateError, OSError) as exc:
        raise ConfigError(f"cannot read the state: {exc}") from None
    dataplane, online, names = await _open_dataplane(cfg)
    try:
        loader = _policy_loader(cfg.policy, online, names)
        try:
            policy = await asyncio.to_thread(loader)
        except Exception as exc:
            raise ConfigError(f"bad policy: {exc}") from None
        await configure_nic_steering(dataplane, policy.placement.nic_steering)
        daemon = Daemon(
            dataplane=dataplane,
            policy=policy,
            load_policy=loader,
            store=store,
            backend=cfg.backend,
            dry_run=cfg.dry_run,
            op_timeout=cfg.op_timeout,
            sample_timeout=cfg.sample_timeout,
        )
        daemon.restore_state(state)
    except BaseException:
        await dataplane.close()
        raise
    return await _serve_daemon(daemon, cfg)


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's exception handler: one rate-limited line (an accept() that failed,
    a transport's error, a task nobody awaited), not asyncio's multi-line report."""
    exc = context.get("exception")
    message = context.get("message") or "event loop error"
    loop_log.warning("%s%s", message, f": {type(exc).__name__}: {exc}" if exc else "")


async def _serve_daemon(daemon: Daemon, cfg: RunConfig) -> int:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    loop.set_exception_handler(_loop_error)
    daemon.manage_gc = True
    access = Access(
        admin_token=cfg.token,
        read_token=cfg.read_token,
        admin_uids=frozenset({0, os.geteuid()}),
        admin_gids=cfg.admin_gids,
    )
    cap, backlog = limits_for(1 if cfg.listen is None else 2)
    # Event streams (GET /v1/events?follow=1) hold a connection each and are never
    # evicted (they are mid-request): a quarter of one listener's cap at most.
    app = build_app(daemon, access=access, max_streams=max(1, min(64, cap // 4)))
    app.cleanup_ctx.append(daemon.loop_ctx)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=2.0,
        # aiohttp's own limits: keepalive_timeout also closes a connection that sends no
        # complete request head in time (a header timeout); the rest bound what one
        # request head may hold. Bad requests are logged by the clients logger, one
        # rate-limited line each (wghybrid/_log.py), never an aiohttp traceback.
        keepalive_timeout=IDLE_TIMEOUT,
        lingering_time=LINGER,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
        logger=logging.getLogger("wghybrid.clients"),
    )
    sock_inode: int | None = None
    try:
        sock_dir = cfg.socket.parent
        if not sock_dir.exists():
            sock_dir.mkdir(mode=0o750, parents=True)
        await _check_socket_free(cfg.socket)
        await runner.setup()
        unix_guard = ConnectionGuard(f"unix socket {cfg.socket}", cap, app[BUSY])
        try:
            await GuardedSite(runner, unix_guard, path=str(cfg.socket), backlog=backlog).start()
        except OSError as exc:
            raise ConfigError(f"--socket {cfg.socket}: {exc.strerror or exc}") from None
        os.chmod(cfg.socket, 0o660)
        sock_inode = cfg.socket.lstat().st_ino
        log.info(
            "wghybrid %s: backend %s, policy %r (%s), API on %s%s",
            daemon.version,
            daemon.backend,
            daemon.policy.name,
            daemon.policy.source,
            cfg.socket,
            " (dry run)" if daemon.dry_run else "",
        )
        if cfg.listen is not None:
            host, port = cfg.listen
            tcp_guard = ConnectionGuard(f"TCP {host}:{port}", cap, app[BUSY])
            try:
                await GuardedSite(
                    runner, tcp_guard, host=host, port=port, ssl_context=cfg.tls, backlog=backlog
                ).start()
            except OSError as exc:
                raise ConfigError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
            log.info(
                "API also on %s://%s:%d (bearer token required: %s)",
                "https" if cfg.tls else "http",
                host,
                port,
                " or ".join(
                    role
                    for role, t in (("admin", cfg.token), ("read-only", cfg.read_token))
                    if t is not None
                ),
            )
        log.info("at most %d connections per listener, backlog %d", cap, backlog)
        await daemon.stopping.wait()
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        await daemon.shutdown()
        if sock_inode is not None:
            with contextlib.suppress(OSError):
                if cfg.socket.lstat().st_ino == sock_inode:
                    cfg.socket.unlink()
    return daemon.exit_code


def run_command(args: argparse.Namespace) -> int:
    """`wghybrid run`: the daemon in the foreground. 0 on a clean stop, 2 when it cannot
    start as configured (the reason is logged in one line), 1 on a fatal error."""
    level = getattr(args, "log_level", None)
    if level:
        from wghybrid._log import setup_logging

        setup_logging(level)
    try:
        cfg = config_from_args(args)
        return asyncio.run(serve(cfg))
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
