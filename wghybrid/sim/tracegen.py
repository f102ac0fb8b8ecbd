"""Build a trace (a CSV of `t_s,tunnel,gbps`, see docs/sim-model.md, "Traces") from a
published flow-size distribution.

    python -m wghybrid.sim.tracegen --cdf websearch --tunnels 64 --heavy 4 -o out.csv

The model, per tunnel (a site behind the gateway):

* Flows arrive as a Poisson process whose rate gives the tunnel's mean load: a light
  tunnel's mean is drawn log-uniformly in `--light-gbps LO:HI`, a heavy one's (the first
  `--heavy` tunnels, bigger sites) uniformly in `--heavy-gbps LO:HI`.
* Flow sizes are drawn from the chosen CDF by inverse transform sampling, linear between
  the CDF's points (as the simulators that ship these CDFs draw them).
* Each flow sends at a fixed rate, `--flow-gbps` (default 1 Gbps: a TCP flow held back by
  its end host or access link, not by the tunnel), from its arrival until its bytes are
  sent: a flow of S bytes lasts 8 S / rate. This is an assumption; the published CDFs say
  nothing about rates. The tunnel's load at an instant is the sum of the rates of its
  flows in progress; nothing caps it (the gateway model does).
* A row (t, tunnel, gbps) is the tunnel's mean load over [t - step/2, t + step/2), for
  t = 0, step, ..., duration. Flows start `--warmup` seconds before 0, so the trace
  begins in steady state.

Every draw comes from numpy's default generator seeded with `--seed` (per tunnel,
`default_rng([seed, tunnel index + 1])`; the mean loads from `default_rng([seed, 0])`),
so the output is a deterministic function of the arguments. The CSV's comment header
names the distribution's source and the command that regenerates the file.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wghybrid.model import F64


@dataclass(frozen=True, slots=True)
class FlowSizeCdf:
    name: str
    sizes: tuple[float, ...]
    """Flow sizes in bytes, increasing."""
    cdf: tuple[float, ...]
    """P(size <= sizes[i]), from 0 to 1."""
    source: tuple[str, ...]
    """Citation lines (paper, repository, file, licence)."""

    def mean_bytes(self) -> float:
        x, p = np.asarray(self.sizes), np.asarray(self.cdf)
        return float(np.sum(np.diff(p) * (x[1:] + x[:-1]) / 2.0))

    def draw(self, rng: np.random.Generator, n: int) -> F64:
        out: F64 = np.interp(rng.uniform(0.0, 1.0, n), self.cdf, self.sizes)
        return out


_NETWORKLOAD = ("snkas/networkload, networkload/schedule/flowsize/flow_size_cdf_database.py "
                "(commit 5efea5bee798519afc9a45a8a31da66d3a9501db)")
_NETWORKLOAD_LICENCE = ("licence: the repository is MIT; its LICENSE puts this file under "
                        "the Apache License 2.0")

CDFS: dict[str, FlowSizeCdf] = {
    # The numbers are those of DCTCP_CDF in datacenter/empirical-traffic-gen (Alizadeh et
    # al.'s own traffic generator), with the CDF's 0 moved from 0 to 4000 bytes after
    # DCTCP Fig. 4 and pFabric Fig. 4(a), as networkload does.
    "websearch": FlowSizeCdf(
        name="websearch",
        sizes=(4000, 10000, 20000, 30000, 50000, 80000, 200000, 1e6, 2e6, 5e6, 1e7, 3e7),
        cdf=(0.0, 0.15, 0.2, 0.3, 0.4, 0.53, 0.6, 0.7, 0.8, 0.9, 0.97, 1.0),
        source=(
            "Web-search flow sizes: Alizadeh et al., \"Data Center TCP (DCTCP)\", ACM SIGCOMM "
            "2010, Fig. 4 (as used by pFabric, SIGCOMM 2013, Fig. 4(a));",
            f"numbers from {_NETWORKLOAD}, CDF_PFABRIC_WEB_SEARCH_BYTE;",
            _NETWORKLOAD_LICENCE + ".",
        ),
    ),
    "datamining": FlowSizeCdf(
        name="datamining",
        sizes=(100, 180, 216, 560, 900, 1100, 1870, 3160, 10000, 400000, 3.16e6, 1e8, 1e9),
        cdf=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0),
        source=(
            "Data-mining flow sizes: Greenberg et al., \"VL2: A Scalable and Flexible Data "
            "Center Network\", ACM SIGCOMM 2009, Fig. 2 (as used by pFabric, Fig. 4(b));",
            f"numbers from {_NETWORKLOAD}, CDF_PFABRIC_DATA_MINING_BYTE;",
            _NETWORKLOAD_LICENCE + ".",
        ),
    ),
}


@dataclass(frozen=True, slots=True)
class TraceParams:
    cdf: str = "websearch"
    tunnels: int = 64
    heavy: int = 4
    light_gbps: tuple[float, float] = (0.1, 1.2)
    heavy_gbps: tuple[float, float] = (3.2, 6.0)
    flow_gbps: float = 1.0
    duration: float = 300.0
    step: float = 1.0
    warmup: float = 60.0
    seed: int = 0

    def argv(self) -> list[str]:
        """The command-line arguments that give these parameters (for the CSV header)."""
        return ["--cdf", self.cdf, "--tunnels", str(self.tunnels), "--heavy", str(self.heavy),
                "--light-gbps", _range_text(self.light_gbps),
                "--heavy-gbps", _range_text(self.heavy_gbps),
                "--flow-gbps", _num_text(self.flow_gbps), "--duration", _num_text(self.duration),
                "--step", _num_text(self.step), "--warmup", _num_text(self.warmup),
                "--seed", str(self.seed)]


def _num_text(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _range_text(r: tuple[float, float]) -> str:
    return f"{_num_text(r[0])}:{_num_text(r[1])}"


def tunnel_names(p: TraceParams) -> list[str]:
    light = p.tunnels - p.heavy
    hw, lw = len(str(max(p.heavy - 1, 0))), len(str(max(light - 1, 0)))
    return ([f"hub-{i:0{hw}d}" for i in range(p.heavy)]
            + [f"site-{i:0{lw}d}" for i in range(light)])


def mean_loads(p: TraceParams) -> F64:
    """Each tunnel's mean offered Gbps: heavy ones first."""
    rng = np.random.default_rng([p.seed, 0])
    heavy = rng.uniform(p.heavy_gbps[0], p.heavy_gbps[1], p.heavy)
    lo, hi = np.log(p.light_gbps[0]), np.log(p.light_gbps[1])
    light = np.exp(rng.uniform(lo, hi, p.tunnels - p.heavy))
    out: F64 = np.concatenate([heavy, light])
    return out


