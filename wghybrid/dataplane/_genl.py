"""The pyroute2 adapter for the patched module's "wghybrid" generic netlink family.

The only module that knows netlink attribute names (kmod/include/uapi/linux/wghybrid.h).
Everything it returns is plain data (numpy record arrays, frozensets, ints); every
netlink error comes out as `GenlError` carrying the errno, for the backend to sort into
transient and permanent.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyroute2 import AsyncIPRoute
from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NetlinkError,
    ctrlmsg,
    genlmsg,
)
from pyroute2.netlink.generic import AsyncGenericNetlinkSocket

FAMILY = "wghybrid"
VERSION = 1
STATS_VERSION = 1
RECORD_SIZE = 104
NLM_F_DUMP_INTR = 0x10

CMD_GET_DEVICE, CMD_SET_DEVICE, CMD_SET_PEER, CMD_GET_STATS = 1, 2, 3, 4

RECORD_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("key", "S32", 0),
    ("rx_bytes", "<u8", 32),
    ("tx_bytes", "<u8", 40),
    ("rx_packets", "<u8", 48),
    ("tx_packets", "<u8", 56),
    ("rx_cpu_ns", "<u8", 64),
    ("tx_cpu_ns", "<u8", 72),
    ("drops", "<u8", 80),
    ("epoch", "<u8", 88),
    ("core", "<i4", 96),
    ("mode", "u1", 100),
    ("flags", "u1", 101),
)
"""struct wgh_peer_record, as in the uapi comment (offset of each field; never moved)."""


def record_dtype(stride: int = RECORD_SIZE) -> np.dtype[Any]:
    """The record dtype with `stride` bytes per record (a later version may append
    fields: they are skipped)."""
    if stride < RECORD_SIZE:
        raise GenlError(errno.EPROTO, f"stats records of {stride} bytes, expected >= {RECORD_SIZE}")
    return np.dtype(
        {
            "names": [f[0] for f in RECORD_FIELDS],
            "formats": [f[1] for f in RECORD_FIELDS],
            "offsets": [f[2] for f in RECORD_FIELDS],
            "itemsize": stride,
        }
    )


EMPTY_RECORDS = np.zeros(0, dtype=record_dtype())


def parse_records(payloads: Sequence[bytes], stride: int) -> np.ndarray:
    """The records of a dump: one np.frombuffer per WGH_A_STATS_RECORDS payload."""
    dtype = record_dtype(stride)
    parts = []
    for p in payloads:
        if len(p) % stride:
            raise GenlError(
                errno.EPROTO, f"a stats attribute of {len(p)} bytes is not a whole number "
                f"of {stride}-byte records"
            )
        parts.append(np.frombuffer(p, dtype=dtype))
    if not parts:
        return EMPTY_RECORDS
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def cpumask_bytes(cpus: frozenset[int]) -> bytes:
    """CPU n is bit n of a little-endian byte string (an empty set: every CPU)."""
    n = max(cpus, default=-1) + 1
    return sum(1 << c for c in cpus).to_bytes(max(1, (n + 7) // 8), "little")


def cpumask_cpus(mask: bytes) -> frozenset[int]:
    value = int.from_bytes(mask, "little")
    return frozenset(c for c in range(value.bit_length()) if value >> c & 1)


class GenlError(OSError):
    """A netlink request failed: `errno` says why (ENOENT, ENODEV, EPERM, ...)."""

    def __str__(self) -> str:
        return str(self.strerror)


class FamilyMissing(GenlError):
    """The "wghybrid" family is not registered: the patched module is not loaded."""

    def __init__(self) -> None:
        super().__init__(
            errno.ENOENT,
            "the wghybrid genl family is not registered: load the patched wireguard.ko (kmod/)",
        )


class DumpInterrupted(GenlError):
    """The peer list changed during a dump (NLM_F_DUMP_INTR)."""

    def __init__(self, ifname: str) -> None:
        super().__init__(errno.EAGAIN, f"the peer list of {ifname} changed during the dump")


class _Msg(genlmsg):
    nla_map = (
        ("WGH_A_UNSPEC", "none"),
        ("WGH_A_IFINDEX", "uint32"),
        ("WGH_A_IFNAME", "asciiz"),
        ("WGH_A_DEVICE_CRYPT_CPUMASK", "cdata"),
        ("WGH_A_DEVICE_NUM_PEERS", "uint32"),
        ("WGH_A_DEVICE_DEFAULT_MODE", "uint8"),
        ("WGH_A_PEER_PUBLIC_KEY", "cdata"),
        ("WGH_A_PEER_MODE", "uint8"),
        ("WGH_A_PEER_CORE", "int32"),
        ("WGH_A_STATS_VERSION", "uint32"),
        ("WGH_A_STATS_RECORD_SIZE", "uint32"),
        ("WGH_A_STATS_RECORDS", "cdata"),
    )


@dataclass(frozen=True, slots=True)
class Device:
    ifindex: int
    name: str
    crypt_cpus: frozenset[int]
    num_peers: int
    default_mode: int


def _error(exc: NetlinkError, what: str) -> GenlError:
    code = int(getattr(exc, "code", 0) or errno.EIO)
    return GenlError(code, f"{what}: {os.strerror(code)}")


class Genl:
    """One socket on the family; `reresolve()` after the module was reloaded."""

    def __init__(self) -> None:
        self._sock: AsyncGenericNetlinkSocket | None = None
        self._raw: socket.socket | None = None
        self._seq = 0
        self.family_id = -1

    async def open(self) -> None:
        sock = AsyncGenericNetlinkSocket(rcvsize=1 << 17, rcvbuf=1 << 22)
        sock.module_err_level = "debug"  # the caller says it once, clearly
        try:
            await sock.bind(FAMILY, _Msg)
        except NetlinkError as exc:
            sock.close()
            if exc.code == errno.ENOENT:
                raise FamilyMissing() from None
            raise _error(exc, "resolving the wghybrid genl family") from None
        self._sock = sock
        self.family_id = int(sock.prid)
        self._seq = 0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    async def family_changed(self) -> bool:
        """Whether the family's id is not the one this socket uses (module reloaded,
        or unloaded: FamilyMissing)."""
        sock = self._socket()
        msg = ctrlmsg()
        msg["cmd"] = CTRL_CMD_GETFAMILY
        msg["version"] = 1
        msg["attrs"] = [["CTRL_ATTR_FAMILY_NAME", FAMILY]]
        try:
            replies = [
                m async for m in await sock.nlm_request(msg, GENL_ID_CTRL, NLM_F_REQUEST)
            ]
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise FamilyMissing() from None
            raise _error(exc, "resolving the wghybrid genl family") from None
        ids = [m.get_attr("CTRL_ATTR_FAMILY_ID") for m in replies]
        ids = [i for i in ids if i is not None]
        if not ids:
            raise GenlError(errno.EPROTO, "the genl controller did not say the family's id")
        return int(ids[0]) != self.family_id

    async def reopen(self) -> None:
        self.close()
        await self.open()

    def _socket(self) -> AsyncGenericNetlinkSocket:
        if self._sock is None:
            raise GenlError(errno.EBADF, "the wghybrid genl socket is closed")
        return self._sock

    async def _request(
        self, cmd: int, attrs: list[list[Any]], what: str, dump: bool = False
    ) -> list[Any]:
        sock = self._socket()
        msg = _Msg()
        msg["cmd"] = cmd
        msg["version"] = VERSION
        msg["attrs"] = attrs
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        try:
            return [m async for m in await sock.nlm_request(msg, sock.prid, flags)]
        except NetlinkError as exc:
            raise _error(exc, what) from None

    async def get_device(self, ifname: str) -> Device:
        (reply,) = [
            m
            for m in await self._request(
                CMD_GET_DEVICE, [["WGH_A_IFNAME", ifname]], f"dev {ifname}: GET_DEVICE"
            )
            if m.get_attr("WGH_A_IFINDEX") is not None
        ]
        return Device(
            ifindex=int(reply.get_attr("WGH_A_IFINDEX")),
            name=str(reply.get_attr("WGH_A_IFNAME")),
            crypt_cpus=cpumask_cpus(bytes(reply.get_attr("WGH_A_DEVICE_CRYPT_CPUMASK") or b"")),
            num_peers=int(reply.get_attr("WGH_A_DEVICE_NUM_PEERS") or 0),
            default_mode=int(reply.get_attr("WGH_A_DEVICE_DEFAULT_MODE") or 0),
        )

    async def set_device(self, ifname: str, crypt_cpus: frozenset[int]) -> None:
        await self._request(
            CMD_SET_DEVICE,
            [["WGH_A_IFNAME", ifname], ["WGH_A_DEVICE_CRYPT_CPUMASK", cpumask_bytes(crypt_cpus)]],
            f"dev {ifname}: SET_DEVICE",
        )

    async def set_peer(
        self, ifname: str, key: bytes, mode: int | None = None, core: int | None = None
    ) -> None:
        attrs: list[list[Any]] = [["WGH_A_IFNAME", ifname], ["WGH_A_PEER_PUBLIC_KEY", key]]
        if mode is not None:
            attrs.append(["WGH_A_PEER_MODE", mode])
        if core is not None:
            attrs.append(["WGH_A_PEER_CORE", core])
        await self._request(CMD_SET_PEER, attrs, f"dev {ifname}: SET_PEER")

    async def stats(self, ifname: str) -> np.ndarray:
        """Every peer's record, in the device's peer order; DumpInterrupted if the peer
        list changed meanwhile.

        The hot path of every tick: it bypasses pyroute2's message objects (about 8 ms
        of Python per 10,000 peers) for a plain netlink socket read by the event loop;
        the request is one attribute and each reply message carries a handful, so
        walking them costs nothing next to the records, which numpy reads in place."""
        sock = self._dump_socket()
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        name = ifname.encode() + b"\0"
        attr = struct.pack("=HH", 4 + len(name), A_IFNAME) + name + b"\0" * (-len(name) % 4)
        body = struct.pack("=BBH", CMD_GET_STATS, VERSION, 0) + attr
        header = struct.pack("=IHHII", 16 + len(body), self.family_id,
                             NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0)
        loop = asyncio.get_running_loop()
        dump = _Dump(self._seq)
        try:
            await loop.sock_sendall(sock, header + body)
            while not dump.done:
                dump.feed(await loop.sock_recv(sock, 1 << 17))
        except BaseException:
            # A dump left half read keeps the socket busy (EBUSY): start afresh.
            sock.close()
            self._raw = None
            raise
        if dump.error:
            raise GenlError(dump.error, f"dev {ifname}: GET_STATS: {os.strerror(dump.error)}")
        if dump.interrupted:
            raise DumpInterrupted(ifname)
        if dump.version not in (None, STATS_VERSION):
            raise GenlError(errno.EPROTO, f"stats version {dump.version}, expected {STATS_VERSION}")
        return parse_records(dump.payloads, dump.stride)

    def _dump_socket(self) -> socket.socket:
        if self._raw is None:
            raw = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                | socket.SOCK_CLOEXEC, NETLINK_GENERIC)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            raw.bind((0, 0))
            self._raw = raw
        return self._raw


A_IFNAME, A_STATS_VERSION, A_STATS_RECORD_SIZE, A_STATS_RECORDS = 2, 9, 10, 11
NETLINK_GENERIC = 16
NLMSG_ERROR, NLMSG_DONE = 2, 3
_NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")


class _Dump:
    """The replies of one GET_STATS dump, fed one datagram at a time (pure: the unit
    tests feed it bytes). Messages of other sequence numbers are ignored."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.payloads: list[bytes] = []
        self.stride = RECORD_SIZE
        self.version: int | None = None
        self.interrupted = False
        self.done = False
        self.error = 0

    def feed(self, data: bytes) -> None:
        off = 0
        while off + 16 <= len(data):
            length, kind, flags, seq, _ = _NLMSGHDR.unpack_from(data, off)
            if length < 16:
                break
            end = off + length
            if seq == self.seq:
                if flags & NLM_F_DUMP_INTR:
                    self.interrupted = True
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    code = _S32.unpack_from(data, off + 16)[0] if length >= 20 else 0
                    self.error = -code if code < 0 else 0
                    self.done = True
                    return
                self._message(data, off + 16 + 4, end)  # after nlmsghdr and genlmsghdr
            off += (length + 3) & ~3

    def _message(self, data: bytes, off: int, end: int) -> None:
        while off + 4 <= end:
            alen, akind = _NLA.unpack_from(data, off)
            if alen < 4:
                break
            akind &= 0x3FFF
            if akind == A_STATS_RECORDS:
                self.payloads.append(data[off + 4 : off + alen])
            elif akind == A_STATS_RECORD_SIZE:
                self.stride = _U32.unpack_from(data, off + 4)[0]
            elif akind == A_STATS_VERSION:
                self.version = _U32.unpack_from(data, off + 4)[0]
            off += (alen + 3) & ~3


