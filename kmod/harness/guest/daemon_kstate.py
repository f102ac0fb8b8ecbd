#!/usr/bin/python3
"""The kernel's view of the peers' modes, for the daemon scenarios: read through the
"wghybrid" genl family with wghctl.py (raw sockets), never through the daemon.

    daemon_kstate.py modes DEV                       "KEY MODE CORE" per peer
    daemon_kstate.py wait DEV TIMEOUT KEY=MODE...    poll until every KEY has MODE
    daemon_kstate.py hold DEV SECONDS KEY=MODE...    fail if any KEY leaves MODE meanwhile
    daemon_kstate.py watch DEV OUT                   append one JSON line per mode change
                                                     (until killed)
    daemon_kstate.py transitions OUT                 JSON {key: number of changes}
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wghctl  # noqa: E402

NAMES = {0: "vanilla", 1: "inline"}


def modes(g: wghctl.Genl, dev: str) -> dict[str, str]:
    return {str(r["key"]): NAMES[int(r["mode"])] for r in wghctl.stats(g, dev)}  # type: ignore[call-overload]


def wants(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        key, _, mode = a.rpartition("=")
        out[key] = mode
    return out


def main() -> int:
    cmd, dev = sys.argv[1], sys.argv[2]
    g = wghctl.Genl()
    if cmd == "modes":
        for r in wghctl.stats(g, dev):
            print(r["key"], NAMES[int(r["mode"])], r["core"])  # type: ignore[call-overload]
        return 0
    if cmd in ("wait", "hold"):
        limit, want = float(sys.argv[3]), wants(sys.argv[4:])
        start = time.monotonic()
        while True:
            now = modes(g, dev)
            wrong = {k: now.get(k) for k, m in want.items() if now.get(k) != m}
            elapsed = time.monotonic() - start
            if cmd == "wait" and not wrong:
                print(f"kernel: reached after {elapsed:.1f} s: {want}")
                return 0
            if cmd == "hold" and wrong:
                print(f"kernel: after {elapsed:.1f} s, {wrong} instead of {want}")
                return 1
            if elapsed > limit:
                if cmd == "hold":
                    print(f"kernel: held {want} for {limit:g} s")
                    return 0
                print(f"kernel: after {limit:g} s still {wrong}; wanted {want}")
                return 1
            time.sleep(0.25)
    if cmd == "watch":
        out = sys.argv[3]
        last: dict[str, str] = {}
        while True:
            now = modes(g, dev)
            with open(out, "a") as f:
                for k, m in now.items():
                    if last.get(k) not in (None, m):
                        f.write(json.dumps({"t": time.time(), "key": k, "from": last[k],
                                            "to": m}) + "\n")
            last = now
            time.sleep(0.2)
    if cmd == "transitions":
        counts: dict[str, int] = {}
        try:
            with open(dev) as f:
                for line in f:
                    k = json.loads(line)["key"]
                    counts[k] = counts.get(k, 0) + 1
        except FileNotFoundError:
            pass
        print(json.dumps(counts))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
