"""The simulated gateway: a scenario's tunnels on a `GatewayModel`, with live counters.

`SimGateway` holds what the patched kernel module holds (each peer's mode and core, the
device's crypt pool and threaded-NAPI flag) and integrates the counters the module exposes
(per-peer bytes, packets, CPU ns, drops; per-core busy ns) over simulated time, using the
scenario's offered load. It is synchronous and clock-free: `advance(t)` moves it to time t.
`SimDataPlane` (backend.py) wraps it behind the async DataPlane interface.
"""

from __future__ import annotations

import numpy as np

from wghybrid.dataplane import PermanentError
from wghybrid.model import (
    F64,
    GatewaySample,
    InterfaceState,
    Mode,
    Operation,
    PeerId,
    PeerTable,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    raw_key,
    short_key,
)
from wghybrid.sim.pipeline import Evaluation, GatewayModel, default_cores
from wghybrid.sim.scenario import Scenario, load_scenario

ACK_PER_PACKET = 0.5
"""Reverse-direction packets per data packet: TCP's delayed ACK, one per two segments."""
ACK_BYTES = 120
"""Bytes of one tunnelled ACK on the wire (40 TCP/IP + 32 WireGuard + 28 outer UDP/IP
+ options), an assumption; it only feeds the tx counters."""
GBIT = 1e9 / 8.0
"""Bytes per Gbit."""