async def _collect(result: Any) -> list[Any]:
    """pyroute2 answers some requests with an async generator, some with a list."""
    if hasattr(result, "__aiter__"):
        return [m async for m in result]
    return list(result)


async def wireguard_links() -> list[tuple[int, str]]:
    """(ifindex, name) of every WireGuard device in this network namespace."""
    async with AsyncIPRoute() as ipr:
        links = await _collect(await ipr.link("dump"))
    out = []
    for link in links:
        if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "wireguard":
            out.append((int(link["index"]), str(link.get_attr("IFLA_IFNAME"))))
    return out


async def route_device(address: str) -> str | None:
    """The name of the device the route to `address` leaves by, or None."""
    async with AsyncIPRoute() as ipr:
        try:
            routes = await _collect(await ipr.route("get", dst=address))
        except NetlinkError:
            return None
        for r in routes:
            oif = r.get_attr("RTA_OIF")
            if oif is not None:
                links = await _collect(await ipr.link("get", index=oif))
                for link in links:
                    return str(link.get_attr("IFLA_IFNAME"))
    return None


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    listen_port: int
    """The device's own UDP port (the destination port of the peer's outer flow)."""


async def wireguard_endpoints(ifname: str) -> dict[bytes, Endpoint]:
    """Each peer's endpoint from upstream WireGuard's own family (only peers that have
    one); raw public key -> Endpoint."""
    import base64

    from pyroute2.netlink.generic.wireguard import AsyncWireGuard

    wg = AsyncWireGuard()
    try:
        await wg.setup_endpoint()  # binds the "wireguard" family
        msgs = [m async for m in await wg.info(ifname)]
    except NetlinkError as exc:
        raise _error(exc, f"dev {ifname}: WireGuard GET_DEVICE") from None
    finally:
        wg.close()
    out: dict[bytes, Endpoint] = {}
    for m in msgs:
        port = int(m.get_attr("WGDEVICE_A_LISTEN_PORT") or 0)
        for peer in m.get_attr("WGDEVICE_A_PEERS") or ():
            ep = peer.get_attr("WGPEER_A_ENDPOINT")
            key = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            if ep is None or key is None or not ep.get("port"):
                continue
            if not isinstance(key, bytes | str):
                key = key["value"]
            raw = base64.b64decode(key)
            out[raw] = Endpoint(str(ep["addr"]), int(ep["port"]), port)
    return out


