#!/usr/bin/python3
"""flip.py DEV KEY SECONDS INTERVAL: switch one peer between vanilla and inline every
INTERVAL seconds for SECONDS, moving its TX core and the device's crypt cpumask too,
and check after every switch that the peer's counters never go back and its epoch
never changes. Prints a JSON summary; exits 1 on an inconsistency."""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wghctl  # noqa: E402

COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_cpu_ns", "tx_cpu_ns",
            "drops")


def main() -> int:
    dev, key, seconds, interval = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    g = wghctl.Genl()
    ncpu = os.cpu_count() or 1
    prev = None
    flips = 0
    errors = []
    end = time.monotonic() + seconds
    nxt = time.monotonic()
    while time.monotonic() < end:
        mode = ("inline", "vanilla")[flips % 2]
        wghctl.set_peer(g, dev, key, mode=mode, core=(flips // 2) % ncpu)
        if flips % 10 == 0:
            wghctl.set_device(g, dev, [(flips // 10) % ncpu] if flips % 20 else [])
        flips += 1
        (rec,) = wghctl.stats(g, dev)
        if rec["mode"] != wghctl.MODES[mode]:
            errors.append(f"flip {flips}: mode {rec['mode']} after setting {mode}")
        if prev is not None:
            if rec["epoch"] != prev["epoch"]:
                errors.append(f"flip {flips}: epoch changed")
            for c in COUNTERS:
                if rec[c] < prev[c]:
                    errors.append(f"flip {flips}: {c} went back {prev[c]} -> {rec[c]}")
        prev = rec
        nxt += interval
        time.sleep(max(0.0, nxt - time.monotonic()))
    wghctl.set_device(g, dev, [])
    print(json.dumps({"flips": flips, "last": prev, "errors": errors[:20]}))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
