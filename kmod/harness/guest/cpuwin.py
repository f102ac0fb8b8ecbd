#!/usr/bin/python3
"""cpuwin.py DELAY SECONDS NETNS... : what the peers of the wghybrid devices (wg0) in each
NETNS charged as CPU time over SECONDS, beside what the guest's CPUs spent meanwhile in
softirq, hardirq and kworker threads. Prints one JSON object:

  {"seconds": wall time between the two readings,
   "peers": {"NETNS/KEY": {"rx_cpu_ns": delta, "tx_cpu_ns": delta, "rx_packets": delta,
                           "tx_packets": delta, "drops": delta}, ...},
   "softirq_ns": delta, "irq_ns": delta (from /proc/stat, in USER_HZ ticks there),
   "kworker_ns": delta (sum over kworker threads of /proc/PID/schedstat's run time),
   "kworkers": number of kworker threads seen,
   "busy_ticks_ns": delta of the tick-sampled fields (user nice system irq softirq
                    steal), "busy_clock_ns": CPUs x wall time - delta
                    of idle and iowait (measured with the clock, not sampled),
   "read_ns": the longer of the two readings (they are not instantaneous)}

It opens its sockets, writes "ready" to stdout's first line, waits DELAY seconds (the
caller starts the traffic meanwhile), then reads twice, SECONDS apart.

Both readings are taken in one process within a few milliseconds (the genl sockets are
opened in each namespace beforehand with setns()), so the counters and the guest's
accounting cover the same interval. The guest's kernel (Debian's) has no
IRQ_TIME_ACCOUNTING: /proc/stat's softirq and irq times are sampled at the tick (HZ
250), a kworker's run time includes the softirqs that ran on its stack."""

import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wghctl  # noqa: E402

CLONE_NEWNET = 0x40000000
FIELDS = ("rx_cpu_ns", "tx_cpu_ns", "rx_packets", "tx_packets", "drops")
TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def genl_in(netns: str, libc: ctypes.CDLL) -> wghctl.Genl:
    """A genl socket of NETNS: sockets keep the namespace they were made in."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), f"setns {netns}")
        g = wghctl.Genl()
        if libc.setns(home, CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(there)
    return g


def kworkers() -> dict[int, int]:
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("kworker"):
                    continue
            with open(f"/proc/{pid}/schedstat") as f:
                out[int(pid)] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
    return out


def proc_stat() -> tuple[int, int, int, int]:
    """softirq, irq, the tick-sampled busy time, idle + iowait (ns)."""
    with open("/proc/stat") as f:
        cpu = [int(v) * TICK_NS for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice
    return cpu[6], cpu[5], sum(cpu[:8]) - cpu[3] - cpu[4], cpu[3] + cpu[4]


def reading(socks: dict[str, wghctl.Genl]) -> dict[str, object]:
    t0 = time.monotonic_ns()
    peers = {}
    for ns, g in socks.items():
        for rec in wghctl.stats(g, "wg0"):
            peers[f"{ns}/{rec['key']}"] = {k: rec[k] for k in FIELDS}
    softirq, irq, busy, idle = proc_stat()
    t = time.monotonic()
    kw = kworkers()
    return {"t": t, "peers": peers, "softirq": softirq, "irq": irq, "busy": busy,
            "idle": idle, "kworkers": kw, "read_ns": time.monotonic_ns() - t0}


def main() -> int:
    delay, seconds, names = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    socks = {ns: genl_in(ns, libc) for ns in names}
    reading(socks)  # warm: the first reading imports and opens what it needs
    print("ready", flush=True)
    time.sleep(delay)
    r0 = reading(socks)
    time.sleep(seconds)
    r1 = reading(socks)
    # A kworker that exited between the readings loses its time from the bound (it can
    # only make the check stricter); one that appeared counts from 0.
    kw = sum(ns - r0["kworkers"].get(pid, 0) for pid, ns in r1["kworkers"].items())
    print(json.dumps({
        "seconds": r1["t"] - r0["t"],
        "peers": {p: {k: v[k] - r0["peers"][p][k] for k in FIELDS}
                  for p, v in r1["peers"].items() if p in r0["peers"]},
        "softirq_ns": r1["softirq"] - r0["softirq"],
        "irq_ns": r1["irq"] - r0["irq"],
        "kworker_ns": kw,
        "kworkers": len(r1["kworkers"]),
        "busy_ticks_ns": r1["busy"] - r0["busy"],
        "busy_clock_ns": int((os.cpu_count() or 1) * (r1["t"] - r0["t"]) * 1e9)
        - (r1["idle"] - r0["idle"]),
        "read_ns": max(r0["read_ns"], r1["read_ns"]),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
