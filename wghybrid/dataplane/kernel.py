"""KernelDataPlane: the patched WireGuard module behind the DataPlane interface.

One sample is, per WireGuard device of this network namespace, one GET_DEVICE (the crypt
cpumask) and one bulk GET_STATS dump (104-byte records parsed into numpy without a loop
per peer), plus /proc/stat for per-core busy time and sysfs for threaded NAPI. Devices
and peers may come and go between samples; a dump interrupted by a change of the peer
list is taken again. When the module is reloaded the family gets a new id: the socket is
reopened and the epochs in the records tell the controller its counters restarted.

Operations map to SET_PEER (mode, core), SET_DEVICE (crypt cpumask) and
/sys/class/net/DEV/threaded. When the policy turns NIC steering on
(`placement.nic_steering`, off by default), a peer's new core also steers its outer UDP
flow to that core where the NIC allows it (`_sysfs.Steering`: ethtool ntuple rules and
IRQ affinity, or RPS); with it off no NIC setting is touched (no ethtool, /proc/irq or
rps_cpus), the module's per-peer core still is. Errors are sorted as the simulated
backend sorts them: the peer or device is gone, or the request is invalid, or we lack
CAP_NET_ADMIN -> PermanentError; the kernel is busy, or out of buffers -> TransientError.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable

import numpy as np

from wghybrid.dataplane import DataPlaneError, PermanentError, TransientError, _genl, _sysfs
from wghybrid.model import (
    GatewaySample,
    InterfaceState,
    Mode,
    Operation,
    PeerTable,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    short_key,
)

log = logging.getLogger("wghybrid.dataplane.kernel")

DUMP_RETRIES = 5
"""A dump interrupted this many times in a row (a peer list that keeps changing) is a
transient error for this tick."""

ENDPOINT_TTL = 60.0
ENDPOINT_RETRY = 10.0
"""Seconds: how long steering trusts its copy of the peers' endpoints (see _endpoint)."""

TRANSIENT_ERRNOS = frozenset(
    {errno.EBUSY, errno.EAGAIN, errno.ENOBUFS, errno.ETIMEDOUT, errno.EINTR, errno.ENOMEM}
)


def classify_error(exc: OSError, op: Operation | None = None) -> DataPlaneError:
    """Sort an errno from the kernel into transient and permanent, with a message that
    says what it means for `op` (the simulated backend's wording where it has one)."""
    code = exc.errno or errno.EIO
    if isinstance(exc, _genl.FamilyMissing):
        return TransientError(str(exc))
    what = op.describe() if op is not None else "reading counters"
    if code in TRANSIENT_ERRNOS:
        return TransientError(f"{what}: {errno.errorcode.get(code, code)} ({exc.strerror})")
    if code in (errno.EPERM, errno.EACCES):
        return PermanentError(
            f"{what}: permission denied: changing WireGuard peers needs CAP_NET_ADMIN"
        )
    if isinstance(op, SetPeerMode | SetPeerCore):
        if code == errno.ENOENT:
            return PermanentError(f"no peer {short_key(op.public_key)} on {op.interface}")
        if code == errno.ENODEV:
            return PermanentError(f"no WireGuard device {op.interface!r}")
    if isinstance(op, SetCryptCores | SetThreadedNapi) and code == errno.ENODEV:
        return PermanentError(f"no WireGuard device {op.interface!r}")
    if isinstance(op, SetThreadedNapi) and code == errno.EOPNOTSUPP:
        return PermanentError(f"dev {op.interface}: threaded NAPI is not supported there "
                              "(EOPNOTSUPP: no NAPI instance yet, e.g. no peer)")
    if code == errno.EOPNOTSUPP:
        return PermanentError(f"{what}: not a WireGuard device (EOPNOTSUPP)")
    name = errno.errorcode.get(code, str(code))
    return PermanentError(f"{what}: {name} ({exc.strerror})")


