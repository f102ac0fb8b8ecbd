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
    """Estimated demand (Gbps, rx+tx) above which a tunnel may be given vanilla; whether
    it is depends on the gateway (the assignment's objective)."""
    demote_gbps: float = 1.0
    """Estimated demand below which a vanilla tunnel always goes back inline (< promote)."""
    inline_saturation: float = 0.95
    """Busy fraction of a core from which an inline tunnel on it counts as capped by it
    (its reading is censored: it wants more than it got)."""
    min_dwell: float = 30.0
    """Seconds a tunnel stays in a mode before it may change again."""
    latent_heat: float = 1.0
    """Seconds a mode change must be wanted, the same way at every tick, before it is made
    (a one-tick burst changes nothing)."""
    probe_gain: float = 0.3
    """A censored reading counts as this much more than it got (0.3: 30 %), so that a
    capped tunnel is offered more room when the gateway has it."""
    demand_decay: float = 15.0
    """Half-life, seconds, of the demand estimate's fall (it follows a rise at once)."""


@dataclass(frozen=True, slots=True)
class Placement:
    max_moves: int = 64
    """Operations on peers (mode or core changes) per tick, at most."""
    migrate_improvement: float = 0.10
    """A core move must cut the load imbalance between the two cores by this fraction."""
    vanilla_pool_min: int = 2
    """Smallest crypt-worker pool while any tunnel is vanilla."""
    pool_headroom: float = 0.05
    """Fraction of the vanilla pool kept free: the pool is sized so that the vanilla
    tunnels' estimated demand fills (1 - headroom) of it."""
    core_capacity: float = 0.9
    """Fraction of a core inline tunnels are counted to fill when the assignment counts
    the cores they need (a core is relieved only when its demand exceeds the whole core)."""
    threaded_napi: NapiPolicy = NapiPolicy.AUTO
    min_gain: float = 0.005
    """An assignment replaces the current one only when it delivers this fraction more
    (of the gateway's throughput), or as much on this fraction less CPU."""
    nic_steering: bool = False
    """Steer each tunnel's outer UDP flow on the host's NIC to the tunnel's core (ethtool
    ntuple rules + /proc/irq affinity, or RPS): off by default, as it changes the NIC's
    settings and fights irqbalance (docs/install.md, "NIC steering"). Only the kernel
    backend reads it; the pure core does not."""


@dataclass(frozen=True, slots=True)
class Metrics:
    per_peer_max: int = 10_000
    """Per-peer Prometheus series (about 400 bytes of /metrics per peer) only while the
    gateway has at most this many peers; above, the per-interface aggregates alone."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Stalled decryption (issue 12, finding 8): a peer whose outer datagrams are dropped
    while it accepts none. `wghybrid.core.stall` detects it, the daemon recovers it."""

    detect: bool = True
    """Watch every peer for a stall (a few array operations per tick)."""
    window: float = 15.0
    """Seconds a peer must accept no packet (rx_packets still) while `min_drops` are dropped.
    Above WireGuard's passive keepalive (10 s), so a one-way tunnel whose far end answers
    with keepalives only is never taken for stalled."""
    min_drops: int = 64
    """Packets dropped within the window for it to count as a stall."""
    recover: bool = True
    """Recover a stalled peer (threaded NAPI off on its device, then the peer removed and
    added again with the same configuration); false: only report it."""
    retry: float = 300.0
    """Seconds before a peer still stalled after being re-created is re-created again
    (doubling each time, at most an hour)."""


@dataclass(frozen=True, slots=True)
class NameImport:
    """Where friendly names are imported from, besides the policy's `[names]` (which wins
    over them; then networkd wins over wg-quick). An empty tuple turns a source off."""

    wg_quick: tuple[str, ...] = ("/etc/wireguard",)
    """Directories of wg-quick configs (*.conf): `# Name = ...` comments of [Peer]s."""
    networkd: tuple[str, ...] = ("/etc/systemd/network",)
    """Directories of systemd-networkd *.netdev files: the same in [WireGuardPeer]s."""


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
    metrics: Metrics = field(default_factory=Metrics)
    stall: Stall = field(default_factory=Stall)
    name_import: NameImport = field(default_factory=NameImport)
    names: dict[bytes, str] = field(default_factory=dict)
    """Friendly peer names, by raw public key: the policy file's `[names]`, and those
    imported (`name_origin`) or added by the data plane (the simulator's tunnel names)."""
    source: str = "<built-in>"
    """The file it was loaded from."""
    # Where the names came from (not part of what the policy is: left out of ==).
    file_names: frozenset[bytes] | None = field(default=None, compare=False)
    """The keys of `names` that the policy file's `[names]` holds (None: every key not in
    `name_origin`). Set by `load_policy`, so that names added later are told apart."""
    name_origin: dict[bytes, str] = field(default_factory=dict, compare=False)
    """For each imported name, where it came from ("wg-quick /etc/wireguard/wg0.conf:12")."""
    name_warnings: tuple[str, ...] = field(default=(), compare=False)
    """What went wrong importing names (file and line); the policy is in force anyway."""