def tunnel_load(mean_gbps: float, cdf: FlowSizeCdf, p: TraceParams,
                rng: np.random.Generator) -> F64:
    """One tunnel's mean Gbps over each step, for t = 0, step, ..., duration."""
    n_out = int(round(p.duration / p.step)) + 1
    edges = (np.arange(n_out + 1, dtype=np.float64) - 0.5) * p.step
    span = p.warmup + edges[-1]
    rate = mean_gbps * 1e9 / (8.0 * cdf.mean_bytes())  # flows per second
    n = int(rng.poisson(rate * span))
    starts = np.sort(rng.uniform(-p.warmup, edges[-1], n))
    sizes = cdf.draw(rng, n)
    ends = np.sort(starts + sizes * 8.0 / (p.flow_gbps * 1e9))
    # Gbit sent by time e: flow_gbps * (sum over started flows of (e - start)
    #                                  - sum over finished flows of (e - end)).
    sent = p.flow_gbps * (_ramp_sum(starts, edges) - _ramp_sum(ends, edges))
    out: F64 = np.maximum(np.diff(sent) / p.step, 0.0)
    return out


def _ramp_sum(points: F64, at: F64) -> F64:
    """sum(max(0, e - x) for x in points) for every e in `at`; points sorted."""
    k = np.searchsorted(points, at, side="left")
    prefix = np.concatenate([[0.0], np.cumsum(points)])
    out: F64 = k * at - prefix[k]
    return out


def build(p: TraceParams) -> tuple[list[str], F64]:
    """Tunnel names and their loads, (steps, tunnels) Gbps."""
    if p.cdf not in CDFS:
        raise ValueError(f"unknown CDF {p.cdf!r} (known: {', '.join(CDFS)})")
    cdf = CDFS[p.cdf]
    means = mean_loads(p)
    cols = [tunnel_load(float(m), cdf, p, np.random.default_rng([p.seed, k + 1]))
            for k, m in enumerate(means)]
    return tunnel_names(p), np.stack(cols, axis=1)