class KernelDataPlane:
    """The DataPlane Protocol over the "wghybrid" genl family of the patched module."""

    def __init__(self, genl: _genl.Genl, *, steer: bool = False,
                 change_log: Callable[[str], None] | None = None,
                 sys: _sysfs.Path = _sysfs.SYS, proc: _sysfs.Path = _sysfs.PROC) -> None:
        self._genl = genl
        self._sys = sys
        self._proc = proc
        self._log = change_log or (lambda line: log.info("%s", line))
        self.steering: _sysfs.Steering | None = None
        """NIC steering, None while the policy leaves it off (`set_nic_steering`)."""
        if steer:
            self.steering = self._new_steering()
        self._steer_lock = asyncio.Lock()
        self._steering_said = steer
        self.closed = False
        self.dump_retries = 0
        """Dumps taken again because the peer list changed meanwhile (for tests/metrics)."""
        self.reopened = 0
        """Times the family was resolved again (module reloaded)."""
        self._endpoints: dict[str, tuple[float, dict[bytes, _genl.Endpoint]]] = {}

    # -- reading -----------------------------------------------------------------

    async def sample(self) -> GatewaySample:
        self._check_open()
        try:
            return await self._sample()
        except OSError as exc:
            # Nothing to mark unmanaged for a failed reading: the loop retries next tick
            # (a module reloaded between the family check and the dump, say).
            raise TransientError(str(classify_error(exc))) from None

    async def _sample(self) -> GatewaySample:
        if await self._genl.family_changed():
            log.warning("the wghybrid genl family has a new id (module reloaded): reopening")
            await self._genl.reopen()
            self.reopened += 1
        links = await _genl.wireguard_links()
        busy = _sysfs.read_core_busy(self._proc)
        cores = len(busy)
        states: list[InterfaceState] = []
        parts: list[np.ndarray] = []
        for _, name in links:
            try:
                dev = await self._genl.get_device(name)
                records = await self._stats(name)
            except _genl.GenlError as exc:
                if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP):
                    continue  # deleted (or renamed) since the link dump: gone this tick
                raise
            crypt = frozenset(c for c in dev.crypt_cpus if c < cores)
            states.append(InterfaceState(name, crypt, _sysfs.read_threaded(name, self._sys)))
            parts.append(records)
        now = time.monotonic()
        recs = np.concatenate(parts) if parts else _genl.EMPTY_RECORDS
        iface = np.repeat(np.arange(len(parts), dtype=np.int32), [len(p) for p in parts])
        peers = PeerTable.build(
            iface, recs["key"],
            rx_bytes=recs["rx_bytes"], tx_bytes=recs["tx_bytes"],
            rx_packets=recs["rx_packets"], tx_packets=recs["tx_packets"],
            rx_cpu_ns=recs["rx_cpu_ns"], tx_cpu_ns=recs["tx_cpu_ns"],
            drops=recs["drops"], mode=recs["mode"], core=recs["core"], epoch=recs["epoch"],
        )
        return GatewaySample(now=now, cores=cores, core_busy_ns=busy,
                             interfaces=tuple(states), peers=peers)

    async def _stats(self, name: str) -> np.ndarray:
        for _ in range(DUMP_RETRIES):
            try:
                return await self._genl.stats(name)
            except _genl.DumpInterrupted:
                self.dump_retries += 1
        raise TransientError(
            f"dev {name}: the peer list changed during {DUMP_RETRIES} dumps in a row"
        )

    # -- writing -----------------------------------------------------------------

    async def apply(self, op: Operation) -> None:
        self._check_open()
        try:
            await self._apply(op)
        except _genl.FamilyMissing as exc:
            raise TransientError(str(exc)) from None
        except OSError as exc:
            if exc.errno == errno.ENOENT and await self._reresolved():
                try:
                    await self._apply(op)
                    return
                except OSError as again:
                    exc = again
            raise classify_error(exc, op) from None

    async def _reresolved(self) -> bool:
        """After ENOENT: was it the family (module reloaded) rather than the peer? Then
        the socket is reopened and the caller retries once."""
        try:
            if not await self._genl.family_changed():
                return False
        except _genl.FamilyMissing as exc:
            raise TransientError(str(exc)) from None  # unloaded: the peer is not gone
        except _genl.GenlError:
            return False
        await self._genl.reopen()
        self.reopened += 1
        return True

    async def _apply(self, op: Operation) -> None:
        if isinstance(op, SetPeerMode):
            await self._genl.set_peer(op.interface, op.public_key, mode=int(op.mode))
        elif isinstance(op, SetPeerCore):
            await self._genl.set_peer(op.interface, op.public_key, core=op.core)
            if self.steering is not None:
                try:
                    await self._steer(op)
                except Exception:  # best effort: the core change itself is done
                    log.exception("steering after %s failed", op.describe())
        elif isinstance(op, SetCryptCores):
            await self._genl.set_device(op.interface, op.cores)
        elif isinstance(op, SetThreadedNapi):
            if not (self._sys / "class/net" / op.interface).exists():
                raise OSError(errno.ENODEV, "no such device")
            if not (self._sys / "class/net" / op.interface / "threaded").exists():
                raise PermanentError(
                    f"dev {op.interface}: this kernel has no threaded NAPI "
                    f"(/sys/class/net/{op.interface}/threaded)"
                )
            _sysfs.write_threaded(op.interface, op.enabled, self._sys)
        else:  # pragma: no cover - the Operation union is closed
            raise PermanentError(f"unsupported operation {op!r}")

    async def recreate_peer(self, interface: str, public_key: bytes) -> str:
        """`PeerRecovery`: the peer removed and added again with its configuration
        (upstream's family) and then its mode and core (ours), read just before."""
        self._check_open()
        key = bytes(public_key)
        try:
            records = await self._stats(interface)
            rows = np.flatnonzero(records["key"] == np.frombuffer(key, dtype="S32")[0])
            if not rows.size:
                raise PermanentError(f"no peer {short_key(key)} on {interface}")
            mode, core = int(records["mode"][rows[0]]), int(records["core"][rows[0]])
            config = await _genl.wireguard_peer_config(interface, key)
            if config is None:
                raise PermanentError(f"no peer {short_key(key)} on {interface}")
            # From the removal on, nothing may cancel it (the caller's timeout): a peer
            # removed and never added back would be lost. The shielded task runs to its
            # end whatever happens to this one.
            await asyncio.shield(self._replace(interface, key, config, mode, core))
        except _genl.FamilyMissing as exc:
            raise TransientError(str(exc)) from None
        except OSError as exc:
            raise classify_error(exc) from None
        self._endpoints.pop(interface, None)
        kept = [f"{len(config.get('allowed_ips', ()))} allowed IPs"]
        if "endpoint_addr" in config:
            kept.append(f"endpoint {config['endpoint_addr']}:{config['endpoint_port']}")
        if "preshared_key" in config:
            kept.append("preshared key")
        if "persistent_keepalive" in config:
            kept.append(f"keepalive {config['persistent_keepalive']} s")
        return (f"removed and added again with its configuration ({', '.join(kept)}), "
                f"mode {Mode(mode)}, core {core}")

    async def _replace(self, interface: str, key: bytes, config: dict[str, object],
                       mode: int, core: int) -> None:
        try:
            await _genl.replace_wireguard_peer(interface, config)
        except OSError as exc:
            if "added back" in str(exc):
                # What an operator needs to set it again (not its preshared key).
                ips = config.get("allowed_ips")
                log.error("dev %s: peer %s is missing: %s. It had allowed IPs %s, endpoint "
                          "%s:%s, keepalive %s", interface, config.get("public_key"), exc,
                          ",".join(str(ip) for ip in ips) if isinstance(ips, list) and ips
                          else "none",
                          config.get("endpoint_addr", "none"), config.get("endpoint_port", ""),
                          config.get("persistent_keepalive", "off"))
            raise
        await self._genl.set_peer(interface, key, mode=mode, core=core)

    async def _steer(self, op: SetPeerCore) -> None:
        """Steer the peer's outer UDP flow to its new core: best effort, said once per
        NIC when impossible; never fails the (already applied) core change."""
        ep = await self._endpoint(op.interface, bytes(op.public_key))
        if ep is None:
            return  # no endpoint yet (peer never seen): nothing arrives to steer
        nic = await _genl.route_device(ep.address)
        if nic is None:
            return
        async with self._steer_lock:
            if self.steering is None:  # turned off meanwhile (a policy reload)
                return
            await self.steering.steer(bytes(op.public_key), nic, ep.address, ep.port,
                                      ep.listen_port, op.core)

    def _new_steering(self) -> _sysfs.Steering:
        return _sysfs.Steering(self._log, sys=self._sys, proc=self._proc)

    async def set_nic_steering(self, enabled: bool) -> None:
        """The policy's `placement.nic_steering`, given at start and after every reload.
        On: core changes from now on also steer the peers' outer flows on the NIC. Off
        (the default): no NIC setting is touched any more, and whatever steering had
        changed (ntuple rules and filters, IRQ affinity, rps_cpus) is put back."""
        async with self._steer_lock:
            if enabled and self.steering is None:
                self.steering = self._new_steering()
                log.info("NIC steering on (policy placement.nic_steering = true): core "
                         "changes also steer outer UDP flows (ethtool ntuple + IRQ "
                         "affinity, or RPS)")
            elif not enabled and self.steering is not None:
                steering, self.steering = self.steering, None
                log.info("NIC steering off (policy placement.nic_steering = false): "
                         "putting back what it changed on the NICs")
                try:
                    await steering.undo()
                except Exception:  # best effort: steering is off whatever happens
                    log.exception("putting back the NIC settings steering changed failed")
            elif not enabled and not self._steering_said:
                log.info("NIC steering off (policy placement.nic_steering = false): no "
                         "NIC setting is touched")
            self._steering_said = True

    async def _endpoint(self, interface: str, key: bytes) -> _genl.Endpoint | None:
        """A peer's endpoint from a per-device cache: upstream's dump of every peer is
        costly with many peers (seconds in Python for 10,000), so it is read again only
        when older than ENDPOINT_TTL, or for an unknown peer at most every
        ENDPOINT_RETRY seconds."""
        now = time.monotonic()
        taken, endpoints = self._endpoints.get(interface, (-1e9, {}))
        age = now - taken
        if age > ENDPOINT_TTL or (key not in endpoints and age > ENDPOINT_RETRY):
            try:
                endpoints = await _genl.wireguard_endpoints(interface)
            except _genl.GenlError as exc:
                log.warning("steering on %s: cannot read endpoints: %s", interface, exc)
                return None
            self._endpoints[interface] = (now, endpoints)
        return endpoints.get(key)

    @property
    def unsupported(self) -> dict[str, str]:
        """NIC -> what steering could not do there."""
        return dict(self.steering.unsupported) if self.steering is not None else {}

    def _check_open(self) -> None:
        if self.closed:
            raise PermanentError("the kernel data plane is closed")

    async def close(self) -> None:
        """Closes the socket; the kernel keeps every peer's mode and core."""
        if not self.closed:
            self.closed = True
            self._genl.close()


async def open_dataplane(*, steer: bool = False,
                         change_log: Callable[[str], None] | None = None) -> KernelDataPlane:
    """Open the family; a clear error if the patched module is not loaded."""
    genl = _genl.Genl()
    try:
        await genl.open()
    except _genl.FamilyMissing as exc:
        raise PermanentError(str(exc)) from None
    except _genl.GenlError as exc:
        raise PermanentError(f"cannot open the wghybrid genl family: {exc}") from None
    plane = KernelDataPlane(genl, steer=steer, change_log=change_log)
    log.info("kernel data plane: wghybrid genl family id %d", genl.family_id)
    return plane

