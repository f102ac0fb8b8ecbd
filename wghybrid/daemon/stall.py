"""The daemon's guard against stalled decryption (issue 12, finding 8).

After each tick, `StallWatch.check` hands the tick's sample to the pure detector
(wghybrid.core.stall) and, per stalled peer, takes the next step, each one an event
(`op` "stall", journal field WGH_OP=stall) and a count in
`wghybrid_stall_steps_total`:

1. `threaded-napi-off`: when the peer's device has threaded NAPI on (the condition of
   CVE-2026-52945), it is turned off, and the controller is told never to turn it on
   there again (status shows the device's threaded NAPI knob as refused, with the
   reason); the state file keeps it across restarts, and a device found with it on
   again is turned off again. The NAPI is then polled from softirq.
2. `recreated`: when the device's threaded NAPI is off, or turning it off did not help
   within one window, the peer is removed and added again with the same configuration,
   mode and core (`PeerRecovery.recreate_peer`): fresh queues and a new handshake. Still
   stalled a window later: re-created again after `stall.retry` seconds, doubling each
   time, at most an hour apart (each attempt said, no loop).
3. `recovered`: the peer accepts packets again.

`stall.recover = false` reports (`detected`) and does nothing. A dry run reports what it
would do and does nothing. At most MAX_EPISODES peers are followed at once (the oldest
episodes go first); every bound is in this module.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from wghybrid.core.controller import Controller
from wghybrid.core.stall import StallDetector, Stalled
from wghybrid.daemon.events import (
    DONE,
    FAILED,
    STALL,
    STALL_DETECTED,
    STALL_NAPI_OFF,
    STALL_RECOVERED,
    STALL_RECREATED,
    WOULD,
)
from wghybrid.daemon.report import Reporter
from wghybrid.dataplane import DataPlane, DataPlaneError, PeerRecovery, TransientError
from wghybrid.model import GatewaySample, Mode, PeerId, Reason, SetThreadedNapi, short_key

MAX_EPISODES = 10_000
MAX_RETRY = 3600.0
RECREATE_TIMEOUT = 30.0
"""Seconds a re-creation may take: it reads the device's whole configuration through
upstream's family first (seconds in Python for 10,000 peers). Its removal and re-adding
are never cut short (the kernel backend shields them)."""
NAPI_RETRY = 60.0
"""Seconds between attempts to turn a kept-off device's threaded NAPI off again after one
failed (a read-only sysfs would otherwise make an event every tick)."""


@dataclass(slots=True)
class Episode:
    """One peer's stall, from detection to recovery."""

    opened: float
    """Sample clock when it was first seen stalled."""
    steps: list[str] = field(default_factory=list)
    next_at: float = 0.0
    """No step before this time (sample clock)."""
    recreated: int = 0


def _reason(s: Stalled, now: float, text: str) -> Reason:
    quiet = now - s.since
    return Reason(
        "stalled-rx",
        f"accepted no packet for {quiet:.0f} s while {s.dropped:,} of its packets were "
        f"dropped ({'vanilla' if s.mode == Mode.VANILLA else 'inline'}; {s.interface}'s "
        f"threaded NAPI {'on' if s.threaded_napi else 'off'}): {text}",
        (("quiet_s", quiet), ("dropped", float(s.dropped)),
         ("rx_packets", float(s.rx_packets))))


