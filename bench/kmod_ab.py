"""Vanilla costs what upstream costs: the patched module against Debian's stock one.

Issue 12: the patched module with vanilla peers must deliver, per guest CPU-second,
within 2 % of Debian's stock wireguard.ko; inline's gain is measured the same way. Both
in one qemu boot (kmod/harness/scenarios/ab_stock.sh, TCG): trials of the stock module,
the patched one with vanilla peers and with inline peers, interleaved round by round in
rotated order, each one iperf3 TCP stream through the same tunnel between two network
namespaces for a fixed time, with the guest's busy CPU time (/proc/stat, all CPUs, every
state but idle and iowait) around it. qemu's timings are not hardware timings: only the
same-run ratios are figures to keep.

    .venv/bin/python bench/kmod_ab.py [--target trixie|bookworm] [--rounds N] [--seconds S]
                                      [--smp N] [--icount N]
    .venv/bin/python bench/kmod_ab.py --target T --log kmod/build/T/results/RUN/ab_stock.log

The first boots the guest (kmod/harness/run.sh ab_stock, as root; results under
kmod/build/TARGET/results/ab-*), the second reads a run's log. Bytes: B's veth0 received
over the window (the encrypted stream, counted by veth, not by the module measured).
CPU-seconds two ways: /proc/stat's busy time (user nice system irq softirq steal: sampled
at the tick; the judged figure) and CPUs x wall time - idle (idle is measured by the
clock): a vCPU that qemu does not run on time loses ticks, "ticks" is the share seen.
Per mode: the median, min/max and quartiles over the trials of Mbit/s and Mbit per
CPU-second; the ratios vanilla/stock and inline/stock of the medians, and of each round's
own trials (median, min, max: the noise). Prints a table, writes JSON (default
bench/results/kmod_ab_TARGET_smpCPUS.json), exits 1 when vanilla/stock Mbit per busy
CPU-second (ticks, ratio of the medians) is below 0.98, or when the guest's scenario
failed or left a mode without trials.

--icount N boots qemu with instruction-counted time (run.sh's WGHYBRID_KMOD_ICOUNT: one
TCG thread, each guest instruction 2^N ns of guest time, idle skipped). The guest's clock
and /proc/stat then count the guest's own instructions, so a CPU-second is a number of
instructions whatever else the host runs: the per-CPU-second ratios measure instructions
per byte, free of the host's noise and of lost ticks (what is left is the workload's own
variation, TCP's included). Results go to ..._icountN.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODES = ("stock", "vanilla", "inline")
METRICS = ("mbit_per_s", "mbit_per_cpu_s", "mbit_per_cpu_s_wall")
VANILLA_MIN = 0.98  # the target: vanilla/stock, Mbit per CPU-second, ratio of the medians


def parse_log(text: str) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(the config line's fields, one dict per "AB trial=" line, whether "AB done" came)."""
    config: dict[str, Any] = {}
    trials: list[dict[str, Any]] = []
    done = False
    cpus = 2
    for line in text.splitlines():
        if not line.startswith("AB "):
            continue
        kind, *fields = line[3:].split()
        kv = dict(f.split("=", 1) for f in fields if "=" in f)
        if kind == "config":
            config = {k: int(v) if v.isdigit() else v for k, v in kv.items()}
            cpus = config.get("cpus", 2)
        elif kind == "done":
            done = True
        elif kind.startswith("trial="):
            kv["trial"] = kind.split("=", 1)[1]
            t: dict[str, Any] = {k: v if k in ("mode", "srcversion") else int(v)
                                 for k, v in kv.items()}
            seconds = t["elapsed_ns"] / 1e9
            cpu_s = t["busy"] / t["hz"]
            # The same from the other end: the window's CPU time less idle (idle is
            # measured by the clock, NOHZ; busy by sampling ticks, which a vCPU that
            # qemu does not run on time loses: their share is "ticks_seen").
            cpu_s_wall = max(seconds * cpus - t["idle"] / t["hz"], 1e-9)
            t["seconds"] = seconds
            t["cpu_s"] = cpu_s
            t["cpu_s_wall"] = cpu_s_wall
            t["mbit_per_s"] = t["bytes"] * 8 / 1e6 / seconds
            t["mbit_per_cpu_s"] = t["bytes"] * 8 / 1e6 / cpu_s if cpu_s else 0.0
            t["mbit_per_cpu_s_wall"] = t["bytes"] * 8 / 1e6 / cpu_s_wall
            t["busy_share"] = t["busy"] / max(t["busy"] + t["idle"], 1)
            t["ticks_seen"] = (t["busy"] + t["idle"]) / t["hz"] / (seconds * cpus)
            trials.append(t)
    return config, trials, done


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles (inclusive method) of `values`."""
    q1, _, q3 = (statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1
                 else (values[0],) * 3)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "q1": q1, "q3": q3}


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mode: trials, spread of Mbit/s, Mbit/CPU-s and busy share; per compared mode:
    the ratios to stock of the medians and of each round's trials."""
    modes: dict[str, Any] = {}
    for mode in MODES:
        mine = [t for t in trials if t["mode"] == mode]
        if not mine:
            continue
        modes[mode] = {
            "trials": len(mine),
            "retransmits": sum(max(t["retrans"], 0) for t in mine),
            **{k: spread([t[k] for t in mine]) for k in METRICS + ("busy_share", "ticks_seen")},
        }
    ratios: dict[str, Any] = {}
    if "stock" in modes:
        rounds: dict[int, dict[str, dict[str, Any]]] = {}
        for t in trials:
            rounds.setdefault(t["round"], {})[t["mode"]] = t
        for mode in ("vanilla", "inline"):
            if mode not in modes:
                continue
            r: dict[str, Any] = {}
            for k in METRICS:
                r[k] = modes[mode][k]["median"] / modes["stock"][k]["median"]
                paired = [rd[mode][k] / rd["stock"][k] for rd in rounds.values()
                          if mode in rd and "stock" in rd and rd["stock"][k]]
                r[f"{k}_per_round"] = spread(paired) if paired else None
            ratios[f"{mode}/stock"] = r
    return {"modes": modes, "ratios": ratios}


