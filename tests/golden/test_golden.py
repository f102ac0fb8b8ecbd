"""Golden cases: a folder (policy + samples) -> the expected plan, tick by tick.

Each folder under cases/ holds:
- policy.toml: loaded with the daemon's own loader;
- samples.json: the gateway (cores, interfaces, peers with the mode and core they are
  found in), then one entry per tick: its time, each peer's traffic since the previous tick
  (`gbps`: a number, or {"inline": x, "vanilla": y} for a tunnel whose rate depends on its
  mode), optional `epoch` changes (a counter restart) and operator `overrides`;
- expected.txt: one line per operation, "t=<now> <operation>", in plan order.

The runner closes the loop like a data plane would: it applies each plan to the state the
next tick observes, and integrates the traffic into the cumulative counters the data
plane reports (CPU at FACTS.md's costs: 1/2.8 core per Gbps inline, capped at one core;
2/3 core per Gbps vanilla).

Regenerate after an intended behaviour change with WGHYBRID_REGEN_GOLDEN=1, then read the
diff: it is the behaviour change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from wghybrid.core.controller import Controller
from wghybrid.model import (
    GatewaySample,
    InterfaceState,
    Mode,
    Override,
    PeerTable,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    decode_key,
    encode_key,
    parse_cores,
)
from wghybrid.policy.load import load_policy

pytestmark = pytest.mark.golden

CASES = sorted(p for p in (Path(__file__).parent / "cases").iterdir() if p.is_dir())


def run_case(case: Path) -> list[str]:
    spec = json.loads((case / "samples.json").read_text())
    policy = load_policy(case / "policy.toml", online_cores=spec["cores"])
    ctl = Controller(policy)
    names = [i["name"] for i in spec["interfaces"]]
    peers = spec["peers"]
    keys = np.array([decode_key(p["key"]) for p in peers], dtype="S32")
    iface = np.array([names.index(p.get("interface", names[0])) for p in peers], np.int32)
    row = {p["key"]: r for r, p in enumerate(peers)}
    mode = np.array([Mode[p["mode"].upper()] for p in peers], np.uint8)
    core = np.array([p.get("core", -1) for p in peers], np.int32)
    crypt = {i["name"]: parse_cores(i["crypt_cores"]) for i in spec["interfaces"]}
    threaded = {i["name"]: bool(i["threaded_napi"]) for i in spec["interfaces"]}
    rx = np.zeros(len(peers), np.uint64)
    cpu_ns = np.zeros(len(peers), np.uint64)
    epoch = np.ones(len(peers), np.uint64)
    last_now = 0.0
    lines = []
    for tick in spec["ticks"]:
        now = float(tick["now"])
        dt = now - last_now
        for k, e in tick.get("epoch", {}).items():
            r = row[k]
            if e != epoch[r]:
                epoch[r], rx[r], cpu_ns[r] = e, 0, 0
        for k, g in tick.get("gbps", {}).items():
            r = row[k]
            m = Mode(int(mode[r]))
            gbps = float(g[str(m)] if isinstance(g, dict) else g)
            cpu = min(gbps / 2.8, 1.0) if m == Mode.INLINE else gbps * 2 / 3
            rx[r] += np.uint64(int(gbps * 1e9 / 8 * dt))
            cpu_ns[r] += np.uint64(int(cpu * 1e9 * dt))
        sample = GatewaySample(
            now=now, cores=spec["cores"], core_busy_ns=np.zeros(spec["cores"], np.uint64),
            interfaces=tuple(InterfaceState(n, crypt[n], threaded[n]) for n in names),
            peers=PeerTable.build(iface, keys, rx_bytes=rx.copy(), rx_cpu_ns=cpu_ns.copy(),
                                  mode=mode.copy(), core=core.copy(), epoch=epoch.copy()),
        )
        overrides = [
            Override(o["interface"], decode_key(o["public_key"]),
                     mode=Mode[o["mode"].upper()] if o.get("mode") else None,
                     core=o.get("core"))
            for o in tick.get("overrides", [])
        ]
        for op in ctl.plan(sample, overrides, wall_now=now):
            lines.append(f"t={now:g} {op.describe()}")
            if isinstance(op, SetPeerMode):
                mode[row[encode_key(op.public_key)]] = op.mode
            elif isinstance(op, SetPeerCore):
                core[row[encode_key(op.public_key)]] = op.core
            elif isinstance(op, SetCryptCores):
                crypt[op.interface] = op.cores
            elif isinstance(op, SetThreadedNapi):
                threaded[op.interface] = op.enabled
        last_now = now
    return lines


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden(case: Path) -> None:
    got = run_case(case)
    expected_file = case / "expected.txt"
    if os.environ.get("WGHYBRID_REGEN_GOLDEN") == "1":
        expected_file.write_text("".join(line + "\n" for line in got))
    assert got == expected_file.read_text().splitlines()
