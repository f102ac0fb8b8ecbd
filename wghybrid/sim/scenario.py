"""Traffic scenarios: the offered load of every tunnel over time, read from TOML files.

A scenario is a set of tunnel groups; each group's offered load per tunnel is

    offered(t) = (max(0, level(t) * diurnal(t) * noise(t)) + burst(t)) * active(t)

where level(t) is the tunnel's base (`gbps`), or a piecewise-linear `ramp` from it, or an
`oscillation` between two levels; every random part is drawn once from the scenario's
seed, so a scenario is a deterministic function of time. Or a scenario is a recorded
trace: a CSV of `t_s,tunnel,gbps` rows, linearly interpolated per tunnel (`trace = ...`
in a TOML file, or the CSV loaded directly). The file formats are documented in
docs/sim-model.md and in the comment header of each shipped file
(wghybrid/sim/scenarios/*.toml; mixed.toml has the reference header).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from wghybrid.model import F64, Mode

_GROUP_KEYS = frozenset({
    "name", "count", "interface", "flows", "initial_mode", "gbps", "spread", "active", "stagger",
    "diurnal", "noise", "bursts", "ramp", "ramp_stagger", "oscillation",
})
_TOP_KEYS = frozenset({
    "name", "description", "cores", "duration", "seed", "interface", "threaded_napi",
    "packet_bytes", "mixed", "steady", "group", "trace", "stall",
})
_RAMP_KEYS = frozenset({"start", "end", "to"})
_OSC_KEYS = frozenset({"period", "low", "high", "shape", "duty", "phase", "phase_step",
                       "phase_spread"})
_TRACE_KEYS = frozenset({"file", "scale"})
_STALL_KEYS = frozenset({"tunnel", "at", "kind"})
STALL_KINDS = ("threaded-napi", "until-recreated")
"""A [[stall]]'s kinds: the threaded-NAPI stall (CVE-2026-52945), which ends when the
device's threaded NAPI is turned off, and one that only re-creating the peer ends."""

TRACE_MAX_BYTES = 64 * 1024 * 1024
"""A trace file larger than this is refused before it is read."""
TRACE_MAX_ROWS = 2_000_000
TRACE_MAX_TUNNELS = 100_000
TRACE_MAX_T = 10_000_000.0
"""Largest t_s accepted (about 115 days)."""
TRACE_COLUMNS = ("t_s", "tunnel", "gbps")


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names the file and the key (or,
    for a trace, the line)."""


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    interface: str
    public_key: bytes
    """32 raw bytes, derived from the scenario and tunnel names (sha256)."""
    name: str
    flows: int
    """TCP flows inside the tunnel. The decapsulating side sees one UDP flow per tunnel
    whatever this is, so the model's throughput does not depend on it (FACTS, Fig. 4)."""
    initial_mode: Mode


class _Source(Protocol):
    def offered(self, t: float) -> F64: ...


