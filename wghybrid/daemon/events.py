"""The event log: every change the daemon makes, and every refusal, as data.

An `Event` is one thing that happened (a mode change, a core move, a pool or device
change, an override set, cleared or expired, a policy reload accepted or rejected, a
data-plane operation that failed, for a while or for good), with the peer's name and key,
the controller's `Reason` (rule, text, numbers), the cause (automatic, an override, an
operator, and who where the API knows it) and whether it only would have happened (a dry
run). Everything else is a rendering of it:

- `line(event)`: the human log line, in wg-quick's manner (`[#] peer wg0/mouse-029 mode
  inline  # fits-inline: ...`);
- `journal_fields(event)`: the journal's fields (`WGH_INTERFACE`, `WGH_PEER`, `WGH_NAME`,
  `WGH_OP`, `WGH_RULE`, `WGH_CAUSE`, ..., and one `WGH_<NUMBER>` per number of the reason),
  so that `journalctl -u wghybrid WGH_INTERFACE=wg0 WGH_OP=mode` selects;
- `event_json(event)`: `GET /v1/events` and `wghybrid log --json`.

`EventLog` keeps the last `RING_SIZE` events in memory (a ring: bounded memory, the
oldest go first), numbered by a sequence id that only grows, so a reader asks for "what
came after N" and sees from the numbers whether it missed any.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wghybrid.model import (
    BadKeyError,
    Operation,
    Reason,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    decode_key,
    encode_key,
    format_cores,
    short_key,
)

RING_SIZE = 10_000
"""Events kept in memory (about 1 KB each at most: ~10 MB)."""
MAX_TEXT = 1024
"""Free text in an event (an error, who did it) is cut to this many characters."""

# Operations (`Event.op`, the journal's WGH_OP)
MODE = "mode"
CORE = "core"
CRYPT_CORES = "crypt-cores"
THREADED_NAPI = "threaded-napi"
OVERRIDE_SET = "override-set"
OVERRIDE_CLEAR = "override-clear"
OVERRIDE_EXPIRE = "override-expire"
POLICY_RELOAD = "policy-reload"
STALL = "stall"
"""A peer's decryption stalled (wghybrid.daemon.stall): `value` says what the daemon did
(the STALL_* values below), `reason` the numbers."""
OPS = (MODE, CORE, CRYPT_CORES, THREADED_NAPI, OVERRIDE_SET, OVERRIDE_CLEAR, OVERRIDE_EXPIRE,
       POLICY_RELOAD, STALL)

# Values of a STALL event
STALL_DETECTED = "detected"
"""Seen and reported; nothing done (policy `stall.recover = false`, or nothing left to try
before the retry time)."""
STALL_NAPI_OFF = "threaded-napi-off"
"""Threaded NAPI turned off on the peer's device, for good (the daemon never turns it on
there again while it runs)."""
STALL_RECREATED = "recreated"
"""The peer removed and added again with the same configuration, mode and core."""
STALL_RECOVERED = "recovered"
"""It accepts packets again after the step before."""

# Results (`Event.result`, WGH_RESULT)
DONE = "done"
"""Applied (or, for an override or a policy, accepted)."""
FAILED = "failed"
"""The data plane refused for now (transient): planned again next tick."""
UNMANAGED = "unmanaged"
"""The data plane refused for good: the peer is now unmanaged (status says why)."""
UNSUPPORTED = "unsupported"
"""The data plane refused a device knob for good: the daemon leaves it alone."""
REJECTED = "rejected"
"""A policy reload was refused; the old policy keeps running."""
WOULD = "would"
"""Dry run: the controller plans this (first planned at this event's time)."""
WITHDRAWN = "withdrawn"
"""Dry run: what an earlier `would` event planned is planned no more."""
RESULTS = (DONE, FAILED, UNMANAGED, UNSUPPORTED, REJECTED, WOULD, WITHDRAWN)

# Causes (`Event.cause`, WGH_CAUSE)
AUTOMATIC = "automatic"
"""The controller decided it from the traffic."""
OVERRIDE = "override"
"""The controller carried out an operator's override."""
OPERATOR = "operator"
"""An operator did it through the API (or a signal): `by` says who, where known."""


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    """Sequence id: 1, 2, 3... for the daemon's life; never reused, never reordered."""
    time: float
    """Wall-clock (unix) time."""
    op: str
    result: str
    interface: str = ""
    public_key: bytes | None = None
    """The peer's raw key, None for a device or daemon event."""
    name: str = ""
    """The peer's friendly name where one is known ("" otherwise)."""
    value: str = ""
    """What it was set to: "inline", "3", "0-7", "on", an override's "mode vanilla core 3",
    a policy's name."""
    reason: Reason | None = None
    cause: str = AUTOMATIC
    by: str = ""
    """Who, when the API knows it: "uid 1000 (alice)", "admin token (192.0.2.7)", "SIGHUP"."""
    error: str = ""
    dry_run: bool = False

    @property
    def label(self) -> str:
        """"wg0/mouse-029", or "wg0/Y1gB7Mn3" for an unnamed peer, or "wg0"."""
        if self.public_key is None:
            return self.interface
        return f"{self.interface}/{self.name or short_key(self.public_key)}"


def describe(event: Event) -> str:
    """The operation in wg-quick's words: "peer wg0/mouse-029 mode inline"."""
    if event.op in (MODE, CORE, STALL):
        return f"peer {event.label} {event.op} {event.value}"
    if event.op in (CRYPT_CORES, THREADED_NAPI):
        return f"dev {event.interface} {event.op} {event.value}"
    if event.op == POLICY_RELOAD:
        return f"policy {event.value}" if event.value else "policy"
    what = {OVERRIDE_SET: event.value, OVERRIDE_CLEAR: "cleared", OVERRIDE_EXPIRE: "expired"}
    return f"override {event.label} {what.get(event.op, event.op)}".rstrip()


def line(event: Event) -> str:
    """The human log line of an event."""
    by = f" by {event.by}" if event.by else ""
    why = ""
    if event.reason is not None and event.op not in (OVERRIDE_SET, OVERRIDE_EXPIRE,
                                                     POLICY_RELOAD):
        why = f"  # {event.reason.rule}: {event.reason.text}"
    what = describe(event)
    if event.result == DONE:
        if event.op == OVERRIDE_SET and event.reason is not None and event.reason.text:
            return f"[#] {what} ({event.reason.text}){by}"
        if event.op == POLICY_RELOAD:
            source = f" {event.reason.text}" if event.reason is not None else ""
            return f"[#] policy {event.value!r} loaded{source}{by}"
        return f"[#] {what}{by}{why}"
    if event.result == WOULD:
        return f"[dry-run] would: {what}{why}"
    if event.result == WITHDRAWN:
        return f"[dry-run] no longer would: {what}"
    if event.result == REJECTED:
        return f"[!] policy reload rejected{by}, keeping {event.value!r}: {event.error}"
    if event.reason is not None and event.reason.rule == "restore-on-stop":
        return f"[!] {what}: {event.error} (not restored: the daemon is stopping)"
    kind = {FAILED: "transient, retrying next tick",
            UNMANAGED: "permanent: the peer is now unmanaged",
            UNSUPPORTED: "permanent: the knob is left alone from now on"}
    return f"[!] {what}: {event.error} ({kind.get(event.result, event.result)})"


def level(event: Event) -> int:
    """The logging level of an event's line."""
    if event.result == REJECTED:
        return logging.ERROR
    if event.result in (FAILED, UNMANAGED, UNSUPPORTED):
        return logging.WARNING
    if event.op == STALL and event.value != STALL_RECOVERED:
        return logging.WARNING
    return logging.INFO


_FIELD = re.compile(r"[^A-Z0-9_]")


def field_name(number: str) -> str:
    """The journal field of a reason's number: "demand_gbps" -> "WGH_DEMAND_GBPS"."""
    return "WGH_" + _FIELD.sub("_", number.upper())


def journal_fields(event: Event) -> dict[str, str]:
    """The journal's fields for an event (`logging`'s `extra=`): journald keeps them, so
    `journalctl -u wghybrid WGH_INTERFACE=wg0 WGH_OP=mode` selects."""
    out = {
        "WGH_SEQ": str(event.seq),
        "WGH_OP": event.op,
        "WGH_RESULT": event.result,
        "WGH_CAUSE": event.cause,
        "WGH_DRY_RUN": "1" if event.dry_run else "0",
    }
    if event.interface:
        out["WGH_INTERFACE"] = event.interface
    if event.public_key is not None:
        out["WGH_PEER"] = encode_key(event.public_key)
    if event.name:
        out["WGH_NAME"] = event.name
    if event.value:
        out["WGH_VALUE"] = event.value
    if event.by:
        out["WGH_BY"] = event.by
    if event.error:
        out["WGH_ERROR"] = event.error
    if event.reason is not None:
        out["WGH_RULE"] = event.reason.rule
        for name, number in event.reason.numbers:
            out.setdefault(field_name(name), format(number, ".6g"))
    return out


def _number(x: float) -> float | None:
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def reason_json(reason: Reason | None) -> dict[str, Any] | None:
    if reason is None:
        return None
    return {"rule": reason.rule, "text": reason.text,
            "numbers": {k: _number(float(v)) for k, v in reason.numbers}}


def event_json(event: Event) -> dict[str, Any]:
    """An event as `GET /v1/events` shows it (components/schemas/Event)."""
    return {
        "seq": event.seq,
        "time": event.time,
        "interface": event.interface,
        "public_key": None if event.public_key is None else encode_key(event.public_key),
        "name": event.name,
        "op": event.op,
        "value": event.value,
        "result": event.result,
        "reason": reason_json(event.reason),
        "cause": event.cause,
        "by": event.by,
        "error": event.error or None,
        "dry_run": event.dry_run,
        "text": line(event),
    }


def op_fields(op: Operation) -> dict[str, Any]:
    """The event fields that come from one planned operation."""
    if isinstance(op, SetPeerMode):
        return {"op": MODE, "interface": op.interface, "public_key": op.public_key,
                "value": str(op.mode), "reason": op.reason}
    if isinstance(op, SetPeerCore):
        return {"op": CORE, "interface": op.interface, "public_key": op.public_key,
                "value": str(op.core), "reason": op.reason}
    if isinstance(op, SetCryptCores):
        return {"op": CRYPT_CORES, "interface": op.interface,
                "value": format_cores(op.cores), "reason": op.reason}
    assert isinstance(op, SetThreadedNapi)
    return {"op": THREADED_NAPI, "interface": op.interface,
            "value": "on" if op.enabled else "off", "reason": op.reason}


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


Match = Callable[[Event], bool]


def matcher(interface: str | None = None, peer: str | None = None) -> Match:
    """Events of `interface` (None: any) and of `peer` (a base64 key or a name; None: any)."""

    raw: bytes | None = None
    if peer is not None:
        try:
            raw = decode_key(peer)
        except BadKeyError:
            raw = None

    def match(e: Event) -> bool:
        if interface is not None and e.interface != interface:
            return False
        if peer is not None:
            if e.public_key is None:
                return False
            return e.name == peer or (raw is not None and e.public_key == raw)
        return True

    return match


class EventLog:
    """The last `size` events, numbered; `emit` also hands each one to `sink` (the
    daemon's logger). Readers ask for the events after a sequence id, and a follower
    waits for the next one (`wait`)."""

    def __init__(
        self,
        size: int = RING_SIZE,
        clock: Callable[[], float] = time.time,
        sink: Callable[[Event], None] | None = None,
    ) -> None:
        self._ring: deque[Event] = deque(maxlen=size)
        self._clock = clock
        self._sink = sink
        self._seq = 0
        self._changed: asyncio.Event | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._ring)

    @property
    def latest(self) -> int:
        """The sequence id of the last event (0: none yet)."""
        return self._seq

    @property
    def oldest(self) -> int | None:
        """The sequence id of the oldest event kept (None: none yet)."""
        return self._ring[0].seq if self._ring else None

    def emit(self, op: str, result: str, **fields: Any) -> Event:
        """Number, time-stamp, keep and log one event."""
        for name in ("error", "by", "value", "name"):
            if name in fields and isinstance(fields[name], str):
                fields[name] = _cut(fields[name])
        self._seq += 1
        event = Event(self._seq, self._clock(), op, result, **fields)
        self._ring.append(event)
        if self._sink is not None:
            self._sink(event)
        self._wake()
        return event

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def close(self) -> None:
        """Wake every follower for good (the daemon is stopping)."""
        self.closed = True
        self._wake()

    def after(self, since: int, limit: int, match: Match | None = None) -> list[Event]:
        """The first `limit` events (matching) with a sequence id above `since`."""
        oldest = self.oldest
        if oldest is None or since >= self._seq:
            return []
        out: list[Event] = []
        # Sequence ids are consecutive in the ring: skip straight to the first one wanted
        # (islice walks at C speed; the ring holds at most RING_SIZE).
        for e in itertools.islice(self._ring, max(0, since - oldest + 1), None):
            if match is None or match(e):
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    def last(self, limit: int, match: Match | None = None) -> list[Event]:
        """The last `limit` events (matching), oldest first."""
        out: list[Event] = []
        for e in reversed(self._ring):
            if match is None or match(e):
                out.append(e)
                if len(out) >= limit:
                    break
        out.reverse()
        return out

    def missed(self, since: int) -> int:
        """How many events after `since` the ring no longer holds."""
        oldest = self.oldest
        if oldest is None:
            return 0
        return max(0, oldest - since - 1)

    async def wait(self, seq: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds for an event after `seq`; True when there is one."""
        if self._seq > seq:
            return True
        if self.closed:
            return False
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            pass
        return self._seq > seq


class PlanDiff:
    """A dry run's plan, tick after tick: which operations are newly planned (a subject
    planned for the first time, or for another value: "core 4" where it was "core 3") and
    which subjects are planned no more. A subject is the operation's kind and its peer or
    device; operations compare without their reasons."""

    def __init__(self) -> None:
        self._last: dict[tuple[object, ...], Operation] = {}

    @staticmethod
    def subject(op: Operation) -> tuple[object, ...]:
        return (type(op).__name__, op.interface, getattr(op, "public_key", None))

    def update(self, plan: Sequence[Operation]) -> tuple[list[Operation], list[Operation]]:
        now = {self.subject(op): op for op in plan}
        new = [op for k, op in now.items() if self._last.get(k) != op]
        gone = [op for k, op in self._last.items() if k not in now]
        self._last = now
        return new, gone
