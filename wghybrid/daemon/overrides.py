"""The operator's overrides and the unmanaged marks, as the daemon keeps and persists them.

An override pins one peer's mode and/or core until it expires or is cleared; the
controller obeys the live ones every tick. Overrides and the controller's unmanaged marks
(peers left alone after a permanent error) survive restarts in the state file
(`wghybrid.daemon.state`): every change is written before it is acknowledged, and a
change that cannot be written is undone and raised (the API answers it as an error; the
tick logs it). One asyncio lock orders the writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from wghybrid.daemon.events import (
    DONE,
    OPERATOR,
    OVERRIDE,
    OVERRIDE_CLEAR,
    OVERRIDE_EXPIRE,
    OVERRIDE_SET,
)
from wghybrid.daemon.report import Reporter
from wghybrid.daemon.state import DaemonState, NapiOff, StateStore, Unmanaged, sorted_overrides
from wghybrid.model import Override, PeerId, Reason

log = logging.getLogger("wghybrid.daemon")


class OverrideBook:
    """The live overrides by peer, who set each, and the marks last persisted."""

    def __init__(
        self,
        store: StateStore,
        report: Reporter,
        *,
        wall: Callable[[], float],
        dry_run: Callable[[], bool],
    ) -> None:
        self.store = store
        self.report = report
        self.wall = wall
        self.dry_run = dry_run
        self.overrides: dict[PeerId, Override] = {}
        self.serial = 0
        """Bumped whenever an override is set, cleared or dropped."""
        self._by: dict[PeerId, str] = {}
        """Who set each override, where the API knew it (in memory: not persisted)."""
        self._persisted_unmanaged: dict[PeerId, str] = {}
        self._persisted_napi: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def restore(self, state: DaemonState) -> None:
        """Adopt the persisted overrides and marks (before the first tick); the caller
        hands the marks to the controller."""
        for o in state.overrides:
            self.overrides[o.peer] = o
        for u in state.unmanaged:
            self._persisted_unmanaged[PeerId(u.interface, u.public_key)] = u.reason
        for n in state.napi_off:
            self._persisted_napi[n.interface] = n.reason

    def live(self) -> list[Override]:
        now = self.wall()
        return [o for o in sorted_overrides(self.overrides.values()) if o.active(now)]

    def by(self, interface: str, public_key: bytes) -> str:
        """Who set the peer's override, where the API knew it ("" otherwise)."""
        return self._by.get(PeerId(interface, public_key), "")

    async def _persist(self, unmanaged: Mapping[PeerId, str] | None = None,
                       napi: Mapping[str, str] | None = None) -> None:
        """Write overrides + marks; the caller holds `_lock`."""
        marks = dict(self._persisted_unmanaged if unmanaged is None else unmanaged)
        napi_off = dict(self._persisted_napi if napi is None else napi)
        if not self.dry_run():
            state = DaemonState(
                sorted_overrides(self.overrides.values()),
                tuple(Unmanaged(p.interface, p.public_key, why)
                      for p, why in sorted(marks.items())),
                tuple(NapiOff(i, why) for i, why in sorted(napi_off.items())))
            await asyncio.to_thread(self.store.save, state)
        self._persisted_unmanaged = marks
        self._persisted_napi = napi_off

    async def set(self, override: Override, by: str = "") -> Override:
        """Pin a peer (replacing its previous override); persisted before returning.
        `by`: who asked, for the event log."""
        peer = override.peer
        async with self._lock:
            previous = self.overrides.get(peer)
            self.overrides[peer] = override
            try:
                await self._persist()
            except OSError:
                if previous is None:
                    del self.overrides[peer]
                else:
                    self.overrides[peer] = previous
                raise
            self.serial += 1
        if by:
            self._by[peer] = by
        else:
            self._by.pop(peer, None)
        what = [f"mode {override.mode}"] if override.mode is not None else []
        if override.core is not None:
            what.append(f"core {override.core}")
        if override.expires is not None:
            what.append(f"expires {time.strftime('%FT%TZ', time.gmtime(override.expires))}")
        self.report.peer_event(
            OVERRIDE_SET, DONE, override.interface, override.public_key, value=" ".join(what),
            reason=Reason("override", override.reason,
                          (("expires", override.expires),) if override.expires else ()),
            cause=OPERATOR, by=by,
        )
        return override

    async def clear(self, peer: PeerId, by: str = "") -> Override | None:
        """Clear a peer's override; the override if it was live, else None."""
        async with self._lock:
            previous = self.overrides.pop(peer, None)
            if previous is None:
                return None
            try:
                await self._persist()
            except OSError:
                self.overrides[peer] = previous
                raise
            self.serial += 1
        self._by.pop(peer, None)
        self.report.peer_event(OVERRIDE_CLEAR, DONE, *peer, cause=OPERATOR, by=by)
        return previous if previous.active(self.wall()) else None

    async def drop_expired(self, wall_now: float) -> None:
        expired = [p for p, o in self.overrides.items() if not o.active(wall_now)]
        if not expired:
            return
        async with self._lock:
            dropped = [self.overrides.pop(p) for p in expired if p in self.overrides]
            try:
                await self._persist()
            except OSError as exc:
                log.error("cannot save state to %s: %s", self.store.path, exc)
            self.serial += 1
        for o in dropped:
            self._by.pop(o.peer, None)
            self.report.peer_event(
                OVERRIDE_EXPIRE, DONE, o.interface, o.public_key, cause=OVERRIDE,
                reason=Reason("expired", "the override's time ran out",
                              (("expires", o.expires),) if o.expires is not None else ()),
            )

    async def persist_napi_off(self, devices: Mapping[str, str]) -> None:
        """Write the devices whose threaded NAPI the daemon turned off for good, when
        they changed (a failure is logged: the next change tries again)."""
        if devices == self._persisted_napi:
            return
        async with self._lock:
            try:
                await self._persist(napi=devices)
            except OSError as exc:
                log.error("cannot save state to %s: %s", self.store.path, exc)

    async def persist_unmanaged(self, marks: Mapping[PeerId, str]) -> None:
        """Write the controller's marks when they changed (a failure is logged: the
        next change tries again)."""
        if marks == self._persisted_unmanaged:
            return
        async with self._lock:
            try:
                await self._persist(marks)
            except OSError as exc:
                log.error("cannot save state to %s: %s", self.store.path, exc)