@dataclass(frozen=True, slots=True, eq=False)
class _Group:
    """One group's load generator, arrays over its tunnels."""

    base: F64
    """(n,): gbps x each tunnel's spread factor (the level without ramp or oscillation)."""
    windows: F64
    """(n, W, 2): [start, end) seconds when each tunnel sends."""
    diurnal_amplitude: float
    diurnal_period: float
    diurnal_phase: F64
    noise_sigma: float
    noise_tau: float
    noise_knots: F64
    """(n, K): standard normal draws at t = k * tau, linearly interpolated."""
    burst_starts: F64
    """(n, B): start times of bursts, +inf padded."""
    burst_length: float
    burst_gbps: float
    factor: F64 = field(default_factory=lambda: np.ones(0))
    """(n,): each tunnel's spread factor 1 + spread * u, u uniform in [-1, 1]."""
    ramp_x: F64 = field(default_factory=lambda: np.zeros(0))
    """(P,): ramp knots in seconds (empty: no ramp); level = factor * interp(t - shift)."""
    ramp_y: F64 = field(default_factory=lambda: np.zeros(0))
    ramp_shift: F64 = field(default_factory=lambda: np.zeros(0))
    """(n,): j * ramp_stagger."""
    osc_period: float = 0.0
    """0: no oscillation."""
    osc_low: float = 0.0
    osc_high: float = 0.0
    osc_square: bool = True
    osc_duty: float = 0.5
    osc_phase: F64 = field(default_factory=lambda: np.zeros(0))

    def level(self, t: float) -> F64:
        if self.ramp_x.size:
            return self.factor * np.interp(t - self.ramp_shift, self.ramp_x, self.ramp_y)
        if self.osc_period:
            x = np.mod(t / self.osc_period + self.osc_phase, 1.0)
            if self.osc_square:
                w = (x < self.osc_duty).astype(np.float64)
            else:
                w = 0.5 * (1.0 + np.sin(2.0 * math.pi * x))
            return self.factor * (self.osc_low + (self.osc_high - self.osc_low) * w)
        return self.base

    def offered(self, t: float) -> F64:
        active = ((self.windows[:, :, 0] <= t) & (t < self.windows[:, :, 1])).any(axis=1)
        level = self.level(t)
        if self.diurnal_amplitude:
            level = level * (1.0 + self.diurnal_amplitude * np.sin(
                2.0 * math.pi * (t / self.diurnal_period + self.diurnal_phase)))
        if self.noise_sigma:
            pos = t / self.noise_tau
            k = min(int(pos), self.noise_knots.shape[1] - 2)
            frac = min(pos - k, 1.0)
            z = self.noise_knots[:, k] * (1.0 - frac) + self.noise_knots[:, k + 1] * frac
            level = level * (1.0 + self.noise_sigma * z)
        level = np.maximum(level, 0.0)
        if self.burst_gbps and self.burst_starts.shape[1]:
            inside = ((self.burst_starts <= t) & (t < self.burst_starts + self.burst_length))
            level = level + self.burst_gbps * inside.any(axis=1)
        return np.where(active, level, 0.0)


@dataclass(frozen=True, slots=True, eq=False)
class Trace:
    """A recorded load: per tunnel, rows (t_s, gbps) linearly interpolated; before a
    tunnel's first row and after its last, the nearest row's value is held. Two rows of a
    tunnel at the same t_s make a step (the later row holds from t_s on)."""

    tunnels: tuple[str, ...]
    """Tunnel names, in order of first appearance in the file."""
    end: float
    """The largest t_s in the file."""
    rows: int
    """Data rows read."""
    _t: F64 = field(repr=False)
    """(R,): rows' t_s, grouped by tunnel, non-decreasing within a tunnel."""
    _v: F64 = field(repr=False)
    _key: F64 = field(repr=False)
    """(R,): k * width + t_s for tunnel k: sorted, so one searchsorted finds every tunnel's
    segment."""
    _kw: F64 = field(repr=False)
    """(n,): k * width."""
    _first: Any = field(repr=False)
    _last: Any = field(repr=False)
    scale: float = 1.0

    def offered(self, t: float) -> F64:
        j = np.searchsorted(self._key, self._kw + t, side="right") - 1
        j = np.clip(j, self._first, self._last)
        nxt = np.minimum(j + 1, self._last)
        t0, t1 = self._t[j], self._t[nxt]
        dt = t1 - t0
        frac = np.clip((t - t0) / np.where(dt > 0, dt, 1.0), 0.0, 1.0)
        frac = np.where(dt > 0, frac, 0.0)
        v0 = self._v[j]
        out: F64 = (v0 + (self._v[nxt] - v0) * frac) * self.scale
        return out

    def scaled(self, scale: float) -> Trace:
        return Trace(self.tunnels, self.end, self.rows, self._t, self._v, self._key, self._kw,
                     self._first, self._last, scale)


@dataclass(frozen=True, slots=True)
class StallSpec:
    """`[[stall]]`: tunnel `index` (of `Scenario.tunnels`) stalls at `at` seconds: every
    datagram it is sent is dropped, it accepts none, until the daemon's recovery ends it
    (docs/install.md, "Stalled peers")."""

    index: int
    at: float
    napi: bool
    """The threaded-NAPI kind: turning the device's threaded NAPI off ends it."""