def peer_config(msgs: Sequence[Any], key: bytes) -> dict[str, Any] | None:
    """One peer's configuration from upstream WireGuard's GET_DEVICE replies, in the form
    pyroute2's `WireGuard.set(peer=...)` takes; None when the device has no such peer.

    WireGuard splits a large device over several messages, and a peer with many allowed
    IPs over consecutive ones (the later ones repeat only its key and carry more
    allowed IPs), so every message is read and the peer's allowed IPs are joined."""
    import base64

    want = base64.b64encode(bytes(key).ljust(32, b"\0")).decode()
    config: dict[str, Any] | None = None
    for m in msgs:
        for peer in m.get_attr("WGDEVICE_A_PEERS") or ():
            pk = peer.get_attr("WGPEER_A_PUBLIC_KEY")
            if pk is None:
                continue
            text = pk["value"] if not isinstance(pk, bytes | str) else pk
            if isinstance(text, bytes):
                text = text.decode()
            if text != want:
                continue
            if config is None:
                config = {"public_key": want, "allowed_ips": []}
            psk = peer.get_attr("WGPEER_A_PRESHARED_KEY")
            if psk is not None:
                value = psk["value"] if not isinstance(psk, bytes | str) else psk
                value = value.decode() if isinstance(value, bytes) else value
                if base64.b64decode(value) != bytes(32):  # all zero: no preshared key
                    config["preshared_key"] = value
            ep = peer.get_attr("WGPEER_A_ENDPOINT")
            if ep is not None and ep.get("port"):
                config["endpoint_addr"] = str(ep["addr"])
                config["endpoint_port"] = int(ep["port"])
            keepalive = peer.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
            if keepalive:
                config["persistent_keepalive"] = int(keepalive)
            for aip in peer.get_attr("WGPEER_A_ALLOWEDIPS") or ():
                if aip.get("addr"):
                    config["allowed_ips"].append(str(aip["addr"]))
    return config


