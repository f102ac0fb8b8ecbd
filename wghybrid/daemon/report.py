"""Operations and their results as events: the daemon's reporter (every change and
refusal goes to the event log as data, peers by name, overrides with who set them), and
the event log's sink (one log line with the journal's fields)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from wghybrid.daemon.events import (
    AUTOMATIC,
    DONE,
    FAILED,
    OVERRIDE,
    UNMANAGED,
    UNSUPPORTED,
    WITHDRAWN,
    WOULD,
    Event,
    EventLog,
    PlanDiff,
    journal_fields,
    level,
    line,
    op_fields,
)
from wghybrid.daemon.events import describe as describe_event
from wghybrid.daemon.tick import OpResult, TickResult
from wghybrid.model import Operation, SetPeerCore, SetPeerMode

log = logging.getLogger("wghybrid.daemon")

PeerName = Callable[[str, bytes], str]


def log_event(event: Event) -> None:
    """The event log's sink: one line, with the journal's fields (wghybrid._log)."""
    log.log(level(event), "%s", line(event), extra=journal_fields(event))


class Reporter:
    """Turns operations and their results into events; names peers with `name_of`, and
    says who set an override with `override_by` (both the daemon's)."""

    def __init__(self, events: EventLog, name_of: PeerName, override_by: PeerName,
                 dry_run: Callable[[], bool]) -> None:
        self.events = events
        self.name_of = name_of
        self.override_by = override_by
        self.dry_run = dry_run
        self._would = PlanDiff()
        """A dry run's plan as of the last tick: events only for what changes in it."""

    def peer_event(
        self, op: str, result: str, interface: str, public_key: bytes, **fields: Any
    ) -> Event:
        return self.events.emit(op, result, interface=interface, public_key=public_key,
                                name=self.name_of(interface, public_key),
                                dry_run=self.dry_run(), **fields)

    def op_event(self, op: Operation, result: str, error: str = "") -> Event:
        fields = op_fields(op)
        cause, by = AUTOMATIC, ""
        if op.reason is not None and op.reason.rule == "override":
            cause = OVERRIDE
            if isinstance(op, SetPeerMode | SetPeerCore):
                by = self.override_by(op.interface, op.public_key)
        if "public_key" in fields:
            fields["name"] = self.name_of(fields["interface"], fields["public_key"])
        return self.events.emit(fields.pop("op"), result, cause=cause, by=by, error=error,
                                dry_run=self.dry_run(), **fields)

    def describe(self, op: Operation) -> str:
        """An operation in wg-quick's words, the peer by its name where it has one."""
        fields = op_fields(op)
        if "public_key" in fields:
            fields["name"] = self.name_of(fields["interface"], fields["public_key"])
        return describe_event(Event(0, 0.0, fields.pop("op"), DONE, **fields))

    def op_result(self, r: OpResult) -> None:
        """run_tick's report: an event per applied (or refused) operation."""
        if r.error is None:
            self.op_event(r.op, DONE)
        elif not r.permanent:
            self.op_event(r.op, FAILED, r.error)
        else:
            peer = isinstance(r.op, SetPeerMode | SetPeerCore)
            self.op_event(r.op, UNMANAGED if peer else UNSUPPORTED, r.error)

    def would(self, result: TickResult) -> None:
        """A dry run applies nothing, so the controller plans the same operations tick
        after tick: an event when an operation enters the plan (`would`) and when it
        leaves it (`withdrawn`), none while it stays."""
        new, gone = self._would.update(result.plan)
        for op in gone:
            self.op_event(op, WITHDRAWN)
        for op in new:
            self.op_event(op, WOULD)
