"""Traffic scenarios: the offered load of every tunnel over time, read from TOML files.

A scenario is a set of tunnel groups; each group's offered load per tunnel is

    offered(t) = (max(0, base * diurnal(t) * noise(t)) + burst(t)) * active(t)

with every random part drawn once from the scenario's seed, so a scenario is a
deterministic function of time. The file format is documented in docs/sim-model.md and in
the comment header of each shipped file (wghybrid/sim/scenarios/*.toml).
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from wghybrid.model import F64, Mode

_GROUP_KEYS = frozenset({
    "name", "count", "interface", "flows", "initial_mode", "gbps", "spread", "active", "stagger",
    "diurnal", "noise", "bursts",
})
_TOP_KEYS = frozenset({
    "name", "description", "cores", "duration", "seed", "interface", "threaded_napi",
    "packet_bytes", "mixed", "steady", "group",
})


class ScenarioError(ValueError):
    """A scenario file that cannot be loaded; the message names the file and the key."""


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


@dataclass(frozen=True, slots=True, eq=False)
class _Group:
    """One group's load generator, arrays over its tunnels."""

    base: F64
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

    def offered(self, t: float) -> F64:
        active = ((self.windows[:, :, 0] <= t) & (t < self.windows[:, :, 1])).any(axis=1)
        level = self.base
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
    _groups: tuple[_Group, ...] = field(default=(), repr=False)

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


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped with the package."""
    folder = resources.files("wghybrid.sim") / "scenarios"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name ("mixed"), or a scenario file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix == ".toml" or path.exists():
        try:
            text = path.read_text()
        except OSError as exc:
            raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
        return parse_scenario(text, source=str(path))
    resource = resources.files("wghybrid.sim") / "scenarios" / f"{text_name}.toml"
    if not resource.is_file():
        known = ", ".join(list_scenarios())
        raise ScenarioError(f"no scenario named {text_name!r} (known: {known})")
    return parse_scenario(resource.read_text(), source=f"{text_name}.toml")


def parse_scenario(text: str, *, source: str = "<string>") -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    return _build(doc, source)


def _fail(source: str, key: str, reason: str) -> ScenarioError:
    return ScenarioError(f"{source}: {key}: {reason}")


def _get(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], source: str,
         where: str, default: Any = None, *, lo: float | None = None,
         hi: float | None = None) -> Any:
    full = f"{where}{key}"
    if key not in doc:
        if default is None:
            raise _fail(source, full, "missing")
        return default
    value = doc[key]
    if isinstance(value, bool) and kind is not bool:
        raise _fail(source, full, f"expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise _fail(source, full, f"expected {_kind_name(kind)}, got {type(value).__name__}")
    number = float(value) if isinstance(value, int | float) else 0.0
    if lo is not None and number < lo:
        raise _fail(source, full, f"{value} is below the minimum {lo}")
    if hi is not None and number > hi:
        raise _fail(source, full, f"{value} is above the maximum {hi}")
    return value


def _device_name(doc: dict[str, Any], source: str, where: str, default: str) -> str:
    name: str = _get(doc, "interface", str, source, where, default)
    if not name or len(name) > 15 or "/" in name or any(c.isspace() for c in name):
        raise _fail(source, f"{where}interface", f"{name!r} is not a network device name")
    return name


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _table(doc: dict[str, Any], key: str, allowed: set[str], source: str,
           where: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(source, f"{where}{key}", "expected a table")
    unknown = set(value) - allowed
    if unknown:
        raise _fail(source, f"{where}{key}.{sorted(unknown)[0]}", "unknown key")
    return value


def _build(doc: dict[str, Any], source: str) -> Scenario:
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise _fail(source, sorted(unknown)[0], "unknown key")
    name = _get(doc, "name", str, source, "")
    description = _get(doc, "description", str, source, "", "")
    cores = _get(doc, "cores", int, source, "", 32, lo=1, hi=4096)
    duration = float(_get(doc, "duration", (int, float), source, "", lo=1.0))
    seed = _get(doc, "seed", int, source, "", 0, lo=0)
    iface = _device_name(doc, source, "", "wg0")
    threaded = _get(doc, "threaded_napi", bool, source, "", True)
    packet_bytes = _get(doc, "packet_bytes", int, source, "", 1420, lo=64, hi=65535)
    mixed = _get(doc, "mixed", bool, source, "", False)
    steady = _get(doc, "steady", bool, source, "", False)
    groups_doc = doc.get("group")
    if not isinstance(groups_doc, list) or not groups_doc:
        raise _fail(source, "group", "at least one [[group]] is required")
    tunnels: list[TunnelSpec] = []
    groups: list[_Group] = []
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
        mode_text = _get(g, "initial_mode", str, source, where, "vanilla")
        try:
            mode = Mode[mode_text.upper()]
        except KeyError:
            raise _fail(source, f"{where}initial_mode",
                        f"{mode_text!r} is not vanilla or inline") from None
        rng = np.random.default_rng([seed, gi])
        groups.append(_group(g, count, duration, rng, source, where))
        width = len(str(count - 1))
        for j in range(count):
            tname = f"{gname}-{j:0{width}d}"
            key = _key(f"{name}/{tname}")
            tunnels.append(TunnelSpec(g_iface, key, tname, flows, mode))
    return Scenario(name=name, description=description, cores=cores, duration=duration,
                    tunnels=tuple(tunnels), seed=seed, threaded_napi=threaded,
                    packet_bytes=packet_bytes, mixed=mixed, steady=steady, source=source,
                    _groups=tuple(groups))


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
    gbps = float(_get(g, "gbps", (int, float), source, where, lo=0.0))
    spread = float(_get(g, "spread", (int, float), source, where, 0.0, lo=0.0, hi=1.0))
    base = gbps * (1.0 + spread * rng.uniform(-1.0, 1.0, n))

    active = g.get("active", [[0.0, math.inf]])
    if (not isinstance(active, list) or not active or not all(
            isinstance(w, list) and len(w) == 2
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in w)
            and w[0] < w[1] for w in active)):
        raise _fail(source, f"{where}active", "expected a list of [start, end] seconds")
    stagger = float(_get(g, "stagger", (int, float), source, where, 0.0, lo=0.0))
    win = np.asarray(active, dtype=np.float64)[None, :, :] \
        + (stagger * np.arange(n))[:, None, None]

    amp, period = 0.0, 1.0
    phase = np.zeros(n)
    d = _table(g, "diurnal", {"period", "amplitude", "phase", "phase_spread"}, source, where)
    if d is not None:
        w = f"{where}diurnal."
        period = float(_get(d, "period", (int, float), source, w, lo=1.0))
        amp = float(_get(d, "amplitude", (int, float), source, w, lo=0.0, hi=1.0))
        ph = float(_get(d, "phase", (int, float), source, w, 0.0))
        ph_spread = float(_get(d, "phase_spread", (int, float), source, w, 0.0, lo=0.0))
        phase = ph + ph_spread * rng.uniform(0.0, 1.0, n)

    sigma, tau = 0.0, 1.0
    knots = np.zeros((n, 2))
    nz = _table(g, "noise", {"sigma", "tau"}, source, where)
    if nz is not None:
        w = f"{where}noise."
        sigma = float(_get(nz, "sigma", (int, float), source, w, lo=0.0, hi=2.0))
        tau = float(_get(nz, "tau", (int, float), source, w, lo=0.1))
        knots = rng.standard_normal((n, int(math.ceil(duration / tau)) + 2))

    length, bgbps = 0.0, 0.0
    starts = np.zeros((n, 0))
    b = _table(g, "bursts", {"every", "length", "gbps"}, source, where)
    if b is not None:
        w = f"{where}bursts."
        every = float(_get(b, "every", (int, float), source, w, lo=0.1))
        length = float(_get(b, "length", (int, float), source, w, lo=0.0))
        bgbps = float(_get(b, "gbps", (int, float), source, w, lo=0.0))
        # A Poisson process of burst starts per tunnel, drawn up to the scenario's end.
        m = int(duration / every * 2 + 10)
        starts = np.cumsum(rng.exponential(every, (n, m)), axis=1)
        starts = np.where(starts < duration, starts, np.inf)

    return _Group(base=base, windows=win, diurnal_amplitude=amp, diurnal_period=period,
                  diurnal_phase=phase, noise_sigma=sigma, noise_tau=tau, noise_knots=knots,
                  burst_starts=starts, burst_length=length, burst_gbps=bgbps)