async def wireguard_peer_config(ifname: str, key: bytes) -> dict[str, Any] | None:
    """One peer's configuration from upstream WireGuard's own family (pyroute2's
    WireGuard; `peer_config`), or None when the device has no such peer."""
    from pyroute2.netlink.generic.wireguard import AsyncWireGuard

    wg = AsyncWireGuard()
    try:
        await wg.setup_endpoint()
        msgs = [m async for m in await wg.info(ifname)]
    except NetlinkError as exc:
        raise _error(exc, f"dev {ifname}: WireGuard GET_DEVICE") from None
    finally:
        wg.close()
    return peer_config(msgs, key)


async def replace_wireguard_peer(ifname: str, config: dict[str, Any]) -> None:
    """Remove the peer and add it back with `config` (`wireguard_peer_config`'s), through
    upstream WireGuard's family: two requests, and for the milliseconds between them the
    peer does not exist (what is sent to its allowed IPs is refused). The caller must not
    let it be cancelled between them (asyncio.shield): the peer would stay removed."""
    from pyroute2.netlink.generic.wireguard import AsyncWireGuard

    wg = AsyncWireGuard()
    try:
        await wg.setup_endpoint()
        try:
            await wg.set(ifname, peer={"public_key": config["public_key"], "remove": True})
        except NetlinkError as exc:
            raise _error(exc, f"dev {ifname}: WireGuard SET_DEVICE (removing the peer)") from None
        # Removed: adding it back is tried ADD_TRIES times (a transient ENOMEM or ENOBUFS
        # must not lose a peer), and a failure says loudly what is lost.
        for attempt in range(ADD_TRIES):
            try:
                await wg.set(ifname, peer=config)
                return
            except NetlinkError as exc:
                err = _error(exc, f"dev {ifname}: WireGuard SET_DEVICE")
                if attempt + 1 < ADD_TRIES:
                    await asyncio.sleep(0.1 * (attempt + 1))
        raise GenlError(err.errno, f"dev {ifname}: the peer was removed and could not be "
                        f"added back in {ADD_TRIES} tries ({err}); it is missing until its "
                        "configuration is set again (wg set / wg syncconf)")
    finally:
        wg.close()


ADD_TRIES = 3
"""Attempts at adding a removed peer back (`replace_wireguard_peer`)."""
