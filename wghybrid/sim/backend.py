"""SimDataPlane: the simulated gateway behind the DataPlane interface.

The daemon runs it in real time (the default clock is time.monotonic since construction,
optionally sped up); the benchmark passes a clock it advances itself, so simulated time
runs as fast as the model computes. Fault injection (`faults`) lets the daemon's tests see
transient and permanent errors and slow samples without a kernel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from wghybrid.dataplane import PermanentError, TransientError
from wghybrid.model import GatewaySample, Operation
from wghybrid.sim.gateway import SimGateway
from wghybrid.sim.pipeline import GatewayModel
from wghybrid.sim.scenario import Scenario


@dataclass(slots=True)
class Faults:
    """Test knobs; each counter is consumed one call at a time."""

    transient_applies: int = 0
    """The next N apply() calls raise TransientError (and change nothing)."""
    permanent_applies: int = 0
    """The next N apply() calls raise PermanentError (and change nothing)."""
    transient_samples: int = 0
    """The next N sample() calls raise TransientError."""
    sample_delay: float = 0.0
    """Every sample() first sleeps this many real seconds (to test the daemon's timeouts)."""
    apply_delay: float = 0.0
    """Every apply() first sleeps this many real seconds."""


class SimDataPlane:
    """The DataPlane Protocol over a `SimGateway`."""

    def __init__(self, scenario: Scenario | str, *, clock: Callable[[], float] | None = None,
                 model: GatewayModel | None = None, speed: float = 1.0,
                 loop: bool = False) -> None:
        self.gateway = SimGateway(scenario, model, loop=loop)
        if clock is None:
            start = time.monotonic()

            def clock() -> float:
                return (time.monotonic() - start) * speed

        self.clock: Callable[[], float] = clock
        self.faults = Faults()
        self.closed = False

    @property
    def model(self) -> GatewayModel:
        """The gateway model behind this data plane."""
        return self.gateway.model

    @property
    def scenario(self) -> Scenario:
        return self.gateway.scenario

    def _check_open(self) -> None:
        if self.closed:
            raise PermanentError("the simulated data plane is closed")

    async def sample(self) -> GatewaySample:
        self._check_open()
        if self.faults.sample_delay > 0:
            await asyncio.sleep(self.faults.sample_delay)
        if self.faults.transient_samples > 0:
            self.faults.transient_samples -= 1
            raise TransientError("simulated: counters busy (injected fault)")
        now = self.clock()
        self.gateway.advance(now)
        return self.gateway.sample(now)

    async def apply(self, op: Operation) -> None:
        self._check_open()
        if self.faults.apply_delay > 0:
            await asyncio.sleep(self.faults.apply_delay)
        if self.faults.transient_applies > 0:
            self.faults.transient_applies -= 1
            raise TransientError(f"simulated: EBUSY on {op.describe()} (injected fault)")
        if self.faults.permanent_applies > 0:
            self.faults.permanent_applies -= 1
            raise PermanentError(f"simulated: EOPNOTSUPP on {op.describe()} (injected fault)")
        # Bring the counters up to now under the old configuration before changing it.
        self.gateway.advance(self.clock())
        self.gateway.apply(op)

    async def recreate_peer(self, interface: str, public_key: bytes) -> str:
        """`PeerRecovery`: the peer removed and added again, its mode and core kept."""
        self._check_open()
        if self.faults.transient_applies > 0:
            self.faults.transient_applies -= 1
            raise TransientError("simulated: EBUSY re-creating the peer (injected fault)")
        self.gateway.advance(self.clock())
        self.gateway.recreate_peer(interface, public_key)
        return "removed and added again with the same configuration, mode and core"

    async def close(self) -> None:
        self.closed = True