def render(p: TraceParams, output_name: str | None = None) -> str:
    """The CSV text: comment header (source, model, regeneration command), then rows."""
    names, loads = build(p)
    cdf = CDFS[p.cdf]
    cmd = ["python", "-m", "wghybrid.sim.tracegen", *p.argv()]
    if output_name:
        cmd += ["-o", output_name]
    means = mean_loads(p)
    lines = [
        "# wghybrid trace (format: docs/sim-model.md, \"Traces\"): offered Gbps per tunnel.",
        "# Synthetic: built by wghybrid/sim/tracegen.py from a published flow-size "
        "distribution.",
        *(f"# {s}" for s in cdf.source),
        f"# {p.tunnels} tunnels ({p.heavy} heavy hub-*, mean {_range_text(p.heavy_gbps)} Gbps; "
        f"{p.tunnels - p.heavy} site-*, log-uniform mean {_range_text(p.light_gbps)} Gbps; "
        f"{means.sum():.1f} Gbps in all);",
        f"# Poisson flow arrivals, sizes from the CDF, each flow at {_num_text(p.flow_gbps)} "
        f"Gbps until sent; rows: mean over each {_num_text(p.step)} s step.",
        f"# Regenerate: {shlex.join(cmd)}",
        "t_s,tunnel,gbps",
    ]
    times = np.arange(loads.shape[0]) * p.step
    for i, t in enumerate(times):
        tt = _num_text(float(t))
        row = loads[i]
        lines.extend(f"{tt},{name},{row[k]:.4f}" for k, name in enumerate(names))
    return "\n".join(lines) + "\n"


def _range(text: str) -> tuple[float, float]:
    try:
        lo_text, hi_text = text.split(":")
        lo, hi = float(lo_text), float(hi_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO:HI") from None
    if not 0 < lo <= hi < 1000:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 < LO <= HI < 1000")
    return lo, hi


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def parse_args(argv: Sequence[str] | None = None) -> tuple[TraceParams, Path | None]:
    d = TraceParams()
    ap = argparse.ArgumentParser(prog="python -m wghybrid.sim.tracegen", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cdf", choices=sorted(CDFS), default=d.cdf,
                    help="flow-size distribution (default %(default)s)")
    ap.add_argument("--tunnels", type=int, default=d.tunnels, help="tunnels in all")
    ap.add_argument("--heavy", type=int, default=d.heavy, help="heavy tunnels among them")
    ap.add_argument("--light-gbps", type=_range, default=d.light_gbps, metavar="LO:HI")
    ap.add_argument("--heavy-gbps", type=_range, default=d.heavy_gbps, metavar="LO:HI")
    ap.add_argument("--flow-gbps", type=_positive, default=d.flow_gbps,
                    help="rate of every flow (default %(default)s)")
    ap.add_argument("--duration", type=_positive, default=d.duration, help="seconds")
    ap.add_argument("--step", type=_positive, default=d.step, help="seconds between rows")
    ap.add_argument("--warmup", type=float, default=d.warmup,
                    help="seconds of flows before t = 0 (default %(default)s)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("-o", "--output", type=Path, help="CSV file to write (default stdout)")
    a = ap.parse_args(argv)
    if not 1 <= a.tunnels <= 100_000 or not 0 <= a.heavy <= a.tunnels:
        ap.error("need 1 <= --tunnels <= 100000 and 0 <= --heavy <= --tunnels")
    if a.warmup < 0 or a.seed < 0:
        ap.error("--warmup and --seed must not be negative")
    if (a.duration / a.step + 1) * a.tunnels > 2_000_000:
        ap.error("more than 2,000,000 rows (the trace loader's limit)")
    p = TraceParams(cdf=a.cdf, tunnels=a.tunnels, heavy=a.heavy, light_gbps=a.light_gbps,
                    heavy_gbps=a.heavy_gbps, flow_gbps=a.flow_gbps, duration=a.duration,
                    step=a.step, warmup=a.warmup, seed=a.seed)
    return p, a.output


def main(argv: Sequence[str] | None = None) -> int:
    p, output = parse_args(argv)
    text = render(p, str(output) if output else None)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
