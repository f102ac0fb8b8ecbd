"""Bulk stats dumps of a big device while peers are added and removed (scenario dump_churn).

Runs in the guest, in the device's namespace, with the repository on PYTHONPATH
(`wghybrid-python`), as root:

    dump_churn.py --dev wg0 --base FILE [--seconds 30]

FILE lists the base64 keys of the peers that never change. A churn task adds a new peer
and removes an earlier churn peer with `wg set` (each call moves the device's
device_update_gen), with short random pauses so that some dumps do complete. Meanwhile:
  1. raw dumps with the daemon's reader (wghybrid.dataplane._genl.Genl.stats): an
     interrupted one (NLM_F_DUMP_INTR) raises DumpInterrupted; a complete one must hold
     every base key exactly once and no key twice;
  2. the daemon's whole sample (KernelDataPlane.sample), which retries an interrupted
     dump up to DUMP_RETRIES times: it must return a sample holding every base key, or
     raise TransientError naming the changing peer list, and nothing else.
Fails (exit 1) unless interrupted dumps were seen (raw, or retried by the sample),
complete dumps and whole samples were seen, every one of them was consistent, and after
the churn one dump equals `wg show DEV peers`. (Seen on 6.12 under TCG: 28 changes in
30 s, 52 complete raw dumps and 1 interrupted, 53 whole samples with 11 retried dumps.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import subprocess
import sys
import time

from wghybrid.dataplane import TransientError, _genl
from wghybrid.dataplane.kernel import DUMP_RETRIES, KernelDataPlane


def keys_of(records: object) -> list[bytes]:
    return [bytes(k).ljust(32, b"\0") for k in records["key"]]  # type: ignore[index]


async def wg_set(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("wg", "set", *args)
    if await proc.wait() != 0:
        raise RuntimeError(f"wg set {' '.join(args)} failed")


async def churn(dev: str, stop: asyncio.Event, done: list[int]) -> None:
    """Add a peer, remove the oldest churn peer once there are 20; random 0-50 ms pauses."""
    live: list[str] = []
    i = 0
    while not stop.is_set():
        key = base64.b64encode(os.urandom(32)).decode()
        await wg_set(dev, "peer", key, "allowed-ips", f"10.250.{(i >> 8) & 255}.{i & 255}/32")
        live.append(key)
        if len(live) > 20:
            await wg_set(dev, "peer", live.pop(0), "remove")
        i += 1
        done[0] += 1
        await asyncio.sleep(random.uniform(0, 0.05))


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default="wg0")
    ap.add_argument("--base", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    with open(args.base) as f:
        base = {base64.b64decode(line.strip()) for line in f if line.strip()}

    genl = _genl.Genl()
    await genl.open()
    plane = KernelDataPlane(genl)
    stop = asyncio.Event()
    changes = [0]
    churner = asyncio.create_task(churn(args.dev, stop, changes))
    interrupted = complete = samples = transient = 0
    bad: list[str] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end and not churner.done():
        try:
            keys = keys_of(await genl.stats(args.dev))
        except _genl.DumpInterrupted:
            interrupted += 1
        else:
            complete += 1
            seen = set(keys)
            if len(seen) != len(keys):
                bad.append(f"a complete dump holds {len(keys) - len(seen)} key(s) twice")
            if missing := len(base - seen):
                bad.append(f"a complete dump misses {missing} of the {len(base)} base peers")
        try:
            sample = await plane.sample()
        except TransientError as exc:
            transient += 1
            if "changed during" not in str(exc):
                bad.append(f"sample: an unexpected transient error: {exc}")
        else:
            samples += 1
            got = set(keys_of({"key": sample.peers.key}))
            if missing := len(base - got):
                bad.append(f"a sample misses {missing} of the {len(base)} base peers")
            if len(got) != len(sample.peers):
                bad.append("a sample holds a key twice")
    stop.set()
    await churner  # raises if a `wg set` failed
    print(f"{changes[0]} peer changes in {args.seconds:g} s; raw dumps: {complete} complete, "
          f"{interrupted} interrupted (NLM_F_DUMP_INTR); daemon samples: {samples} whole "
          f"(dumps retried {plane.dump_retries} times in all), {transient} transient "
          f"errors after {DUMP_RETRIES} interrupted dumps in a row")

    listed = subprocess.run(["wg", "show", args.dev, "peers"], check=True,
                            capture_output=True, text=True).stdout.split()
    final = keys_of(await genl.stats(args.dev))
    if sorted(final) != sorted(base64.b64decode(k) for k in listed):
        bad.append(f"after the churn the dump ({len(final)} peers) is not `wg show "
                   f"{args.dev} peers` ({len(listed)})")
    genl.close()
    if interrupted + plane.dump_retries == 0:
        bad.append("no dump was interrupted: the churn never reached a dump (check not made)")
    if complete == 0 or samples == 0:
        bad.append(f"no complete dump ({complete}) or whole sample ({samples}) under churn")
    for line in dict.fromkeys(bad):
        print("FAIL:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