@dataclass(frozen=True, slots=True, eq=False)
class Scenario:
    name: str
    description: str
    cores: int
    duration: float
    tunnels: tuple[TunnelSpec, ...]
    seed: int = 0
    threaded_napi: bool = True
    """Initial /sys/class/net/DEV/threaded (upstream's default since 2025)."""
    packet_bytes: int = 1420
    """Average packet size, to turn bytes into packet counters."""
    mixed: bool = False
    """Declared by the scenario's author: elephants and mice together, so that neither
    static mode fits (bench/hybrid.py holds such scenarios to a higher target)."""
    steady: bool = False
    """Declared by the scenario's author: the load is steady but for noise, so a controller
    should change no mode and move almost no core once it has settled."""
    source: str = "<built-in>"
    stalls: tuple[StallSpec, ...] = ()
    """Tunnels whose decryption stalls during the run (`[[stall]]`)."""
    trace: str | None = None
    """The trace file a trace-backed scenario replays (as its source names it), else None."""
    _groups: tuple[_Source, ...] = field(default=(), repr=False)

    @property
    def interfaces(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for t in self.tunnels:
            seen.setdefault(t.interface, None)
        return tuple(seen)

    def offered(self, t: float) -> F64:
        """Offered Gbps of every tunnel at time t (clamped to [0, duration])."""
        t = min(max(float(t), 0.0), self.duration)
        if not self._groups:
            return np.zeros(len(self.tunnels))
        return np.concatenate([g.offered(t) for g in self._groups])


# ---------------------------------------------------------------------------
# Loading

_Dir = Path | Traversable


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package: one per TOML file (a shipped trace
    is listed through the TOML file that refers to it, not as its CSV)."""
    folder = resources.files("wghybrid.sim") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name ("mixed"), or a scenario file by path: a TOML file, or a
    trace CSV (`.csv`: 32 cores, duration = its last t_s, name = the file's stem)."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix == ".csv":
        trace = _read_trace(path, str(path))
        return _trace_scenario(trace, name=path.stem, description=f"trace {path.name}",
                               source=str(path), trace_name=str(path))
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
        return parse_scenario(text, source=str(path), base=path.parent)
    folder = resources.files("wghybrid.sim") / "scenarios"
    resource = folder / f"{text_name}.toml"
    if not resource.is_file():
        known = ", ".join(list_scenarios())
        raise ScenarioError(f"no scenario named {text_name!r} (known: {known})")
    return parse_scenario(resource.read_text(), source=f"{text_name}.toml", base=folder)


def parse_scenario(text: str, *, source: str = "<string>", base: _Dir | None = None) -> Scenario:
    """A scenario from TOML text. `base` is the folder a relative `trace` path is read
    from (default: the current directory)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    scenario = _build(doc, source, base)
    if "stall" in doc:
        scenario = dataclasses.replace(scenario, stalls=_stalls(doc["stall"], scenario))
    return scenario


def _stalls(value: Any, sc: Scenario) -> tuple[StallSpec, ...]:
    """`[[stall]]` tables: {tunnel = "<name>", at = <s>, kind = "threaded-napi" |
    "until-recreated"}, at most one per tunnel."""
    source = sc.source
    if not isinstance(value, list):
        raise _fail(source, "stall", "expected an array of tables ([[stall]])")
    if len(value) > len(sc.tunnels):
        raise _fail(source, "stall", f"{len(value)} stalls for {len(sc.tunnels)} tunnels: "
                    "at most one per tunnel")
    index = {t.name: i for i, t in enumerate(sc.tunnels)}
    out: list[StallSpec] = []
    seen: set[int] = set()
    for k, d in enumerate(value):
        where = f"stall[{k}]."
        _check_table(d, set(_STALL_KEYS), source, f"stall[{k}]")
        name = _get(d, "tunnel", str, source, where)
        if name not in index:
            raise _fail(source, f"{where}tunnel", f"no tunnel named {name[:64]!r}")
        if index[name] in seen:
            raise _fail(source, f"{where}tunnel", f"{name!r} stalls twice")
        seen.add(index[name])
        at = _num(d, "at", source, where, lo=0.0, hi=sc.duration)
        kind = _get(d, "kind", str, source, where, STALL_KINDS[0])
        if kind not in STALL_KINDS:
            raise _fail(source, f"{where}kind", f"{kind[:64]!r} is not "
                        + " or ".join(STALL_KINDS))
        out.append(StallSpec(index[name], at, kind == STALL_KINDS[0]))
    return tuple(out)


def _fail(source: str, key: str, reason: str) -> ScenarioError:
    return ScenarioError(f"{source}: {key}: {reason}")


_REQUIRED = object()


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str,
         where: str, default: Any = _REQUIRED, *, lo: float | None = None,
         hi: float | None = None) -> Any:
    full = f"{where}{key}"
    if key not in doc:
        if default is _REQUIRED or default is None:
            raise _fail(source, full, "missing")
        return default
    value = doc[key]
    if isinstance(value, bool) and kind is not bool:
        raise _fail(source, full, f"expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise _fail(source, full, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    number = float(value) if isinstance(value, int | float) else 0.0
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(source, full, f"{value} is not a finite number")
    if lo is not None and number < lo:
        raise _fail(source, full, f"{value} is below the minimum {lo}")
    if hi is not None and number > hi:
        raise _fail(source, full, f"{value} is above the maximum {hi}")
    return value


def _num(doc: dict[str, Any], key: str, source: str, where: str, default: Any = _REQUIRED,
         *, lo: float | None = None, hi: float | None = None) -> float:
    return float(_get(doc, key, (int, float), source, where, default, lo=lo, hi=hi))


def _device_name(doc: dict[str, Any], source: str, where: str, default: str) -> str:
    name: str = _get(doc, "interface", str, source, where, default)
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise _fail(source, f"{where}interface", f"{name!r} is not a network device name")
    return name


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _table(doc: dict[str, Any], key: str, allowed: Collection[str],
           source: str, where: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    return _check_table(value, set(allowed), source, f"{where}{key}")


def _check_table(value: Any, allowed: set[str], source: str, full: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, full, "expected a table")
    unknown = set(value) - allowed
    if unknown:
        raise _fail(source, f"{full}.{sorted(unknown)[0]}", "unknown key")
    return value


def _build(doc: dict[str, Any], source: str, base: _Dir | None) -> Scenario:
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise _fail(source, sorted(unknown)[0], "unknown key")
    name = _get(doc, "name", str, source, "")
    description = _get(doc, "description", str, source, "", "")
    cores = _get(doc, "cores", int, source, "", 32, lo=1, hi=4096)
    seed = _get(doc, "seed", int, source, "", 0, lo=0)
    iface = _device_name(doc, source, "", "wg0")
    threaded = _get(doc, "threaded_napi", bool, source, "", True)
    packet_bytes = _get(doc, "packet_bytes", int, source, "", 1420, lo=64, hi=65535)
    mixed = _get(doc, "mixed", bool, source, "", False)
    steady = _get(doc, "steady", bool, source, "", False)
    common = {"name": name, "description": description, "cores": cores, "seed": seed,
              "threaded_napi": threaded, "packet_bytes": packet_bytes, "mixed": mixed,
              "steady": steady, "source": source}
    if "trace" in doc:
        return _build_trace(doc, source, base, iface, common)
    duration = _num(doc, "duration", source, "", lo=1.0)
    groups_doc = doc.get("group")
    if not isinstance(groups_doc, list) or not groups_doc:
        raise _fail(source, "group", "at least one [[group]] (or a trace) is required")
    tunnels: list[TunnelSpec] = []
    groups: list[_Source] = []
    names: set[str] = set()
    for gi, g in enumerate(groups_doc):
        where = f"group[{gi}]."
        if not isinstance(g, dict):
            raise _fail(source, f"group[{gi}]", "expected a table")
        bad = set(g) - _GROUP_KEYS
        if bad:
            raise _fail(source, f"{where}{sorted(bad)[0]}", "unknown key")
        gname = _get(g, "name", str, source, where)
        if gname in names:
            raise _fail(source, f"{where}name", f"duplicate group name {gname!r}")
        names.add(gname)
        count = _get(g, "count", int, source, where, lo=1, hi=1_000_000)
        flows = _get(g, "flows", int, source, where, 1, lo=1)
        g_iface = _device_name(g, source, where, iface)
        mode = _mode(g, source, where)
        rng = np.random.default_rng([seed, gi])
        groups.append(_group(g, count, duration, rng, source, where))
        width = len(str(count - 1))
        for j in range(count):
            tname = f"{gname}-{j:0{width}d}"
            key = _key(f"{name}/{tname}")
            tunnels.append(TunnelSpec(g_iface, key, tname, flows, mode))
    return Scenario(duration=duration, tunnels=tuple(tunnels), _groups=tuple(groups), **common)


def _mode(g: dict[str, Any], source: str, where: str) -> Mode:
    mode_text = _get(g, "initial_mode", str, source, where, "vanilla")
    try:
        return Mode[mode_text.upper()]
    except KeyError:
        raise _fail(source, f"{where}initial_mode",
                    f"{mode_text!r} is not vanilla or inline") from None


def _key(label: str) -> bytes:
    """A deterministic 32-byte public key for a tunnel. Never ends in a NUL byte: numpy's
    "S32" arrays (PeerTable.key) strip trailing NULs when an element is read back, and
    while every consumer must pad (`bytes(k).ljust(32, b"\\0")`), the simulated peers
    should not depend on it. (Real keys end in 0x00 one time in 256; see
    tests/unit/test_sim_backend.py for the sim's own handling.)"""
    digest = hashlib.sha256(label.encode()).digest()
    while digest[-1] == 0:
        digest = hashlib.sha256(digest).digest()
    return digest


def _group(g: dict[str, Any], n: int, duration: float, rng: np.random.Generator,
           source: str, where: str) -> _Group:
    osc_doc = _table(g, "oscillation", _OSC_KEYS, source, where)
    if osc_doc is not None:
        for clash in ("gbps", "ramp"):
            if clash in g:
                raise _fail(source, f"{where}{clash}",
                            "not with oscillation (its low and high are the levels)")
        gbps = 0.0
    else:
        gbps = _num(g, "gbps", source, where, lo=0.0)
    spread = _num(g, "spread", source, where, 0.0, lo=0.0, hi=1.0)
    # Draw order matters: every file written before ramps and oscillations existed must
    # keep its traffic, so new draws come after the old ones.
    factor = 1.0 + spread * rng.uniform(-1.0, 1.0, n)
    base = gbps * factor

    active = g.get("active", [[0.0, math.inf]])
    if (not isinstance(active, list) or not active or not all(
            isinstance(w, list) and len(w) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in w)
            and w[0] < w[1] for w in active)):
        raise _fail(source, f"{where}active", "expected a list of [start, end] seconds")
    stagger = _num(g, "stagger", source, where, 0.0, lo=0.0)
    win = np.asarray(active, dtype=np.float64)[None, :, :] \
        + (stagger * np.arange(n))[:, None, None]

    amp, period = 0.0, 1.0
    phase = np.zeros(n)
    d = _table(g, "diurnal", {"period", "amplitude", "phase", "phase_spread"}, source, where)
    if d is not None:
        w = f"{where}diurnal."
        period = _num(d, "period", source, w, lo=1.0)
        amp = _num(d, "amplitude", source, w, lo=0.0, hi=1.0)
        ph = _num(d, "phase", source, w, 0.0)
        ph_spread = _num(d, "phase_spread", source, w, 0.0, lo=0.0)
        phase = ph + ph_spread * rng.uniform(0.0, 1.0, n)

    sigma, tau = 0.0, 1.0
    knots = np.zeros((n, 2))
    nz = _table(g, "noise", {"sigma", "tau"}, source, where)
    if nz is not None:
        w = f"{where}noise."
        sigma = _num(nz, "sigma", source, w, lo=0.0, hi=2.0)
        tau = _num(nz, "tau", source, w, lo=0.1)
        knots = rng.standard_normal((n, int(math.ceil(duration / tau)) + 2))

    length, bgbps = 0.0, 0.0
    starts = np.zeros((n, 0))
    b = _table(g, "bursts", {"every", "length", "gbps"}, source, where)
    if b is not None:
        w = f"{where}bursts."
        every = _num(b, "every", source, w, lo=0.1)
        length = _num(b, "length", source, w, lo=0.0)
        bgbps = _num(b, "gbps", source, w, lo=0.0)
        # A Poisson process of burst starts per tunnel, drawn up to the scenario's end.
        m = int(duration / every * 2 + 10)
        starts = np.cumsum(rng.exponential(every, (n, m)), axis=1)
        starts = np.where(starts < duration, starts, np.inf)

    ramp_x, ramp_y = _ramp(g, gbps, source, where)
    ramp_stagger = _num(g, "ramp_stagger", source, where, 0.0, lo=0.0)
    if ramp_stagger and not ramp_x.size:
        raise _fail(source, f"{where}ramp_stagger", "needs a ramp")

    osc: dict[str, Any] = {}
    if osc_doc is not None:
        osc = _oscillation(osc_doc, n, rng, source, f"{where}oscillation.")

    return _Group(base=base, windows=win, diurnal_amplitude=amp, diurnal_period=period,
                  diurnal_phase=phase, noise_sigma=sigma, noise_tau=tau, noise_knots=knots,
                  burst_starts=starts, burst_length=length, burst_gbps=bgbps,
                  factor=factor, ramp_x=ramp_x, ramp_y=ramp_y,
                  ramp_shift=ramp_stagger * np.arange(n, dtype=np.float64), **osc)


def _ramp(g: dict[str, Any], gbps: float, source: str, where: str) -> tuple[F64, F64]:
    """Knots of the level in Gbps (before the spread factor): gbps until the first ramp's
    start, then linear to its `to` at its end, held until the next ramp's start, ..."""
    doc = g.get("ramp")
    if doc is None:
        return np.zeros(0), np.zeros(0)
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise _fail(source, f"{where}ramp", "expected a table or a non-empty list of tables")
    xs: list[float] = []
    ys: list[float] = []
    level, prev_end = gbps, -math.inf
    for i, item in enumerate(items):
        full = f"{where}ramp" if not isinstance(doc, list) else f"{where}ramp[{i}]"
        r = _check_table(item, set(_RAMP_KEYS), source, full)
        w = f"{full}."
        start = _num(r, "start", source, w, lo=0.0)
        end = _num(r, "end", source, w, lo=0.0)
        to = _num(r, "to", source, w, lo=0.0)
        if end <= start:
            raise _fail(source, f"{w}end", f"{end:g} is not after start {start:g}")
        if start < prev_end:
            raise _fail(source, f"{w}start",
                        f"{start:g} is before the previous ramp's end {prev_end:g}")
        xs += [start, end]
        ys += [level, to]
        level, prev_end = to, end
    return np.asarray(xs), np.asarray(ys)


def _oscillation(o: dict[str, Any], n: int, rng: np.random.Generator, source: str,
                 w: str) -> dict[str, Any]:
    period = _num(o, "period", source, w, lo=1.0)
    low = _num(o, "low", source, w, lo=0.0)
    high = _num(o, "high", source, w, lo=0.0)
    if high < low:
        raise _fail(source, f"{w}high", f"{high:g} is below low {low:g}")
    shape = _get(o, "shape", str, source, w, "square")
    if shape not in ("square", "sine"):
        raise _fail(source, f"{w}shape", f"{shape!r} is not square or sine")
    duty = _num(o, "duty", source, w, 0.5, lo=0.0, hi=1.0)
    if "duty" in o and shape != "square":
        raise _fail(source, f"{w}duty", "only for shape = \"square\"")
    if not 0.0 < duty < 1.0:
        raise _fail(source, f"{w}duty", f"{duty:g} is not strictly between 0 and 1")
    phase = _num(o, "phase", source, w, 0.0)
    step = _num(o, "phase_step", source, w, 0.0)
    spread = _num(o, "phase_spread", source, w, 0.0, lo=0.0)
    phases = phase + step * np.arange(n, dtype=np.float64)
    if spread:
        phases = phases + spread * rng.uniform(0.0, 1.0, n)
    return {"osc_period": period, "osc_low": low, "osc_high": high,
            "osc_square": shape == "square", "osc_duty": duty, "osc_phase": phases}


# ---------------------------------------------------------------------------
# Traces


def _build_trace(doc: dict[str, Any], source: str, base: _Dir | None, iface: str,
                 common: dict[str, Any]) -> Scenario:
    if "group" in doc:
        raise _fail(source, "group", "not with trace (a scenario is groups or a trace)")
    spec = doc["trace"]
    scale = 1.0
    if isinstance(spec, dict):
        t = _check_table(spec, set(_TRACE_KEYS), source, "trace")
        file = _get(t, "file", str, source, "trace.")
        scale = _num(t, "scale", source, "trace.", 1.0, lo=0.0, hi=1000.0)
    elif isinstance(spec, str):
        file = spec
    else:
        raise _fail(source, "trace", "expected a file name or a table {file, scale}")
    if not file or not file.endswith(".csv"):
        raise _fail(source, "trace", f"{file!r} is not a .csv file name")
    where: _Dir = (Path(file) if Path(file).is_absolute() or base is None
                   else base.joinpath(file))
    if not where.is_file():
        raise _fail(source, "trace", f"{where}: no such file")
    trace = _read_trace(where, str(where) if isinstance(where, Path) else file)
    if scale != 1.0:
        trace = trace.scaled(scale)
    duration = _num(doc, "duration", source, "", max(trace.end, 1.0), lo=1.0)
    return _trace_scenario(trace, interface=iface, duration=duration, trace_name=file,
                           **common)


def _trace_scenario(trace: Trace, *, name: str, trace_name: str, interface: str = "wg0",
                    duration: float | None = None, **kw: Any) -> Scenario:
    tunnels = tuple(TunnelSpec(interface, _key(f"{name}/{t}"), t, 1, Mode.VANILLA)
                    for t in trace.tunnels)
    if duration is None:
        duration = max(trace.end, 1.0)
    kw.setdefault("cores", 32)
    kw.setdefault("description", "")
    kw.setdefault("source", trace_name)
    return Scenario(name=name, duration=duration, tunnels=tunnels, trace=trace_name,
                    _groups=(trace,), **kw)


def _read_trace(where: _Dir, label: str) -> Trace:
    try:
        if isinstance(where, Path):
            size = where.stat().st_size
            if size > TRACE_MAX_BYTES:
                raise ScenarioError(f"{label}: {size} bytes, more than the limit of "
                                    f"{TRACE_MAX_BYTES} ({TRACE_MAX_BYTES >> 20} MiB)")
        data = where.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{label}: cannot read: {exc.strerror or exc}") from None
    return parse_trace(data, source=label)


def parse_trace(data: bytes | str, *, source: str = "<trace>") -> Trace:
    """A trace from CSV text: an optional comment block (lines starting with `#`; blank
    lines are skipped too), a header naming the columns t_s, tunnel and gbps (in any order),
    then one row per tunnel per time. Every error names the source, the line and the
    problem (`ScenarioError`)."""
    if len(data) > TRACE_MAX_BYTES:
        raise ScenarioError(f"{source}: {len(data)} bytes, more than the limit of "
                            f"{TRACE_MAX_BYTES} ({TRACE_MAX_BYTES >> 20} MiB)")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScenarioError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    else:
        text = data

    def fail(line: int, what: str) -> ScenarioError:
        return ScenarioError(f"{source}: line {line}: {what}")

    index: dict[str, int] = {}
    ts: list[list[float]] = []
    vs: list[list[float]] = []
    last_line: list[int] = []
    col: tuple[int, int, int] | None = None
    ncols = 0
    rows = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if col is None:
            names = [f.lower() for f in fields]
            for f in names:
                if f not in TRACE_COLUMNS:
                    raise fail(lineno, f"header: unknown column {f!r} (the columns are "
                                       f"{', '.join(TRACE_COLUMNS)})")
            for c in TRACE_COLUMNS:
                if names.count(c) != 1:
                    raise fail(lineno, f"header: column {c!r} "
                                       + ("missing" if c not in names else "repeated"))
            col = (names.index("t_s"), names.index("tunnel"), names.index("gbps"))
            ncols = len(names)
            continue
        if len(fields) != ncols:
            raise fail(lineno, f"expected {ncols} fields, got {len(fields)}")
        rows += 1
        if rows > TRACE_MAX_ROWS:
            raise fail(lineno, f"more than {TRACE_MAX_ROWS} rows")
        t_text, name, g_text = fields[col[0]], fields[col[1]], fields[col[2]]
        if not name:
            raise fail(lineno, "tunnel: missing value")
        if '"' in name or len(name) > 128 or not name.isprintable():
            raise fail(lineno, f"tunnel: {name[:40]!r} is not a tunnel name (printable, "
                               "at most 128 characters, no quotes)")
        t = _cell(t_text, "t_s", lineno, fail)
        g = _cell(g_text, "gbps", lineno, fail)
        if t > TRACE_MAX_T:
            raise fail(lineno, f"t_s: {t_text} is above the maximum {TRACE_MAX_T:g}")
        k = index.get(name)
        if k is None:
            if len(index) >= TRACE_MAX_TUNNELS:
                raise fail(lineno, f"tunnel: {name!r} is one more than the limit of "
                                   f"{TRACE_MAX_TUNNELS} tunnels")
            k = index[name] = len(index)
            ts.append([])
            vs.append([])
            last_line.append(0)
        elif t < ts[k][-1]:
            raise fail(lineno, f"t_s: {t_text} is before {ts[k][-1]:g}, tunnel {name!r}'s "
                               f"previous time (line {last_line[k]}); t_s must not decrease "
                               "within a tunnel")
        ts[k].append(t)
        vs[k].append(g)
        last_line[k] = lineno
    if col is None:
        raise ScenarioError(f"{source}: no header line (expected {','.join(TRACE_COLUMNS)})")
    if not index:
        raise ScenarioError(f"{source}: no data rows after the header")
    return _trace_arrays(tuple(index), ts, vs, rows)


def _cell(text: str, column: str, line: int, fail: Any) -> float:
    if not text:
        raise fail(line, f"{column}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise fail(line, f"{column}: {text[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise fail(line, f"{column}: {text} is not a finite number")
    if value < 0:
        raise fail(line, f"{column}: {text} is negative")
    return value


def _trace_arrays(names: tuple[str, ...], ts: list[list[float]], vs: list[list[float]],
                  rows: int) -> Trace:
    t_parts: list[F64] = []
    v_parts: list[F64] = []
    for t_list, v_list in zip(ts, vs, strict=True):
        t = np.asarray(t_list, dtype=np.float64)
        v = np.asarray(v_list, dtype=np.float64)
        if t.size > 2:
            # Of several rows at one time keep the first (the left limit) and the last.
            same_prev = np.r_[False, t[1:] == t[:-1]]
            same_next = np.r_[t[:-1] == t[1:], False]
            keep = ~(same_prev & same_next)
            t, v = t[keep], v[keep]
        t_parts.append(t)
        v_parts.append(v)
    counts = np.array([p.size for p in t_parts])
    last = np.cumsum(counts) - 1
    first = last - counts + 1
    t_all = np.concatenate(t_parts)
    end = float(t_all.max())
    width = 2.0 ** math.ceil(math.log2(end + 2.0))
    kw = width * np.arange(len(names), dtype=np.float64)
    key = np.repeat(kw, counts) + t_all
    return Trace(tunnels=names, end=end, rows=rows, _t=t_all, _v=np.concatenate(v_parts),
                 _key=key, _kw=kw, _first=first, _last=last)
