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

import asyncio
import contextlib
import dataclasses
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from wghybrid import __version__
from wghybrid.core.controller import Controller
from wghybrid.core.status import counts, locate
from wghybrid.daemon.api.base import Health
from wghybrid.daemon.config import FULL_GC_EVERY, STOP_GRACE
from wghybrid.daemon.events import (
    DONE,
    FAILED,
    OPERATOR,
    POLICY_RELOAD,
    REJECTED,
    EventLog,
)
from wghybrid.daemon.metrics import DaemonMetrics
from wghybrid.daemon.notify import Notifier, watchdog_period
from wghybrid.daemon.overrides import OverrideBook
from wghybrid.daemon.report import (
    Reporter,
    log_event,
)
from wghybrid.daemon.stall import StallWatch
from wghybrid.daemon.state import (
    DaemonState,
    StateStore,
)
from wghybrid.daemon.tick import TickResult, run_tick
from wghybrid.dataplane import (
    DataPlane,
    TransientError,
    configure_nic_steering,
)
from wghybrid.model import (
    U64,
    InterfaceStatus,
    Override,
    PeerId,
    Reason,
    SetPeerMode,
)
from wghybrid.policy import Policy

log = logging.getLogger("wghybrid.daemon")

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

        self.snapshot: tuple[InterfaceStatus, ...] = ()
        self.serial = 0
        """Bumped whenever the snapshot, the policy or an error count changes (each tick,
        at least); the API's cached answers are keyed on it."""
        self.ticks = 0
        self.last_tick: float | None = None
        self.last_error: str | None = None
        self.policy_error: str | None = None
        self.exit_code = 0
        self.stopping = asyncio.Event()
        self._ready = False
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_waiter: asyncio.Task[Any] | None = None
        self.manage_gc = False
        """`wghybrid run` sets it: the daemon's process times the garbage collector's full
        passes (`_collect_garbage`); an in-process test server leaves the collector alone."""
        self._last_full_gc: float | None = None
        self.events = EventLog(clock=wall, sink=log_event)
        """Every change and refusal, as data (`wghybrid.daemon.events`): GET /v1/events, the log
        lines and the journal's fields are renderings of it."""
        self.report = Reporter(self.events, self.name_of, self.override_by,
                               lambda: self.dry_run)
        """Operations and their results as events (wghybrid.daemon.report)."""
        self.book = OverrideBook(store, self.report, wall=wall, dry_run=lambda: self.dry_run)
        """The overrides and the persisted marks (wghybrid.daemon.overrides)."""
        self.stall = StallWatch(dataplane, self.controller, self.report,
                                lambda: self.dry_run, op_timeout=op_timeout,
                                step=self._stall_step)
        """Stalled decryption: detected after each tick, recovered, said
        (wghybrid.daemon.stall)."""
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
        return self.book.live()

    def present(self, keys: list[PeerId]) -> list[bool]:
        """For each peer, whether it is in the last snapshot."""
        return [at is not None for at in locate(self.snapshot, keys)]

    def peer_names(self, keys: list[PeerId]) -> list[str]:
        """For each peer of an override, its friendly name: the snapshot's, else the
        policy's, else ""."""
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
        return self.book.by(interface, public_key)

    def override_presence(self) -> list[tuple[Override, bool]]:
        live = self.live_overrides()
        return list(zip(live, self.present([o.peer for o in live]), strict=True))

    # -- overrides and state (wghybrid.daemon.overrides) ------------------------------
    @property
    def overrides(self) -> dict[PeerId, Override]:
        return self.book.overrides

    @property
    def overrides_serial(self) -> int:
        return self.book.serial

    def restore_state(self, state: DaemonState) -> None:
        """Adopt the persisted overrides and unmanaged marks (before the first tick)."""
        self.book.restore(state)
        for u in state.unmanaged:
            self.controller.mark_unmanaged(u.interface, u.public_key, u.reason)
        for n in state.napi_off:
            self.controller.forbid_threaded_napi(n.interface, n.reason)
        if state.overrides or state.unmanaged:
            log.info("restored %d override(s) and %d unmanaged mark(s) from %s",
                     len(state.overrides), len(state.unmanaged), self.store.path)
        for n in state.napi_off:
            log.warning("threaded NAPI stays off on %s (%s): %s", n.interface,
                        self.store.path, n.reason)

    async def set_override(self, override: Override, by: str = "") -> Override:
        """Pin a peer (replacing its previous override); persisted before returning."""
        return await self.book.set(override, by)

    async def clear_override(
        self, interface: str, public_key: bytes, by: str = ""
    ) -> Override | None:
        return await self.book.clear(PeerId(interface, public_key), by)

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
            await self.book.drop_expired(wall_now)
            overrides = tuple(self.overrides.values())
            result = await run_tick(
                self.dataplane,
                self.controller,
                overrides,
                wall_now,
                dry_run=self.dry_run,
                op_timeout=self._op_timeout,
                sample_timeout=self._sample_timeout,
                report=self.report.op_result,
            )
            if self.dry_run:
                self.report.would(result)
            if self.controller.sample is not None:
                await self.stall.check(self.controller.sample)
                self.metrics.stalled_peers.set(self.stall.stalled)
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
        self.last_error = f"{self.report.describe(errors[-1].op)}: {errors[-1].error}" \
            if errors else None
        await self.book.persist_unmanaged(self.controller.unmanaged())
        await self.book.persist_napi_off(self.controller.napi_off())
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

    def _stall_step(self, interface: str, step: str) -> None:
        self.metrics.stall_steps.labels(interface, step).inc()

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
                    self.report.op_event(op, FAILED, str(exc) or type(exc).__name__)
                else:
                    self.report.op_event(op, DONE)
        else:
            log.info("stopping; every tunnel keeps its current mode (fail-static)")
        try:
            await asyncio.wait_for(self.dataplane.close(), self._op_timeout)
        except Exception as exc:
            log.warning("closing the data plane: %s", exc)


