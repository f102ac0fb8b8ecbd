"""Reading every peer's counters: the wghybrid bulk dump vs upstream WireGuard's dump.

Run inside the qemu guest (kmod/harness/scenarios/daemon_dump.sh sets up a device with
10,000 peers) as root, in the device's namespace:

    .venv/bin/python bench/kmod_dump.py --dev wg0 [--reps 15] [--out FILE]

Methods, each the median of --reps full reads of every peer:
  bulk       the daemon's own read: WGH_CMD_GET_STATS on a netlink socket read by the
             event loop, records parsed into numpy arrays (wghybrid.dataplane._genl.Genl.stats)
  wg         `wg show DEV dump` (wireguard-tools, C, upstream's WG_CMD_GET_DEVICE dump,
             what `wg show all dump` runs), output to /dev/null; process start included,
             and also shown without it (minus the median of `wg --version`)
  pyroute2   pyroute2's WireGuard.info(DEV): upstream's dump parsed in Python
Prints a table and the ratios; writes JSON (default bench/results/kmod_dump.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wghybrid.dataplane import _genl  # noqa: E402


async def timed(fn: Callable[[], Awaitable[int]], reps: int) -> tuple[float, int]:
    """(median seconds, peers seen) over `reps` calls after one warm-up."""
    count = await fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        count = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), count


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", default="wg0")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--pyroute2-reps", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/results/kmod_dump.json"))
    args = ap.parse_args()

    genl = _genl.Genl()
    await genl.open()

    async def bulk() -> int:
        recs = await genl.stats(args.dev)
        _ = int(recs["rx_bytes"].sum())  # touch the columns as the rate stage does
        return len(recs)

    async def wg_dump() -> int:
        out = subprocess.run(["wg", "show", args.dev, "dump"], check=True,
                             stdout=subprocess.PIPE).stdout
        return out.count(b"\n") - 1  # the first line is the device

    async def wg_start() -> int:
        subprocess.run(["wg", "--version"], check=True, stdout=subprocess.DEVNULL)
        return 0

    async def pyroute2_dump() -> int:
        from pyroute2.netlink.generic.wireguard import AsyncWireGuard

        wg = AsyncWireGuard()
        try:
            await wg.setup_endpoint()
            keys = set()  # a peer with many allowed IPs spans messages: count keys
            async for msg in await wg.info(args.dev):
                for peer in msg.get_attr("WGDEVICE_A_PEERS") or ():
                    key = peer.get_attr("WGPEER_A_PUBLIC_KEY")
                    keys.add(key if isinstance(key, bytes | str) else key["value"])
            return len(keys)
        finally:
            wg.close()

    rows: dict[str, dict[str, Any]] = {}
    t_bulk, n_bulk = await timed(bulk, args.reps)
    rows["bulk"] = {"seconds": t_bulk, "peers": n_bulk}
    t_wg, n_wg = await timed(wg_dump, args.reps)
    t_start, _ = await timed(wg_start, args.reps)
    rows["wg"] = {"seconds": t_wg, "peers": n_wg, "process_start": t_start}
    rows["wg_minus_start"] = {"seconds": max(t_wg - t_start, 0.0), "peers": n_wg}
    try:
        t_py, n_py = await timed(pyroute2_dump, args.pyroute2_reps)
        rows["pyroute2"] = {"seconds": t_py, "peers": n_py}
    except Exception as exc:  # report, do not hide the other figures
        rows["pyroute2"] = {"error": repr(exc)}
    genl.close()

    print(f"{'method':<18} {'peers':>7} {'median ms':>10} {'ratio to bulk':>14}")
    for name, row in rows.items():
        if "error" in row:
            print(f"{name:<18} {'-':>7} {'-':>10}  {row['error']}")
            continue
        ratio = row["seconds"] / t_bulk if t_bulk else float("inf")
        row["ratio"] = ratio
        print(f"{name:<18} {row['peers']:>7} {row['seconds'] * 1e3:>10.2f} {ratio:>13.1f}x")
    result = {
        "device": args.dev,
        "reps": args.reps,
        "cpus": os.cpu_count(),
        "uname": os.uname().release,
        "methods": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    counts = {r["peers"] for r in rows.values() if "peers" in r}
    if len(counts) != 1:
        print(f"FAIL: methods saw different peer counts: {counts}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
