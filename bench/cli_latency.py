"""CLI latency: how long a read-only `wghybrid` call takes, start to exit (issue 13).

Starts `wghybrid run --backend sim` (scenario "mixed" by default: 206 tunnels) in a
temporary directory, waits for its first tick, then runs each read-only command --runs
times as an operator would (a new process each time: the installed `wghybrid` script,
Python's start-up and imports included), one after the other, and times each call from
fork to exit. The target (the issue): every command's median under 150 ms.

As installed, the package is byte-compiled (pip writes the .pyc files): the benchmark
lets Python cache bytecode, in a directory of its own (PYTHONPYCACHEPREFIX, nothing is
written in the source tree), and the warm-up call of each command fills it. `--no-pyc`
measures with no cache at all (every module compiled on every call, as with
PYTHONDONTWRITEBYTECODE=1 and no .pyc files: the worst case).

    .venv/bin/python bench/cli_latency.py [--runs 20] [--scenario mixed] [--out FILE]
        [--target-ms 150] [--command "status --top 10" ...]

Prints a table (median, p90, max, ms, per command); writes the numbers as JSON to --out
(default bench/results/cli_latency.json); exits 1 when a median misses the target, 2 when
the daemon does not come up or a command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TARGET_MS = 150.0
COMMANDS = (
    "version",
    "status",
    "status --json",
    "status wg0 modes",
    "dump",
    "override list",
    "policy show",
)
"""The read-only commands timed by default (plain `wghybrid` is `status`)."""


def wghybrid_command() -> list[str]:
    """The installed console script beside this interpreter, else `python -m wghybrid`."""
    script = Path(sys.executable).with_name("wghybrid")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wghybrid"]


def wait_ready(cli: list[str], env: dict[str, str], proc: subprocess.Popen[bytes],
               timeout: float = 60.0) -> None:
    """Until the daemon answers and has ticked once (health ticks >= 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited ({proc.returncode}) before its first tick")
        done = subprocess.run([*cli, "status", "--json"], capture_output=True, env=env,
                              check=False, timeout=30)
        if done.returncode == 0 and json.loads(done.stdout)["interfaces"]:
            return
        time.sleep(0.2)
    raise SystemExit("the daemon did not answer within 60 s")


def time_command(cli: list[str], argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([*cli, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, check=False, timeout=60)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"wghybrid {shlex.join(argv)} failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace').strip()}")
        times.append(took * 1000.0)
    return times


def summarise(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max_ms": ordered[-1],
        "min_ms": ordered[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20, help="calls per command (default 20)")
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--target-ms", type=float, default=TARGET_MS)
    ap.add_argument("--command", action="append", metavar="ARGS",
                    help="a command to time instead of the default list (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS / "cli_latency.json")
    ap.add_argument("--no-pyc", action="store_true",
                    help="no bytecode cache: every call compiles every module")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be 1 or more")
    commands = args.command or list(COMMANDS)
    cli = wghybrid_command()

    with tempfile.TemporaryDirectory(prefix="wgh-cli-") as tmp_name:
        tmp = Path(tmp_name)
        sock = tmp / "api.sock"
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WGHYBRID_URL", "WGHYBRID_TOKEN_FILE",
                            "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        env["WGHYBRID_SOCKET"] = str(sock)
        if args.no_pyc:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "no-pycache")  # existing .pyc unused
        else:
            env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
        log = (tmp / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [*cli, "run", "--backend", "sim", "--scenario", args.scenario,
             "--state-dir", str(tmp / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            wait_ready(cli, env, proc)
            for argv_text in commands:  # one warm-up call each (page cache, .pyc files)
                time_command(cli, shlex.split(argv_text), env, 1)
            results = {c: time_command(cli, shlex.split(c), env, args.runs) for c in commands}
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()

    rows: list[dict[str, Any]] = []
    for command, times in results.items():
        rows.append({"command": f"wghybrid {command}", **summarise(times), "runs": len(times),
                     "times_ms": [round(t, 2) for t in times]})
    missed = [r["command"] for r in rows if r["median_ms"] > args.target_ms]
    width = max(len(r["command"]) for r in rows)
    cache = "no bytecode cache" if args.no_pyc else "bytecode cached"
    print(f"{'command':<{width}}  {'median':>7}  {'p90':>7}  {'max':>7}  "
          f"(ms, {args.runs} runs, {cache})")
    for r in rows:
        mark = "  MISSED" if r["command"] in missed else ""
        print(f"{r['command']:<{width}}  {r['median_ms']:7.1f}  {r['p90_ms']:7.1f}  "
              f"{r['max_ms']:7.1f}{mark}")
    verdict = "ok" if not missed else "MISSED " + ", ".join(missed)
    print(f"target: median <= {args.target_ms:g} ms: {verdict}")
    out = {
        "target_ms": args.target_ms, "scenario": args.scenario, "runs": args.runs,
        "bytecode_cache": not args.no_pyc,
        "ok": not missed, "missed": missed, "commands": rows,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