def judge(summary: dict[str, Any], done: bool) -> list[str]:
    """What fails the bench: a missing mode, an unfinished scenario, the target missed."""
    misses = [f"no trials of {m}" for m in MODES if m not in summary["modes"]]
    if not done:
        misses.append("the guest's scenario did not finish (no 'AB done' line)")
    r = summary["ratios"].get("vanilla/stock")
    if r is not None and r["mbit_per_cpu_s"] < VANILLA_MIN:
        misses.append(f"vanilla/stock Mbit per CPU-second {r['mbit_per_cpu_s']:.3f} "
                      f"< {VANILLA_MIN}")
    return misses


def table(config: dict[str, Any], summary: dict[str, Any]) -> str:
    def s(d: dict[str, float], f: str = ".1f") -> str:
        return f"{d['median']:{f}} [{d['min']:{f}}..{d['max']:{f}}]"

    out = [f"ab_stock: kernel {config.get('kernel', '?')}, {config.get('cpus', '?')} guest CPUs "
           f"(qemu TCG), {config.get('rounds', '?')} rounds of {config.get('seconds', '?')} s; "
           "med [min..max] over the trials",
           f"{'mode':<8} {'n':>2} {'Mbit/s':>20} {'Mbit/CPU-s (ticks)':>20} "
           f"{'Mbit/CPU-s (wall-idle)':>22} {'busy':>5} {'ticks':>6} {'retr':>5}"]
    for mode, m in summary["modes"].items():
        out.append(f"{mode:<8} {m['trials']:>2} {s(m['mbit_per_s']):>20} "
                   f"{s(m['mbit_per_cpu_s']):>20} {s(m['mbit_per_cpu_s_wall']):>22} "
                   f"{m['busy_share']['median']:>5.0%} {m['ticks_seen']['median']:>6.0%} "
                   f"{m['retransmits']:>5}")
    out.append("ratio: of the medians; per round: med [min..max] of each round's own ratio")
    out.append(f"{'':<14} {'Mbit/s':>9} {'per round':>21} {'/CPU-s ticks':>13} "
               f"{'per round':>21} {'/CPU-s wall':>12} {'per round':>21}")
    for name, r in summary["ratios"].items():
        cells = []
        for k in METRICS:
            pr = r[f"{k}_per_round"]
            cells.append(f"{r[k]:>{9 if k == 'mbit_per_s' else 12}.3f} "
                         f"{s(pr, '.3f') if pr else '-':>21}")
        out.append(f"{name:<14} " + " ".join(cells))
    return "\n".join(out)


def run_guest(target: str, rounds: int, seconds: int, smp: int, icount: int | None) -> Path:
    """Boot the guest with ab_stock; the path of its log."""
    results = ROOT / "kmod" / "build" / target / "results" / f"ab-{time.strftime('%Y%m%d-%H%M%S')}"
    env = dict(os.environ, WGHYBRID_KMOD_TARGET=target, WGHYBRID_KMOD_RESULTS=str(results),
               WGH_AB_ROUNDS=str(rounds), WGH_AB_SECONDS=str(seconds),
               WGHYBRID_KMOD_SMP=str(smp))
    env.pop("WGHYBRID_KMOD_ICOUNT", None)
    if icount is not None:
        env["WGHYBRID_KMOD_ICOUNT"] = str(icount)
        # With sleep=off the guest's clock jumps to its next timer whenever its vCPU
        # waits (on the 9p shares too): 6 rounds took over 900 guest seconds on 6.1.
        env.setdefault("WGH_SCENARIO_TIMEOUT", "7200")
    subprocess.run([str(ROOT / "kmod" / "harness" / "run.sh"), "ab_stock"], env=env, check=False)
    return results / "ab_stock.log"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="trixie", choices=("trixie", "bookworm"))
    ap.add_argument("--log", type=Path, help="read this ab_stock.log instead of booting")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of the three modes")
    ap.add_argument("--seconds", type=int, default=10, help="iperf3 time per trial")
    ap.add_argument("--smp", type=int, default=2, help="guest CPUs (run.sh's -smp)")
    ap.add_argument("--icount", type=int, choices=range(10), metavar="N",
                    help="instruction-counted guest time, 2^N ns per instruction")
    ap.add_argument("--out", type=Path,
                    help="JSON (default bench/results/kmod_ab_TARGET_smpCPUS.json)")
    args = ap.parse_args(argv)
    log = args.log or run_guest(args.target, args.rounds, args.seconds, args.smp, args.icount)
    text = log.read_text(errors="replace") if log.exists() else ""
    config, trials, done = parse_log(text)
    summary = summarize(trials)
    misses = judge(summary, done)
    print(table(config, summary))
    tag = "" if args.icount is None else f"_icount{args.icount}"
    out = args.out or RESULTS / f"kmod_ab_{args.target}_smp{config.get('cpus', args.smp)}{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"target": args.target, "log": str(log), "config": config, "icount": args.icount,
              "vanilla_min": VANILLA_MIN, **summary, "trials": trials, "misses": misses}
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    for m in misses:
        print(f"MISSED: {m}")
    if not misses:
        print(f"met: vanilla/stock per CPU-second >= {VANILLA_MIN}")
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
