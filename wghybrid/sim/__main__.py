"""`python -m wghybrid.sim`: the model's self-check, printed as tables.

1. The paper's experiments replayed (FACTS.md): N tunnels, saturating load.
2. The cost of one `evaluate()` for 10,000 and 100,000 tunnels.
3. Each shipped scenario sampled every 10 s: offered load, both static modes (default
   placement) and the oracle, in Gbps and cores.

`--json FILE` also writes the numbers (the benchmark's results folder is bench/results/).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from wghybrid.model import Mode
from wghybrid.sim.oracle import oracle
from wghybrid.sim.pipeline import GatewayModel
from wghybrid.sim.scenario import list_scenarios, load_scenario


def calibration(model: GatewayModel) -> list[dict[str, Any]]:
    everything = frozenset(range(model.cores))
    rows = []
    for n in (1, 2, 3, 4, 8, 12, 16, 24, 32):
        row: dict[str, Any] = {"tunnels": n}
        for label, mode, threaded in (("vanilla_softirq", Mode.VANILLA, False),
                                      ("vanilla_threaded", Mode.VANILLA, True),
                                      ("inline", Mode.INLINE, True)):
            ev = model.evaluate(np.full(n, 40.0), np.full(n, mode, np.uint8),
                                np.full(n, -1, np.int32), everything, threaded)
            row[label] = {"gbps": round(ev.total_gbps, 2), "cores": round(ev.cores_used, 2)}
        rows.append(row)
    return rows


def evaluate_cost(model: GatewayModel, n: int, repeat: int = 20) -> float:
    """Median milliseconds of one evaluate() over n tunnels of random load and modes."""
    rng = np.random.default_rng(1)
    offered = rng.exponential(0.3, n)
    mode = rng.integers(0, 2, n).astype(np.uint8)
    core = rng.integers(-1, model.cores, n).astype(np.int32)
    pool = frozenset(range(model.cores // 2, model.cores))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        model.evaluate(offered, mode, core, pool, True)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def scenarios(step: float = 10.0) -> list[dict[str, Any]]:
    rows = []
    for name in list_scenarios():
        sc = load_scenario(name)
        model = GatewayModel(cores=sc.cores)
        n = len(sc.tunnels)
        pool = frozenset(range(sc.cores))
        default = np.full(n, -1, np.int32)
        acc = np.zeros(7)
        times = np.arange(0.0, sc.duration + 1e-9, step)
        for t in times:
            offered = sc.offered(float(t))
            v = model.evaluate(offered, np.zeros(n, np.uint8), default, pool, True)
            i = model.evaluate(offered, np.ones(n, np.uint8), default, pool, True)
            o = oracle(model, offered)
            acc += (offered.sum(), v.total_gbps, v.cores_used, i.total_gbps, i.cores_used,
                    o.delivered_gbps_total, o.cores_used)
        m = acc / len(times)
        rows.append({"scenario": name, "tunnels": n, "offered": m[0],
                     "vanilla_gbps": m[1], "vanilla_cores": m[2],
                     "inline_gbps": m[3], "inline_cores": m[4],
                     "oracle_gbps": m[5], "oracle_cores": m[6]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m wghybrid.sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument("--step", type=float, default=10.0,
                        help="seconds between scenario samples (default 10)")
    args = parser.parse_args()
    model = GatewayModel()

    cal = calibration(model)
    print("Paper experiments, 32 cores, saturating TCP: Gbps (cores used)")
    print(f"{'tunnels':>7}  {'vanilla softirq':>16}  {'vanilla threaded':>16}  {'inline':>14}")
    for row in cal:
        cells = [f"{row[k]['gbps']:6.1f} ({row[k]['cores']:4.1f})"
                 for k in ("vanilla_softirq", "vanilla_threaded", "inline")]
        print(f"{row['tunnels']:>7}  {cells[0]:>16}  {cells[1]:>16}  {cells[2]:>14}")

    cost = {n: evaluate_cost(model, n) for n in (10_000, 100_000)}
    print("\nevaluate() cost (median of 20): "
          + ", ".join(f"{n:,} tunnels {ms:.2f} ms" for n, ms in cost.items()))

    sc = scenarios(args.step)
    print(f"\nScenarios, mean over time (sampled every {args.step:g} s): Gbps / cores")
    print(f"{'scenario':<18} {'n':>4} {'offered':>8} {'all-vanilla':>13} "
          f"{'all-inline':>13} {'oracle':>13} {'oracle/best':>11}")
    for r in sc:
        best = max(r["vanilla_gbps"], r["inline_gbps"])
        print(f"{r['scenario']:<18} {r['tunnels']:>4} {r['offered']:>8.1f} "
              f"{r['vanilla_gbps']:>6.1f}/{r['vanilla_cores']:>5.1f} "
              f"{r['inline_gbps']:>6.1f}/{r['inline_cores']:>5.1f} "
              f"{r['oracle_gbps']:>6.1f}/{r['oracle_cores']:>5.1f} "
              f"{r['oracle_gbps'] / best:>11.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"calibration": cal, "evaluate_ms": cost, "scenarios": sc}, indent=2))
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
