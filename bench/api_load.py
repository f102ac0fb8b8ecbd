"""API load benchmark: 1,000 requests/s over the unix socket while the loop ticks.

Starts `wghybrid run --backend sim` (scenario "mixed" by default: 206 tunnels) with a
policy ticking every --interval seconds, then:

  1. idle phase (--idle s): only a light health poll, to measure the tick cadence unloaded;
  2. load phase (--duration s): --concurrency workers pacing themselves to --rate requests/s
     in all, a mix of reads (health, status, peers, overrides, policy, metrics) and writes
     (--write-share of them: each worker sets then clears an override on its own peer,
     every write fsynced).

Every health answer carries `ticks` and `last_tick` (the wall time the tick started); the
poll rate is far above the tick rate, so the benchmark sees every tick's start and
computes the tick-interval jitter: |interval - nominal| / nominal.

A request fails when it raises (connection error, timeout) or answers with a status other
than the one expected for it. Prints a table; writes bench/results/api_load.json.

    .venv/bin/python bench/api_load.py [--duration 30] [--rate 1000] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

POLICY = """
name = "bench"
interval = {interval}
smoothing = 3.0
[classify]
min_dwell = 5.0
latent_heat = 2.0
"""

# (weight, method, path) of the read mix; writes are added per worker.
READS = [
    (30, "GET", "/v1/health"),
    (20, "GET", "/v1/status"),
    (15, "GET", "/v1/peers?interface=wg0"),
    (10, "GET", "/v1/overrides"),
    (5, "GET", "/v1/policy"),
    (5, "GET", "/metrics"),
]


@dataclass
class Stats:
    sent: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)
    by_path: dict[str, int] = field(default_factory=dict)
    ticks: dict[int, float] = field(default_factory=dict)
    """tick number -> wall time it started (from /v1/health answers)."""

    def fail(self, what: str) -> None:
        self.failed += 1
        self.failures[what] = self.failures.get(what, 0) + 1


def session(sock: Path) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        base_url="http://wghybrid",
        connector=aiohttp.UnixConnector(path=str(sock), limit=0),
        timeout=aiohttp.ClientTimeout(total=10),
    )


async def call(
    s: aiohttp.ClientSession, stats: Stats, method: str, path: str, expect: int,
    body: dict[str, Any] | None = None, params: dict[str, str] | None = None,
) -> Any:
    t0 = time.perf_counter()
    stats.sent += 1
    label = f"{method} {path.split('?')[0]}"
    stats.by_path[label] = stats.by_path.get(label, 0) + 1
    try:
        async with s.request(method, path, json=body, params=params) as r:
            data = await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        stats.fail(f"{label}: {type(exc).__name__}")
        return None
    stats.latency.append(time.perf_counter() - t0)
    if status != expect:
        stats.fail(f"{label}: HTTP {status}")
        return None
    if path == "/v1/health":
        h = json.loads(data)
        if h["last_tick"] is not None:
            stats.ticks.setdefault(h["ticks"], h["last_tick"])
    return data


async def worker(
    sock: Path, stats: Stats, rate: float, until: float, key: str, n: int, seed: int,
    write_share: float,
) -> None:
    """Paced closed loop: request k is due at start + k/rate (missed slots are not
    made up for, so a slow server shows as a lower achieved rate, not a burst)."""
    import random

    rng = random.Random(seed)
    weights = [w for w, _, _ in READS]
    pinned = False
    async with session(sock) as s:
        start = time.monotonic()
        k = 0
        while True:
            now = time.monotonic()
            if now >= until:
                return
            due = start + k / rate
            if due > now:
                await asyncio.sleep(due - now)
            k = max(k + 1, int((time.monotonic() - start) * rate))
            if rng.random() < write_share:
                if not pinned:
                    body = {"interface": "wg0", "public_key": key,
                            "mode": rng.choice(["vanilla", "inline"]),
                            "expires_in": 60, "reason": f"bench worker {n}"}
                    pinned = await call(s, stats, "POST", "/v1/overrides", 201, body) is not None
                else:
                    params = {"interface": "wg0", "public_key": key}
                    await call(s, stats, "DELETE", "/v1/overrides", 200, params=params)
                    pinned = False
            else:
                _, method, path = rng.choices(READS, weights)[0]
                await call(s, stats, method, path, 200)


async def poll_health(sock: Path, stats: Stats, until: float, period: float) -> None:
    async with session(sock) as s:
        while time.monotonic() < until:
            await call(s, stats, "GET", "/v1/health", 200)
            await asyncio.sleep(period)


def jitter(ticks: dict[int, float], interval: float) -> dict[str, Any]:
    nums = sorted(ticks)
    gaps = [ticks[b] - ticks[a] for a, b in zip(nums, nums[1:], strict=False) if b == a + 1]
    if not gaps:
        return {"intervals": 0}
    dev = sorted(abs(g - interval) / interval for g in gaps)
    return {
        "intervals": len(gaps),
        "ticks_seen": len(nums),
        "ticks_missed_by_poll": (nums[-1] - nums[0] + 1) - len(nums),
        "mean_interval_s": statistics.fmean(gaps),
        "jitter_mean": statistics.fmean(dev),
        "jitter_p99": dev[min(len(dev) - 1, int(0.99 * len(dev)))],
        "jitter_max": dev[-1],
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def metric(sock: Path, name: str) -> float:
    async with session(sock) as s, s.get("/metrics") as r:
        for line in (await r.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return float("nan")


async def bench(args: argparse.Namespace, sock: Path) -> dict[str, Any]:
    async with session(sock) as s:
        for _ in range(300):
            try:
                async with s.get("/v1/health") as r:
                    if (await r.json())["ticks"] >= 2:
                        break
            except (aiohttp.ClientError, FileNotFoundError):
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the daemon did not start")
        async with s.get("/v1/peers") as r:
            keys = [p["public_key"] for p in (await r.json())["peers"]]

    idle = Stats()
    await poll_health(sock, idle, time.monotonic() + args.idle, 0.01)

    load = Stats()
    skipped0 = await metric(sock, "wghybrid_ticks_skipped_total")
    until = time.monotonic() + args.duration
    t0 = time.monotonic()
    per_worker = args.rate / args.concurrency
    await asyncio.gather(*(
        worker(sock, load, per_worker, until, keys[i % len(keys)], i, args.seed + i,
               args.write_share)
        for i in range(args.concurrency)
    ))
    elapsed = time.monotonic() - t0
    skipped = await metric(sock, "wghybrid_ticks_skipped_total") - skipped0
    return {
        "config": vars(args),
        "peers": len(keys),
        "idle": {"requests": idle.sent, "failed": idle.failed,
                 "jitter": jitter(idle.ticks, args.interval)},
        "load": {
            "requests": load.sent,
            "failed": load.failed,
            "failures": load.failures,
            "seconds": elapsed,
            "rate": load.sent / elapsed,
            "latency_p50_ms": pct(load.latency, 0.50) * 1e3,
            "latency_p99_ms": pct(load.latency, 0.99) * 1e3,
            "latency_max_ms": max(load.latency, default=float("nan")) * 1e3,
            "by_path": load.by_path,
            "ticks_skipped": skipped,
            "jitter": jitter(load.ticks, args.interval),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0, help="target requests/s in all")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--interval", type=float, default=0.25, help="the policy's tick interval")
    ap.add_argument("--scenario", default="mixed")
    ap.add_argument("--write-share", type=float, default=0.02,
                    help="fraction of requests that set or clear an override (fsynced)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="wghybrid-bench-") as tmp_name:
        tmp = Path(tmp_name)
        sock = tmp / "api.sock"
        policy = tmp / "policy.toml"
        policy.write_text(POLICY.format(interval=args.interval))
        log = (tmp / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "wghybrid", "run", "--backend", "sim",
             "--scenario", args.scenario, "--policy", str(policy),
             "--state-dir", str(tmp / "state"), "--socket", str(sock), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
        )
        try:
            result = asyncio.run(bench(args, sock))
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
            log.close()
        result["daemon_exit"] = code
        result["daemon_errors"] = [
            line for line in (tmp / "daemon.log").read_text(errors="replace").splitlines()
            if "ERROR" in line or "Traceback" in line
        ][:20]

    load, idle = result["load"], result["idle"]
    lj, ij = load["jitter"], idle["jitter"]
    rows = [
        ("peers (scenario " + args.scenario + ")", f"{result['peers']}"),
        ("tick interval (policy)", f"{args.interval:g} s"),
        ("load: requests / seconds", f"{load['requests']} / {load['seconds']:.1f}"),
        ("load: achieved rate", f"{load['rate']:.0f} req/s (target {args.rate:g})"),
        ("load: failed requests", f"{load['failed']} {load['failures'] or ''}".strip()),
        ("load: latency p50 / p99 / max",
         f"{load['latency_p50_ms']:.1f} / {load['latency_p99_ms']:.1f} / "
         f"{load['latency_max_ms']:.1f} ms"),
        ("idle: tick jitter mean / p99 / max",
         f"{ij.get('jitter_mean', 0):.1%} / {ij.get('jitter_p99', 0):.1%} / "
         f"{ij.get('jitter_max', 0):.1%} ({ij.get('intervals', 0)} intervals)"),
        ("load: tick jitter mean / p99 / max",
         f"{lj.get('jitter_mean', 0):.1%} / {lj.get('jitter_p99', 0):.1%} / "
         f"{lj.get('jitter_max', 0):.1%} ({lj.get('intervals', 0)} intervals)"),
        ("load: mean tick interval", f"{lj.get('mean_interval_s', 0):.4f} s"),
        ("load: ticks skipped (overran)", f"{load['ticks_skipped']:g}"),
        ("daemon exit / errors logged", f"{code} / {len(result['daemon_errors'])}"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "api_load.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    ok = load["failed"] == 0 and load["rate"] >= 500 and lj.get("jitter_p99", 1.0) <= 0.10
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
