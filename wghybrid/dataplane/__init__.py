"""The data-plane interface: the kernel backend and the simulated gateway both implement it.

The controller reads a `GatewaySample` and writes `Operation`s; it never knows which
implementation is behind them. Errors from `apply` are sorted in two kinds, as
irqbalance's activate.c does: transient (retry next tick) and permanent (stop managing
that peer and report why).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from wghybrid.model import GatewaySample, Operation


class DataPlaneError(Exception):
    """Base of every error a backend raises."""


class TransientError(DataPlaneError):
    """Try again next tick (EBUSY, EAGAIN, a timeout, a peer mid-handshake)."""


class PermanentError(DataPlaneError):
    """Retrying cannot help (no such peer, unsupported by this kernel/NIC): the peer or
    knob becomes unmanaged and the reason is shown in status."""


@runtime_checkable
class DataPlane(Protocol):
    """One gateway's data plane."""

    async def sample(self) -> GatewaySample:
        """Read every counter at once; `now` is the backend's monotonic clock."""
        ...

    async def apply(self, op: Operation) -> None:
        """Carry out one operation; raise TransientError or PermanentError."""
        ...

    async def close(self) -> None:
        """Release sockets/handles. Must not change any peer's mode."""
        ...


@runtime_checkable
class NicSteering(Protocol):
    """A data plane that can steer the host's NIC (the kernel backend: ethtool ntuple
    rules, IRQ affinity, RPS). Not part of `DataPlane`: the simulated one has no NIC."""

    async def set_nic_steering(self, enabled: bool) -> None:
        """The policy's `placement.nic_steering` (off by default), at start and after
        every reload; off puts back what steering changed. Never raises."""
        ...


@runtime_checkable
class PeerRecovery(Protocol):
    """A data plane that can re-create a peer (both backends): the daemon's last step
    against a stalled peer (wghybrid.daemon.stall)."""

    async def recreate_peer(self, interface: str, public_key: bytes) -> str:
        """Remove the peer and add it back with the same configuration (keys, endpoint,
        allowed IPs, keepalive), then give it back its mode and core: fresh queues, a
        new handshake, counters from zero (a new epoch). Returns what was done, one line;
        raises TransientError or PermanentError."""
        ...


async def configure_nic_steering(dataplane: object, enabled: bool) -> None:
    """Pass the policy's `placement.nic_steering` to a data plane that steers NICs; a
    data plane that has no NIC to steer ignores it."""
    if isinstance(dataplane, NicSteering):
        await dataplane.set_nic_steering(enabled)
