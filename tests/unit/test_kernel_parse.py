"""The kernel backend's parsers: stats records from synthetic bytes (the uapi layout),
CPU masks, /proc/stat, /proc/interrupts."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wghybrid.dataplane import _genl, _sysfs

pytestmark = pytest.mark.unit

RECORD = struct.Struct("<32s8QiBB2x")  # struct wgh_peer_record, written independently


def record(i: int, *, mode: int = 0, core: int = -1, extra: bytes = b"") -> bytes:
    key = bytes([i % 251 + 1]) * 31 + bytes([i % 7])  # some keys end in a NUL byte
    counters = [i * 10 + f for f in range(8)]
    return RECORD.pack(key, *counters, core, mode, 0) + extra


def test_record_layout_matches_uapi() -> None:
    assert RECORD.size == _genl.RECORD_SIZE == _genl.record_dtype().itemsize


def test_parse_records_fields() -> None:
    blob = record(3, mode=1, core=5) + record(4, mode=0, core=-1)
    recs = _genl.parse_records([blob], _genl.RECORD_SIZE)
    assert len(recs) == 2
    assert bytes(recs["key"][0]).ljust(32, b"\0") == bytes([4]) * 31 + bytes([3])
    assert recs["rx_bytes"].tolist() == [30, 40]
    assert recs["tx_bytes"].tolist() == [31, 41]
    assert recs["rx_packets"].tolist() == [32, 42]
    assert recs["tx_packets"].tolist() == [33, 43]
    assert recs["rx_cpu_ns"].tolist() == [34, 44]
    assert recs["tx_cpu_ns"].tolist() == [35, 45]
    assert recs["drops"].tolist() == [36, 46]
    assert recs["epoch"].tolist() == [37, 47]
    assert recs["core"].tolist() == [5, -1]
    assert recs["mode"].tolist() == [1, 0]


def test_parse_records_across_payloads_keeps_order() -> None:
    payloads = [b"".join(record(i) for i in range(j, j + 3)) for j in (0, 3, 6)]
    recs = _genl.parse_records(payloads, _genl.RECORD_SIZE)
    assert recs["rx_bytes"].tolist() == [i * 10 for i in range(9)]


def test_parse_records_longer_stride_ignores_appended_fields() -> None:
    stride = _genl.RECORD_SIZE + 8
    blob = record(1, extra=b"\xff" * 8) + record(2, extra=b"\xee" * 8)
    recs = _genl.parse_records([blob], stride)
    assert recs["epoch"].tolist() == [17, 27]
    assert recs["mode"].tolist() == [0, 0]


def test_parse_records_empty() -> None:
    assert len(_genl.parse_records([], _genl.RECORD_SIZE)) == 0


def test_parse_records_rejects_partial_record() -> None:
    with pytest.raises(_genl.GenlError, match="whole number"):
        _genl.parse_records([record(1)[:-1]], _genl.RECORD_SIZE)


def test_parse_records_rejects_short_stride() -> None:
    with pytest.raises(_genl.GenlError, match="expected >= 104"):
        _genl.parse_records([b""], 96)


@given(st.frozensets(st.integers(0, 300), max_size=40))
def test_cpumask_round_trip(cpus: frozenset[int]) -> None:
    assert _genl.cpumask_cpus(_genl.cpumask_bytes(cpus)) == cpus


def test_cpumask_bit_order() -> None:
    # CPU n is bit n % 8 of byte n / 8 (uapi).
    assert _genl.cpumask_bytes(frozenset({0, 9})) == b"\x01\x02"
    assert _genl.cpumask_cpus(b"\x00\x80") == frozenset({15})


PROC_STAT = """\
cpu  1000 20 300 50000 10 5 7 3 0 0
cpu0 600 10 200 25000 5 4 6 2 100 0
cpu1 400 10 100 25000 5 1 1 1 0 0
cpu3 1 0 0 0 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_parse_proc_stat_busy_ns() -> None:
    busy = _sysfs.parse_proc_stat(PROC_STAT, clk_tck=100)
    # user+nice+system+irq+softirq+steal; idle, iowait, guest not counted; 10 ms a tick.
    assert busy.dtype == np.uint64
    assert busy.tolist() == [
        (600 + 10 + 200 + 4 + 6 + 2) * 10_000_000,
        (400 + 10 + 100 + 1 + 1 + 1) * 10_000_000,
        0,  # cpu2 offline: no line
        1 * 10_000_000,
    ]


def test_parse_proc_stat_old_kernel_fewer_columns() -> None:
    busy = _sysfs.parse_proc_stat("cpu0 1 2 3 4\n", clk_tck=100)
    assert busy.tolist() == [60_000_000]


def test_cpumask_hex_groups_of_32_bits() -> None:
    assert _sysfs.cpumask_hex(frozenset({0, 1})) == "3"
    assert _sysfs.cpumask_hex(frozenset({32})) == "1,00000000"
    assert _sysfs.cpumask_hex(frozenset()) == "0"


INTERRUPTS = """\
            CPU0       CPU1
  24:          0          0   PCI-MSI 1048576-edge      eth0
  25:        100          0   PCI-MSI 1048577-edge      eth0-TxRx-0
  26:          0        200   PCI-MSI 1048578-edge      eth0-TxRx-1
  27:          5          0   PCI-MSI 1048579-edge      eth1-rx-0
 NMI:          0          0   Non-maskable interrupts
"""


def test_parse_interrupts_queues_of_one_nic() -> None:
    assert _sysfs.parse_interrupts(INTERRUPTS, "eth0") == {0: 25, 1: 26}
    assert _sysfs.parse_interrupts(INTERRUPTS, "eth1") == {0: 27}
    assert _sysfs.parse_interrupts(INTERRUPTS, "eth") == {}


def nlmsg(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def nla(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def stats_msg(seq: int, recs: list[bytes], flags: int = 0x2, size: int = 104) -> bytes:
    body = struct.pack("=BBH", 4, 1, 0) + nla(1, struct.pack("=I", 7))
    body += nla(9, struct.pack("=I", 1)) + nla(10, struct.pack("=I", size))
    body += b"".join(nla(11, r) for r in recs)
    return nlmsg(30, flags, seq, body)


def test_dump_reader_collects_records_of_its_sequence() -> None:
    d = _genl._Dump(5)
    d.feed(stats_msg(5, [record(0) + record(1), record(2)]) + stats_msg(4, [record(9)]))
    assert not d.done
    d.feed(stats_msg(5, [record(3)]) + nlmsg(3, 0x2, 5, struct.pack("=i", 0)))
    assert d.done and not d.error and not d.interrupted and d.version == 1
    recs = _genl.parse_records(d.payloads, d.stride)
    assert recs["rx_bytes"].tolist() == [0, 10, 20, 30]


def test_dump_reader_flags_and_errors() -> None:
    d = _genl._Dump(1)
    d.feed(stats_msg(1, [record(0)], flags=0x2 | _genl.NLM_F_DUMP_INTR))
    d.feed(nlmsg(3, 0x2, 1, struct.pack("=i", 0)))
    assert d.done and d.interrupted
    e = _genl._Dump(2)
    e.feed(nlmsg(2, 0, 2, struct.pack("=i", -19) + bytes(16)))  # NLMSG_ERROR, -ENODEV
    assert e.done and e.error == 19
