"""Builders of synthetic gateway samples for the pure-core tests (no data plane)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wghybrid.model import GatewaySample, InterfaceState, Mode, PeerTable


def key(i: int) -> bytes:
    """A distinct, valid 32-byte public key per integer."""
    return i.to_bytes(4, "big") + bytes(28)


class Gateway:
    """A toy data plane for unit tests: cumulative counters driven by given rates."""

    def __init__(
        self, npeers: int, cores: int = 8, modes: Sequence[int] | None = None,
        ifaces: Sequence[str] = ("wg0",),
    ) -> None:
        self.cores = cores
        self.ifnames = tuple(ifaces)
        self.iface = np.arange(npeers, dtype=np.int32) % len(self.ifnames)
        self.keys = np.array([key(i) for i in range(npeers)], dtype="S32")
        self.mode = np.asarray(
            modes if modes is not None else [Mode.INLINE] * npeers, dtype=np.uint8
        )
        self.core = np.full(npeers, -1, dtype=np.int32)
        self.bytes = np.zeros(npeers, dtype=np.uint64)
        self.cpu_ns = np.zeros(npeers, dtype=np.uint64)
        self.epoch = np.ones(npeers, dtype=np.uint64)
        self.crypt = {n: frozenset(range(cores)) for n in self.ifnames}
        self.threaded = {n: False for n in self.ifnames}
        self.now = 0.0

    def advance(self, dt: float, gbps: np.ndarray, cpu: np.ndarray | None = None) -> None:
        """Run for dt seconds at `gbps` per peer (rx), using `cpu` cores per peer."""
        gbps = np.broadcast_to(np.asarray(gbps, dtype=np.float64), self.bytes.shape)
        if cpu is None:
            cost = np.where(self.mode == Mode.INLINE, 1 / 2.8, 32 / 48)
            cpu = np.minimum(gbps * cost, 1.0)
        self.bytes += (gbps * 1e9 / 8 * dt).astype(np.uint64)
        self.cpu_ns += (np.broadcast_to(cpu, self.bytes.shape) * 1e9 * dt).astype(np.uint64)
        self.now += dt

    def sample(self) -> GatewaySample:
        return GatewaySample(
            now=self.now,
            cores=self.cores,
            core_busy_ns=np.zeros(self.cores, dtype=np.uint64),
            interfaces=tuple(
                InterfaceState(n, self.crypt[n], self.threaded[n]) for n in self.ifnames
            ),
            peers=PeerTable.build(
                self.iface, self.keys, rx_bytes=self.bytes, rx_packets=self.bytes // 1400,
                rx_cpu_ns=self.cpu_ns, mode=self.mode, core=self.core, epoch=self.epoch,
            ),
        )

    def apply(self, plan: Sequence[object]) -> None:
        from wghybrid.model import (
            SetCryptCores,
            SetPeerCore,
            SetPeerMode,
            SetThreadedNapi,
            raw_key,
        )

        rows = {(self.ifnames[int(i)], raw_key(k)): r
                for r, (i, k) in enumerate(zip(self.iface, self.keys, strict=True))}
        for op in plan:
            if isinstance(op, SetPeerMode):
                self.mode[rows[(op.interface, op.public_key)]] = op.mode
            elif isinstance(op, SetPeerCore):
                self.core[rows[(op.interface, op.public_key)]] = op.core
            elif isinstance(op, SetCryptCores):
                self.crypt[op.interface] = op.cores
            elif isinstance(op, SetThreadedNapi):
                self.threaded[op.interface] = op.enabled
            else:
                raise TypeError(op)