class StallWatch:
    def __init__(self, dataplane: DataPlane, controller: Controller, report: Reporter,
                 dry_run: Callable[[], bool], *, op_timeout: float = 2.0,
                 step: Callable[[str, str], None] | None = None) -> None:
        self.detector = StallDetector()
        self.dataplane = dataplane
        self.controller = controller
        self.report = report
        self.dry_run = dry_run
        self.op_timeout = op_timeout
        self.step = step
        """Called with (interface, step) for each step taken (the daemon's metrics)."""
        self.episodes: dict[PeerId, Episode] = {}
        self._napi_retry: dict[str, float] = {}
        """Per device, when turning its threaded NAPI off may be tried again after it
        failed (sample clock)."""

    @property
    def stalled(self) -> int:
        """Peers in an open episode (the gauge)."""
        return len(self.episodes)

    async def check(self, sample: GatewaySample) -> None:
        policy = self.controller.policy.stall
        if not policy.detect:
            self.episodes.clear()
            return
        await self._keep_napi_off(sample)
        found = self.detector.update(sample, policy.window, policy.min_drops,
                                     self.controller.alignment)
        now = float(sample.now)
        # Episodes that ended: the peer accepts again, or is gone (removed by hand).
        open_ = list(self.episodes.items())
        state = self.detector.accepted_since([p for p, _ in open_], [e.opened for _, e in open_])
        for (peer, ep), st in zip(open_, state.tolist(), strict=True):
            if st < 0:
                del self.episodes[peer]
            elif st > 0:
                del self.episodes[peer]
                steps = ", ".join(ep.steps) or "nothing"
                self._event(peer, STALL_RECOVERED, DONE, Reason(
                    "stalled-rx", f"accepts packets again after {now - ep.opened:.0f} s "
                    f"(the daemon did: {steps})", (("stalled_s", now - ep.opened),)))
        for s in found:
            await self._one(s, now)

    async def _keep_napi_off(self, sample: GatewaySample) -> None:
        """A device whose threaded NAPI the daemon turned off for good (this run or one
        before it: the state file) is turned off again if it is found on (set by hand,
        or by another tool)."""
        off = self.controller.napi_off()
        if not off or self.dry_run():
            return
        now = float(sample.now)
        for iface in sample.interfaces:
            if not iface.threaded_napi or iface.name not in off:
                continue
            if now < self._napi_retry.get(iface.name, -math.inf):
                continue  # it failed lately: one attempt (and one event) per NAPI_RETRY
            op = SetThreadedNapi(iface.name, False, Reason(
                "stalled-rx", f"found on; kept off: {off[iface.name]}"))
            ok, text = await self._call(self.dataplane.apply(op))
            self.report.op_event(op, DONE if ok else FAILED, "" if ok else text)
            if ok:
                self._napi_retry.pop(iface.name, None)
            else:
                self._napi_retry[iface.name] = now + NAPI_RETRY

    async def _one(self, s: Stalled, now: float) -> None:
        policy = self.controller.policy.stall
        peer = PeerId(s.interface, s.public_key)
        ep = self.episodes.get(peer)
        if ep is None:
            while len(self.episodes) >= MAX_EPISODES:
                del self.episodes[next(iter(self.episodes))]
            ep = self.episodes[peer] = Episode(s.since)
        if now < ep.next_at:
            return
        if not policy.recover or self.dry_run():
            # Said once; the episode stays open, so that a policy reload that allows
            # recovery (or the end of the dry run) acts at the next tick.
            if STALL_DETECTED not in ep.steps:
                ep.steps.append(STALL_DETECTED)
                why = ("policy stall.recover = false: nothing done" if not policy.recover
                       else "dry run: nothing done")
                self._event(peer, STALL_DETECTED, WOULD if self.dry_run() else DONE,
                            _reason(s, now, why))
            return
        if s.threaded_napi and STALL_NAPI_OFF not in ep.steps:
            op = SetThreadedNapi(s.interface, False, _reason(
                s, now, f"threaded NAPI off on {s.interface}, and never on again there"))
            ok, text = await self._call(self.dataplane.apply(op))
            if ok:
                ep.steps.append(STALL_NAPI_OFF)
                who = self.report.name_of(*peer) or short_key(peer.public_key)
                self.controller.forbid_threaded_napi(
                    s.interface, f"off since peer {s.interface}/{who}'s decryption "
                    "stalled with it on (stall.recover)")
                self.detector.rearm(s.row)
                ep.next_at = now + policy.window
                self._event(peer, STALL_NAPI_OFF, DONE, op.reason)
                return
            self._event(peer, STALL_NAPI_OFF, FAILED, op.reason, text)
        if not isinstance(self.dataplane, PeerRecovery):
            if STALL_DETECTED not in ep.steps:
                ep.steps.append(STALL_DETECTED)
                self._event(peer, STALL_DETECTED, DONE, _reason(
                    s, now, "this data plane cannot re-create peers: nothing more done"))
            return
        ok, text = await self._call(self.dataplane.recreate_peer(s.interface, s.public_key),
                                    max(self.op_timeout, RECREATE_TIMEOUT))
        if not ok:
            ep.next_at = now + policy.window
            self._event(peer, STALL_RECREATED, FAILED, _reason(s, now, "re-creating it"),
                        text)
            return
        ep.recreated += 1
        ep.steps.append(STALL_RECREATED)
        # The re-created peer is a new epoch, judged from scratch: stalled again one
        # window from now at the earliest. The next attempt waits `retry`, doubling.
        wait = min(policy.retry * 2 ** (ep.recreated - 1), MAX_RETRY)
        ep.next_at = now + max(wait, policy.window)
        self._event(peer, STALL_RECREATED, DONE, _reason(
            s, now, f"{text or 'removed and added again'} (attempt {ep.recreated}; if it "
            f"stays stalled, the next attempt in {max(wait, policy.window):.0f} s)"))

    async def _call(self, call: Awaitable[object], timeout: float | None = None
                    ) -> tuple[bool, str]:
        """Await `call` within `timeout` (default the operation timeout): (True, its
        text, if it returned one) or (False, the error)."""
        limit = self.op_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                result = await call
        except TimeoutError:
            return False, str(TransientError(f"timed out after {limit:g} s"))
        except DataPlaneError as exc:
            return False, str(exc)
        return True, result if isinstance(result, str) else ""

    def _event(self, peer: PeerId, value: str, result: str, reason: Reason | None,
               error: str = "") -> None:
        self.report.peer_event(STALL, result, peer.interface, peer.public_key, value=value,
                               reason=reason, error=error)
        if self.step is not None and result == DONE:
            self.step(peer.interface, value)
