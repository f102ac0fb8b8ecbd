"""One tick, the imperative shell around the pure controller: sample -> plan -> apply.

The daemon's scheduler and the benchmark both call `run_tick`, so what is measured is
what runs. Every call to the data plane is bounded by a timeout; an operation that fails
is sorted, as irqbalance's activate.c does, into transient (it will be planned again next
tick, because the observed state still differs) and permanent (the controller marks the
peer unmanaged or the knob unsupported, and status shows why).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wghybrid.core.controller import Controller
from wghybrid.dataplane import DataPlane, DataPlaneError, PermanentError, TransientError
from wghybrid.model import Operation, Override, Plan


@dataclass(frozen=True, slots=True)
class OpResult:
    op: Operation
    error: str | None
    permanent: bool


@dataclass(frozen=True, slots=True)
class TickResult:
    now: float
    plan: Plan
    results: tuple[OpResult, ...]
    duration: float
    """Seconds spent in sample + plan + apply (wall clock)."""
    decide: float = 0.0
    """Seconds spent in the pure stages (rates + classify + plan)."""


async def run_tick(
    dataplane: DataPlane,
    controller: Controller,
    overrides: Sequence[Override],
    wall_now: float,
    *,
    dry_run: bool = False,
    op_timeout: float = 2.0,
    sample_timeout: float = 5.0,
    log: Callable[[str], None] | None = None,
    report: Callable[[OpResult], None] | None = None,
) -> TickResult:
    """Sample, decide, apply. Raises TransientError when the sample cannot be read.

    `report` is handed each applied operation's result as soon as it is known (the
    daemon makes an event of it, `wghybrid.daemon.events`); `log` gets a line per operation
    instead (keys, not names: this module knows none), the dry run's plan included."""
    # asyncio.timeout(), not wait_for(): wait_for runs the call in a task of its own, so
    # every call costs the tick at least two turns of the event loop, each behind all the
    # API requests that are ready; under load a tick of a few operations then outlasts
    # its slot. Under timeout() a call that does not suspend costs no turn at all.
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(sample_timeout):
            sample = await dataplane.sample()
    except TimeoutError:
        raise TransientError(f"reading counters took longer than {sample_timeout:g} s") from None
    t1 = time.perf_counter()
    plan = controller.plan(sample, overrides, wall_now)
    t2 = time.perf_counter()
    results: list[OpResult] = []
    if not dry_run:
        for op in plan:
            error: DataPlaneError | None = None
            try:
                async with asyncio.timeout(op_timeout):
                    await dataplane.apply(op)
            except TimeoutError:
                error = TransientError(f"timed out after {op_timeout:g} s")
            except DataPlaneError as exc:
                error = exc
            controller.record(op, None if error is None else str(error),
                              isinstance(error, PermanentError))
            result = OpResult(op, None if error is None else str(error),
                              isinstance(error, PermanentError))
            if report is not None:
                report(result)
            if error is None:
                if log is not None:
                    why = f"  # {op.reason.rule}: {op.reason.text}" if op.reason else ""
                    log(f"[#] {op.describe()}{why}")
                results.append(result)
            else:
                permanent = isinstance(error, PermanentError)
                if log is not None:
                    kind = "permanent" if permanent else "transient, retrying next tick"
                    log(f"[!] {op.describe()}: {error} ({kind})")
                results.append(result)
    elif log is not None:
        for op in plan:
            log(f"[dry-run] {op.describe()}")
    return TickResult(sample.now, plan, tuple(results), time.perf_counter() - t0, t2 - t1)