class SimGateway:
    """One simulated gateway running one scenario. Not thread-safe; owned by its caller.

    A scenario may spread its tunnels over several WireGuard devices; each has its own
    crypt pool (`crypt_pools`) and threaded-NAPI flag (`threaded`). `crypt_cores`,
    `threaded_napi` and `interface` are the first device's, for single-device callers."""

    def __init__(self, scenario: Scenario | str, model: GatewayModel | None = None, *,
                 max_step: float = 0.1, loop: bool = False) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.model = model if model is not None else GatewayModel(cores=self.scenario.cores)
        self.max_step = max_step
        """Longest integration step, seconds: load is re-read at least this often."""
        self.loop = loop
        """Replay the scenario forever (time modulo its duration) instead of holding its end."""
        tunnels = self.scenario.tunnels
        n = len(tunnels)
        self.cores = self.model.cores
        self.interfaces: tuple[str, ...] = self.scenario.interfaces or ("wg0",)
        """The WireGuard devices, in the scenario's order (PeerTable.iface indexes them)."""
        dev_index = {name: d for d, name in enumerate(self.interfaces)}
        self.iface = np.array([dev_index[t.interface] for t in tunnels],
                              dtype=np.int32).reshape(n)
        self._iface_arg = self.iface if len(self.interfaces) > 1 else None
        self.keys = np.array([t.public_key for t in tunnels], dtype="S32").reshape(n)
        self._index = {PeerId(t.interface, t.public_key): i for i, t in enumerate(tunnels)}
        self.mode = np.array([t.initial_mode for t in tunnels], dtype=np.uint8).reshape(n)
        self.core = np.full(n, -1, dtype=np.int32)
        self.crypt_pools: dict[str, frozenset[int]] = {
            d: frozenset(range(self.cores)) for d in self.interfaces}
        """Per device, its crypt workers' cores (upstream: every core)."""
        self.threaded: dict[str, bool] = {
            d: self.scenario.threaded_napi for d in self.interfaces}
        """Per device, /sys/class/net/DEV/threaded."""
        self.present = np.ones(n, dtype=bool)
        self.disrupted_until = np.zeros(n)
        """Per tunnel, the simulated time until which a mode/core change costs it traffic."""
        self.epoch = np.zeros(n, dtype=np.uint64)
        self.stalled = np.zeros(n, dtype=bool)
        """Per tunnel, its decryption is stalled (`stall_peer`): every datagram it is sent
        is dropped at its full queue, it accepts none."""
        self._stalls_due = sorted(self.scenario.stalls, key=lambda st: st.at)
        """The scenario's [[stall]]s not yet begun, earliest first (each begins once)."""
        self.stall_napi = np.zeros(n, dtype=bool)
        """Per stalled tunnel, the stall is the threaded-NAPI kind (CVE-2026-52945): it
        ends when its device's threaded NAPI is turned off. Any stall ends when the peer
        is re-created."""
        self.time = 0.0
        self._zero_counters()
        self.core_busy_ns = np.zeros(self.cores)
        self.last: Evaluation | None = None
        """The evaluation of the most recent integration step."""
        self.last_offered: F64 = np.zeros(n)
        self.log: list[tuple[float, Operation]] = []
        """Every operation applied, with the simulated time it was applied at."""

    # The first device's pool and flag, for single-device callers (the common case).
    @property
    def interface(self) -> str:
        return self.interfaces[0]

    @property
    def crypt_cores(self) -> frozenset[int]:
        return self.crypt_pools[self.interfaces[0]]

    @crypt_cores.setter
    def crypt_cores(self, cores: frozenset[int]) -> None:
        self.crypt_pools[self.interfaces[0]] = frozenset(cores)

    @property
    def threaded_napi(self) -> bool:
        return self.threaded[self.interfaces[0]]

    @threaded_napi.setter
    def threaded_napi(self, enabled: bool) -> None:
        self.threaded[self.interfaces[0]] = bool(enabled)

    def _zero_counters(self, which: np.ndarray | None = None) -> None:
        n = len(self.keys)
        if which is None:
            self.rx_bytes = np.zeros(n)
            self.tx_bytes = np.zeros(n)
            self.rx_packets = np.zeros(n)
            self.tx_packets = np.zeros(n)
            self.rx_cpu_ns = np.zeros(n)
            self.tx_cpu_ns = np.zeros(n)
            self.drops = np.zeros(n)
            return
        for arr in (self.rx_bytes, self.tx_bytes, self.rx_packets, self.tx_packets,
                    self.rx_cpu_ns, self.tx_cpu_ns, self.drops):
            arr[which] = 0.0

    # -- time --------------------------------------------------------------

    def offered(self, t: float) -> F64:
        """Offered Gbps per tunnel at simulated time t (0 for vanished peers)."""
        if self.loop and self.scenario.duration > 0:
            t = t % self.scenario.duration
        return np.where(self.present, self.scenario.offered(t), 0.0)

    def evaluate(self, offered: F64) -> Evaluation:
        """The model's steady state for this load under the current configuration."""
        return self.model.evaluate(
            offered, self.mode, self.core, [self.crypt_pools[d] for d in self.interfaces],
            [self.threaded[d] for d in self.interfaces], self._iface_arg)

    def advance(self, to_time: float) -> None:
        """Integrate every counter from the current time to `to_time` (never backwards)."""
        pkt_bits = self.scenario.packet_bytes * 8.0
        while self.time < to_time - 1e-12:
            dt = min(self.max_step, to_time - self.time)
            while self._stalls_due and self._stalls_due[0].at <= self.time + dt / 2.0:
                st = self._stalls_due.pop(0)
                self.stalled[st.index] = True
                self.stall_napi[st.index] = st.napi
            offered = self.offered(self.time + dt / 2.0)
            ev = self.evaluate(offered)
            delivered = ev.delivered_gbps
            lost = np.clip((self.disrupted_until - self.time) / dt, 0.0, 1.0)
            if lost.any():
                delivered = delivered * (1.0 - lost)
            if self.stalled.any():
                # Stalled: nothing accepted, and what is sent to it dropped at its full
                # peer queue (the decryption that feeds the queue stopped with it).
                delivered = np.where(self.stalled, 0.0, delivered)
            rx_bytes = delivered * (GBIT * dt)
            rx_packets = rx_bytes / self.scenario.packet_bytes
            self.rx_bytes += rx_bytes
            self.rx_packets += rx_packets
            self.tx_packets += rx_packets * ACK_PER_PACKET
            self.tx_bytes += rx_packets * (ACK_PER_PACKET * ACK_BYTES)
            self.rx_cpu_ns += np.where(self.stalled, 0.0, ev.cpu_rx) * (1e9 * dt)
            self.tx_cpu_ns += ev.cpu_tx * (1e9 * dt)
            self.drops += np.maximum(offered - delivered, 0.0) * (1e9 * dt / pkt_bits)
            self.core_busy_ns += ev.core_busy * (1e9 * dt)
            self.time += dt
            self.last = ev
            self.last_offered = offered

    # -- reading -----------------------------------------------------------

    def sample(self, now: float | None = None) -> GatewaySample:
        """Every counter, as the kernel backend would report it (present peers only)."""
        idx = np.flatnonzero(self.present)
        n = len(self.keys)
        placed = np.where(self.core < 0, default_cores(n, self.cores), self.core)

        def u64(a: np.ndarray) -> np.ndarray:
            return np.floor(a[idx]).astype(np.uint64)

        peers = PeerTable.build(
            self.iface[idx], self.keys[idx],
            rx_bytes=u64(self.rx_bytes), tx_bytes=u64(self.tx_bytes),
            rx_packets=u64(self.rx_packets), tx_packets=u64(self.tx_packets),
            rx_cpu_ns=u64(self.rx_cpu_ns), tx_cpu_ns=u64(self.tx_cpu_ns),
            drops=u64(self.drops), mode=self.mode[idx], core=placed[idx].astype(np.int32),
            epoch=self.epoch[idx],
        )
        return GatewaySample(
            now=self.time if now is None else float(now),
            cores=self.cores,
            core_busy_ns=np.floor(self.core_busy_ns).astype(np.uint64),
            interfaces=tuple(InterfaceState(d, self.crypt_pools[d], self.threaded[d])
                             for d in self.interfaces),
            peers=peers,
        )

    # -- writing -----------------------------------------------------------

    def _peer(self, interface: str, key: bytes) -> int:
        self._device(interface)
        raw = raw_key(key)  # numpy "S32" elements lose trailing NULs
        i = self._index.get(PeerId(interface, raw))
        if i is None or not self.present[i]:
            raise PermanentError(f"no peer {short_key(raw)} on {interface}")
        return i

    def _device(self, interface: str) -> None:
        if interface not in self.crypt_pools:
            have = ", ".join(self.interfaces)
            raise PermanentError(f"no WireGuard device {interface!r} "
                                 f"(the simulated gateway has {have})")

    def _check_core(self, core: int) -> None:
        if not 0 <= core < self.cores:
            raise PermanentError(f"core {core} does not exist (cores 0-{self.cores - 1})")

    def apply(self, op: Operation) -> None:
        """Carry out one operation; PermanentError names what does not exist."""
        if isinstance(op, SetPeerMode):
            i = self._peer(op.interface, op.public_key)
            if self.mode[i] != op.mode:
                self._disrupt(i)
            self.mode[i] = Mode(op.mode)
        elif isinstance(op, SetPeerCore):
            i = self._peer(op.interface, op.public_key)
            self._check_core(op.core)
            current = int(self.core[i]) if self.core[i] >= 0 else i % self.cores
            if current != op.core:
                self._disrupt(i)
            self.core[i] = op.core
        elif isinstance(op, SetCryptCores):
            self._device(op.interface)
            if not op.cores:
                raise PermanentError(f"dev {op.interface}: an empty crypt core set would "
                                     "stop every vanilla peer")
            for c in sorted(op.cores):
                self._check_core(c)
            self.crypt_pools[op.interface] = frozenset(op.cores)
        elif isinstance(op, SetThreadedNapi):
            self._device(op.interface)
            self.threaded[op.interface] = bool(op.enabled)
            if not op.enabled:
                on_dev = self.iface == self.interfaces.index(op.interface)
                self.stalled[on_dev & self.stall_napi] = False
        else:
            raise PermanentError(f"unsupported operation {op!r}")
        self.log.append((self.time, op))

    def _disrupt(self, i: int) -> None:
        """A change of path costs the tunnel `switch_cost_s` of traffic, from now."""
        self.disrupted_until[i] = self.time + self.model.params.switch_cost_s

    # -- events a real gateway has (for tests of the daemon) ----------------

    def _row(self, key: bytes, interface: str | None) -> int:
        iface = self.interfaces[0] if interface is None else interface
        return self._index[PeerId(iface, raw_key(key))]

    def remove_peer(self, key: bytes, interface: str | None = None) -> None:
        """The peer vanishes (wg set ... peer X remove): no longer sampled, no traffic.
        `interface` defaults to the first device."""
        self.present[self._row(key, interface)] = False

    def add_peer(self, key: bytes, interface: str | None = None) -> None:
        """The peer comes back as a new peer: zero counters, new epoch, upstream defaults."""
        i = self._row(key, interface)
        if self.present[i]:
            return
        self.present[i] = True
        self.epoch[i] += 1
        self._zero_counters(np.array([i]))
        self.mode[i] = Mode.VANILLA
        self.core[i] = -1

    def stall_peer(self, key: bytes, interface: str | None = None, *,
                   napi: bool = True) -> None:
        """The peer's decryption stalls from now: with `napi`, the threaded-NAPI kind (it
        ends when its device's threaded NAPI goes off), else one only re-creating the peer
        ends."""
        i = self._row(key, interface)
        self.stalled[i] = True
        self.stall_napi[i] = napi

    def recreate_peer(self, interface: str, key: bytes) -> None:
        """The peer removed and added again with the same configuration, mode and core
        (what the daemon's recovery does): new epoch, zero counters, no stall."""
        i = self._peer(interface, key)
        self.epoch[i] += 1
        self._zero_counters(np.array([i]))
        self.stalled[i] = False
        self._disrupt(i)

    def reload(self) -> None:
        """The module is reloaded: every counter restarts, every peer is vanilla again."""
        self.epoch[:] += 1
        self._zero_counters()
        self.mode[:] = Mode.VANILLA
        self.core[:] = -1
        self.stalled[:] = False
        for d in self.interfaces:
            self.crypt_pools[d] = frozenset(range(self.cores))
            self.threaded[d] = self.scenario.threaded_napi
