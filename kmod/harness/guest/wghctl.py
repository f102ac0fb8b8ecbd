#!/usr/bin/python3
"""A small client of the "wghybrid" generic netlink family (uapi/linux/wghybrid.h).

Raw AF_NETLINK sockets and struct only, so that it runs on the guest's stock
python3 and can also send malformed requests on purpose. Used by the harness's
scenarios; the daemon has its own client.

    wghctl.py get DEV
    wghctl.py set-device DEV CPUS          (CPUS: "0,2-3"; "" resets to every CPU)
    wghctl.py set-peer DEV KEY [--mode vanilla|inline] [--core N]
    wghctl.py stats DEV                    (JSON, one object per peer)
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import socket
import struct
import sys

NETLINK_GENERIC = 16
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_DUMP_INTR = 0x10
GENL_ID_CTRL, CTRL_CMD_GETFAMILY = 0x10, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2

CMD_GET_DEVICE, CMD_SET_DEVICE, CMD_SET_PEER, CMD_GET_STATS = 1, 2, 3, 4
(A_IFINDEX, A_IFNAME, A_DEVICE_CRYPT_CPUMASK, A_DEVICE_NUM_PEERS, A_DEVICE_DEFAULT_MODE,
 A_PEER_PUBLIC_KEY, A_PEER_MODE, A_PEER_CORE, A_STATS_VERSION, A_STATS_RECORD_SIZE,
 A_STATS_RECORDS) = range(1, 12)
MODES = {"vanilla": 0, "inline": 1}
RECORD = struct.Struct("<32s8QiBB2x")  # struct wgh_peer_record, 104 bytes
FIELDS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_cpu_ns", "tx_cpu_ns",
          "drops", "epoch")


class NetlinkError(OSError):
    pass


def attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def u8(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=B", v))


def u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


def s32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=i", v))


def string(kind: int, v: str) -> bytes:
    return attr(kind, v.encode() + b"\0")


def parse_attrs(data: bytes) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {}
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, []).append(data[off + 4 : off + length])
        off += (length + 3) & ~3
    return out


class Genl:
    def __init__(self, family: str = "wghybrid") -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.seq = 0
        self.family = GENL_ID_CTRL
        self.dump_intr = False
        reply = self.request(CTRL_CMD_GETFAMILY, string(CTRL_ATTR_FAMILY_NAME, family))
        self.family = struct.unpack("=H", reply[0][CTRL_ATTR_FAMILY_ID][0][:2])[0]

    def request(self, cmd: int, payload: bytes = b"", dump: bool = False,
                version: int = 1) -> list[dict[int, list[bytes]]]:
        """Send one request; return the reply messages' attributes, raise NetlinkError."""
        self.seq += 1
        flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_DUMP if dump else 0)
        body = struct.pack("=BBH", cmd, version, 0) + payload
        self.sock.send(struct.pack("=IHHII", 16 + len(body), self.family, flags, self.seq, 0)
                       + body)
        replies: list[dict[int, list[bytes]]] = []
        self.dump_intr = False
        while True:
            data = self.sock.recv(1 << 17)
            off = 0
            while off + 16 <= len(data):
                length, kind, mflags, seq, _ = struct.unpack_from("=IHHII", data, off)
                msg = data[off + 16 : off + length]
                off += (length + 3) & ~3
                if seq != self.seq:
                    continue
                if mflags & NLM_F_DUMP_INTR:
                    self.dump_intr = True
                if kind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", msg)[0]
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return replies
                if kind == NLMSG_DONE:  # ends a dump; no ACK follows it
                    code = struct.unpack_from("=i", msg)[0] if len(msg) >= 4 else 0
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return replies
                replies.append(parse_attrs(msg[4:]))


def dev_attr(dev: str) -> bytes:
    return u32(A_IFINDEX, int(dev)) if dev.isdigit() else string(A_IFNAME, dev)


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def cpumask(cpus: list[int]) -> bytes:
    n = max(cpus, default=-1) + 1
    return (sum(1 << c for c in cpus)).to_bytes((n + 7) // 8, "little")


def get_device(g: Genl, dev: str) -> dict[str, object]:
    a = g.request(CMD_GET_DEVICE, dev_attr(dev))[0]
    mask = int.from_bytes(a[A_DEVICE_CRYPT_CPUMASK][0], "little")
    return {
        "ifindex": struct.unpack("=I", a[A_IFINDEX][0])[0],
        "ifname": a[A_IFNAME][0].rstrip(b"\0").decode(),
        "crypt_cpus": [c for c in range(mask.bit_length()) if mask >> c & 1],
        "num_peers": struct.unpack("=I", a[A_DEVICE_NUM_PEERS][0])[0],
        "default_mode": a[A_DEVICE_DEFAULT_MODE][0][0],
    }


def set_device(g: Genl, dev: str, cpus: list[int]) -> None:
    g.request(CMD_SET_DEVICE, dev_attr(dev) + attr(A_DEVICE_CRYPT_CPUMASK, cpumask(cpus)))


def set_peer(g: Genl, dev: str, key: str, mode: str | None = None,
             core: int | None = None) -> None:
    payload = dev_attr(dev) + attr(A_PEER_PUBLIC_KEY, base64.b64decode(key))
    if mode is not None:
        payload += u8(A_PEER_MODE, MODES[mode])
    if core is not None:
        payload += s32(A_PEER_CORE, core)
    g.request(CMD_SET_PEER, payload)


def stats(g: Genl, dev: str) -> list[dict[str, object]]:
    out = []
    for msg in g.request(CMD_GET_STATS, dev_attr(dev), dump=True):
        size = struct.unpack("=I", msg[A_STATS_RECORD_SIZE][0])[0]
        version = struct.unpack("=I", msg[A_STATS_VERSION][0])[0]
        assert version == 1 and size >= RECORD.size, (version, size)
        for blob in msg.get(A_STATS_RECORDS, []):
            assert len(blob) % size == 0, (len(blob), size)
            for off in range(0, len(blob), size):
                key, *counters, core, mode, flags = RECORD.unpack_from(blob, off)
                rec: dict[str, object] = {"key": base64.b64encode(key).decode()}
                rec.update(zip(FIELDS, counters, strict=True))
                rec.update(core=core, mode=mode, flags=flags)
                out.append(rec)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("get").add_argument("dev")
    sd = sub.add_parser("set-device")
    sd.add_argument("dev")
    sd.add_argument("cpus")
    sp = sub.add_parser("set-peer")
    sp.add_argument("dev")
    sp.add_argument("key")
    sp.add_argument("--mode", choices=MODES)
    sp.add_argument("--core", type=int)
    sub.add_parser("stats").add_argument("dev")
    args = p.parse_args()
    try:
        g = Genl()
        if args.cmd == "get":
            print(json.dumps(get_device(g, args.dev)))
        elif args.cmd == "set-device":
            set_device(g, args.dev, parse_cpus(args.cpus))
        elif args.cmd == "set-peer":
            set_peer(g, args.dev, args.key, args.mode, args.core)
        else:
            print(json.dumps(stats(g, args.dev)))
    except NetlinkError as exc:
        print(f"wghctl: {args.cmd}: {errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
