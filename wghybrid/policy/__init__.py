"""Policy: what the controller obeys (the dataclasses the pure core reads).

`wghybrid.policy.load` turns a TOML file into a `Policy` (validated whole, one
`PolicyError` naming the file, the key and the reason); this module holds the contract
only, so that the pure core (wghybrid/core/) imports no file handling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class NapiPolicy(StrEnum):
    AUTO = "auto"
    """Threaded NAPI on a device while it has vanilla peers (the paper's black-hole fix)."""
    ON = "on"
    OFF = "off"


@dataclass(frozen=True, slots=True)
class Classify:
    promote_gbps: float = 2.0
    """A tunnel's smoothed rate (rx+tx) above which it is an elephant candidate."""
    demote_gbps: float = 1.0
    """A vanilla tunnel's smoothed rate below which it is a mouse candidate (< promote)."""
    inline_saturation: float = 0.85
    """Fraction of one core an inline tunnel may use before it counts as saturated:
    its rate is capped by that core, so saturation means it wants more."""
    min_dwell: float = 30.0
    """Seconds a tunnel stays in a mode before it may change again."""
    latent_heat: float = 5.0
    """Seconds of sustained excess (time over the threshold, weighted by how far over,
    relative to the threshold) a tunnel must accumulate before it changes class."""


@dataclass(frozen=True, slots=True)
class Placement:
    max_moves: int = 8
    """Operations on peers (mode or core changes) per tick, at most."""
    migrate_improvement: float = 0.10
    """A core move must cut the load imbalance between the two cores by this fraction."""
    vanilla_pool_min: int = 2
    """Smallest crypt-worker pool while any tunnel is vanilla."""
    pool_headroom: float = 0.25
    """The pool grows when its demand exceeds (1-headroom)*size, shrinks when demand
    would fit in a pool one core smaller with twice the headroom."""
    core_capacity: float = 0.9
    """Fraction of a core the planner fills with inline tunnels before it spills."""
    threaded_napi: NapiPolicy = NapiPolicy.AUTO


@dataclass(frozen=True, slots=True)
class Policy:
    name: str = "default"
    description: str = ""
    interval: float = 1.0
    """Seconds between samples (ticks)."""
    smoothing: float = 3.0
    """Half-life of the rate EWMA, seconds."""
    cores: frozenset[int] | None = None
    """Managed cores; None = every online core."""
    interfaces: frozenset[str] | None = None
    """Managed interfaces; None = every WireGuard interface."""
    restore_on_stop: bool = False
    """On stop, put back the modes found at start (default: fail-static, keep modes)."""
    classify: Classify = field(default_factory=Classify)
    placement: Placement = field(default_factory=Placement)
    names: dict[bytes, str] = field(default_factory=dict)
    """Friendly peer names, by raw public key."""
    source: str = "<built-in>"
    """The file it was loaded from."""
