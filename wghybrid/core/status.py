"""Status: what the controller publishes after each tick, columnar (pure, vectorised).

`Controller.status()` runs after every tick, and on a gateway of 100,000 peers one
`PeerStatus` object per peer per tick was most of the tick's cost. The status is built
here as columns instead: per interface, one `PeerColumns` (numpy arrays copied from the
tick: keys, mode, class, rates, CPU, core, time in mode, the data plane's cumulative
counters, and per row an index into the few live overrides and unmanaged marks). It is
immutable, and a `Sequence[PeerStatus]`: `PeerStatus` objects are made only when a
consumer iterates or indexes it (tests, a caller that wants one peer), and whatever a
consumer derives per peer (raw keys, base64 keys, friendly names) is made once per
snapshot, on first use, and kept.

Front ends read the columns directly (`columns(interface_status)`; a snapshot built by
hand from `PeerStatus` tuples is turned into columns once): the HTTP API's JSON, the
metrics and the daemon's STATUS= line never go through per-peer objects.

Each interface's columns also carry its `InterfaceSummary` (totals: delivered, estimated
demand, CPU and peers by mode, drops, and per managed core its busy fraction and inline
tunnels), a handful of numpy reductions per tick, for `wghybrid status`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import DTypeLike

from wghybrid.core.rates import KEY_LEN, KeyIndex, Rates, key_bytes, lookup
from wghybrid.model import (
    F64,
    I32,
    U8,
    U64,
    GatewaySample,
    InterfaceStatus,
    Keys,
    Mode,
    Override,
    PeerClass,
    PeerId,
    PeerStatus,
)
from wghybrid.policy import Policy

_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                     dtype=np.uint8)
_MODES = tuple(Mode)
_CLASSES = tuple(PeerClass)


def encode_keys(key: Keys) -> list[str]:
    """Standard base64 of every raw key (44 characters, one "=" of padding), as
    `model.encode_key` spells one, without a Python loop: 32 bytes and a zero byte are
    11 groups of three, so each key encodes on its own; the last character is the pad."""
    raw = key_bytes(key)
    n = raw.shape[0]
    padded = np.zeros((n, KEY_LEN + 1), dtype=np.uint32)
    padded[:, :KEY_LEN] = raw
    groups = padded.reshape(n, (KEY_LEN + 1) // 3, 3)
    v = (groups[..., 0] << 16) | (groups[..., 1] << 8) | groups[..., 2]
    sextets = np.stack([v >> 18, (v >> 12) & 63, (v >> 6) & 63, v & 63], axis=-1)
    chars = _B64[sextets.reshape(n, 44)]
    chars[:, 43] = ord("=")
    return list(np.ascontiguousarray(chars).view("S44").ravel().astype("U44").tolist())


def _raw_keys(key: Keys) -> list[bytes]:
    """Every key as 32 bytes (an "S32" array's tolist() drops trailing NUL bytes)."""
    return list(np.ascontiguousarray(key_bytes(key)).view(f"V{KEY_LEN}").ravel().tolist())


@dataclass(frozen=True, slots=True)
class CoreLoad:
    core: int
    busy: float | None
    """Fraction of the core busy (0..1, smoothed, the whole gateway's work on it); None
    until two readings."""
    inline: int
    """Inline tunnels of this interface on the core."""
    pool: bool
    """The core is in this interface's vanilla pool (crypt workers)."""


@dataclass(frozen=True, slots=True)
class InterfaceSummary:
    """One interface's totals in one snapshot (GET /v1/status: Interface.summary)."""

    rx_bps: float
    tx_bps: float
    demand_bps: float | None
    """The controller's estimated demand (rx + tx, bits/s), summed; None when unknown
    (before the first estimate, or a snapshot made without one)."""
    cpu_inline: float
    cpu_vanilla: float
    """CPU used by the tunnels of each mode, in cores."""
    peers_inline: int
    peers_vanilla: int
    drop_pps: float
    """Packets dropped per second (smoothed), all tunnels."""
    drops: int
    """Packets dropped since the data plane's counters started (cumulative)."""
    cores: tuple[CoreLoad, ...]
    """Per managed core, in core order."""

    def to_json(self) -> dict[str, Any]:
        return {
            "rx_bps": _finite(self.rx_bps),
            "tx_bps": _finite(self.tx_bps),
            "demand_bps": None if self.demand_bps is None else _finite(self.demand_bps),
            "cpu": {"inline": _finite(self.cpu_inline), "vanilla": _finite(self.cpu_vanilla)},
            "peers": {"inline": self.peers_inline, "vanilla": self.peers_vanilla},
            "drop_pps": _finite(self.drop_pps),
            "drops": self.drops,
            "cores": [
                {"core": c.core, "busy": None if c.busy is None else _finite(c.busy),
                 "inline": c.inline, "pool": c.pool}
                for c in self.cores
            ],
        }


def _finite(x: float) -> float:
    return float(x) if np.isfinite(x) else 0.0


def summarise(
    mode: U8,
    rx_bps: F64,
    tx_bps: F64,
    cpu: F64,
    core: I32,
    *,
    managed: Sequence[int] = (),
    pool: frozenset[int] = frozenset(),
    core_busy: F64 | None = None,
    demand: F64 | None = None,
    drop_pps: F64 | None = None,
    drops: U64 | None = None,
) -> InterfaceSummary:
    """An interface's summary from its columns (vectorised: a few reductions)."""
    with np.errstate(over="ignore", invalid="ignore"):  # absurd rates sum to inf: shown 0
        return _summarise(mode, rx_bps, tx_bps, cpu, core, managed, pool, core_busy, demand,
                          drop_pps, drops)


def _total(x: np.ndarray) -> float:
    """Sum of the finite values (one pass when all are, as nearly always)."""
    total = float(np.sum(x))
    return total if np.isfinite(total) else float(np.sum(x, where=np.isfinite(x)))


def _summarise(
    mode: U8, rx_bps: F64, tx_bps: F64, cpu: F64, core: I32, managed: Sequence[int],
    pool: frozenset[int], core_busy: F64 | None, demand: F64 | None, drop_pps: F64 | None,
    drops: U64 | None,
) -> InterfaceSummary:
    n = int(mode.shape[0])
    inline = mode == Mode.INLINE
    n_inline = int(np.count_nonzero(inline))
    by_mode = np.bincount(inline.view(np.uint8), weights=cpu, minlength=2) if n else np.zeros(2)
    if not np.all(np.isfinite(by_mode)):
        ok = np.isfinite(cpu)
        by_mode = np.bincount(inline[ok].view(np.uint8), weights=cpu[ok], minlength=2)
    top = max(managed, default=-1) + 1
    # Inline tunnels per managed core: row -> core + 1 when inline on a core counted
    # (0: not inline, no core, or a core beyond the managed ones: never a huge bincount).
    c64 = np.asarray(core, np.int64)
    slot = np.where(inline & (c64 >= 0) & (c64 < top), c64 + 1, 0)
    per_core = np.bincount(slot, minlength=top + 1)[1:].tolist()
    busy = core_busy if core_busy is not None else np.zeros(0)
    nb = int(busy.shape[0])
    return InterfaceSummary(
        rx_bps=_total(rx_bps),
        tx_bps=_total(tx_bps),
        demand_bps=None if demand is None or demand.shape != mode.shape
        else _total(demand) * 1e9,
        cpu_inline=float(by_mode[1]),
        cpu_vanilla=float(by_mode[0]),
        peers_inline=n_inline,
        peers_vanilla=n - n_inline,
        drop_pps=0.0 if drop_pps is None else _total(drop_pps),
        drops=0 if drops is None else int(np.sum(drops, dtype=np.uint64)),
        cores=tuple(
            CoreLoad(c, float(busy[c]) if c < nb else None,
                     int(per_core[c]) if c < len(per_core) else 0, c in pool)
            for c in sorted(managed)
        ),
    )


class PeerColumns(Sequence[PeerStatus]):
    """The peers of one interface in one status snapshot, a column per field.

    Immutable by convention (the arrays are the snapshot's own copies); `PeerStatus`
    objects, raw and base64 keys and names are derived on first use and cached."""

    __slots__ = (
        "interface", "key", "mode", "pclass", "pinned", "rx_bps", "tx_bps", "cpu", "core",
        "time_in_mode", "pin", "overrides", "unmanaged", "reasons", "_names", "_name_list",
        "_raw", "_b64", "_objects", "rx_bytes", "tx_bytes", "rx_cpu_ns", "tx_cpu_ns", "drops",
        "epoch", "_summary",
    )

    def __init__(
        self,
        interface: str,
        key: Keys,
        mode: U8,
        pclass: U8,
        rx_bps: F64,
        tx_bps: F64,
        cpu: F64,
        core: I32,
        time_in_mode: F64,
        *,
        pinned: np.ndarray | None = None,
        pin: I32 | None = None,
        overrides: tuple[Override, ...] = (),
        unmanaged: I32 | None = None,
        reasons: tuple[str, ...] = (),
        names: Mapping[bytes, str] | None = None,
        name_list: list[str] | None = None,
        counters: tuple[U64, U64, U64, U64, U64, U64] | None = None,
        summary: InterfaceSummary | None = None,
    ) -> None:
        n = int(key.shape[0])
        self.interface = interface
        self.key = key
        self.mode = mode
        self.pclass = pclass
        self.rx_bps = rx_bps
        self.tx_bps = tx_bps
        self.cpu = cpu
        self.core = core
        self.time_in_mode = time_in_mode
        self.pin: I32 = pin if pin is not None else np.full(n, -1, dtype=np.int32)
        """Per row, the index of its override in `overrides`, or -1."""
        self.pinned: np.ndarray = pinned if pinned is not None else self.pin >= 0
        self.overrides = overrides
        self.unmanaged: I32 = unmanaged if unmanaged is not None else np.full(n, -1, np.int32)
        """Per row, the index of why it is unmanaged in `reasons`, or -1."""
        self.reasons = reasons
        self._names = names if names is not None else {}
        self._name_list = name_list
        self._raw: list[bytes] | None = None
        self._b64: list[str] | None = None
        self._objects: tuple[PeerStatus, ...] | None = None
        if counters is None:
            zero = np.zeros(n, dtype=np.uint64)
            counters = (zero, zero, zero, zero, zero, zero)
        # The data plane's cumulative counters, as sampled (metrics: counters, not rates);
        # `epoch` changes when they restart from zero.
        (self.rx_bytes, self.tx_bytes, self.rx_cpu_ns, self.tx_cpu_ns, self.drops,
         self.epoch) = counters
        self._summary = summary

    @property
    def summary(self) -> InterfaceSummary:
        """The interface's totals (made from the columns when the snapshot has none)."""
        if self._summary is None:
            self._summary = summarise(self.mode, self.rx_bps, self.tx_bps, self.cpu, self.core,
                                      drops=self.drops)
        return self._summary

    def summary_json(self) -> dict[str, Any]:
        return self.summary.to_json()

    @staticmethod
    def from_peers(interface: str, peers: Sequence[PeerStatus]) -> PeerColumns:
        """Columns of `PeerStatus` objects (a snapshot made by hand, in tests)."""
        named = {p.interface for p in peers}
        if len(named) == 1:
            (interface,) = named
        overrides = tuple(dict.fromkeys(p.override for p in peers if p.override is not None))
        reasons = tuple(dict.fromkeys(p.unmanaged for p in peers if p.unmanaged is not None))
        opos = {o: i for i, o in enumerate(overrides)}
        rpos = {r: i for i, r in enumerate(reasons)}
        cols = PeerColumns(
            interface,
            np.array([p.public_key for p in peers], dtype="S32"),
            np.array([int(p.mode) for p in peers], dtype=np.uint8),
            np.array([int(p.pclass) for p in peers], dtype=np.uint8),
            np.array([p.rx_bps for p in peers], dtype=np.float64),
            np.array([p.tx_bps for p in peers], dtype=np.float64),
            np.array([p.cpu for p in peers], dtype=np.float64),
            np.array([p.core for p in peers], dtype=np.int32),
            np.array([p.time_in_mode for p in peers], dtype=np.float64),
            pinned=np.array([p.pinned for p in peers], dtype=bool),
            pin=np.array([opos[p.override] if p.override is not None else -1 for p in peers],
                         dtype=np.int32),
            overrides=overrides,
            unmanaged=np.array(
                [rpos[p.unmanaged] if p.unmanaged is not None else -1 for p in peers],
                dtype=np.int32,
            ),
            reasons=reasons,
            name_list=[p.name for p in peers],
        )
        cols._objects = tuple(peers)
        return cols

    # -- derived per peer, once ---------------------------------------------------------
    def raw_keys(self) -> list[bytes]:
        if self._raw is None:
            self._raw = _raw_keys(self.key)
        return self._raw

    def public_keys(self) -> list[str]:
        """Base64 keys, row for row."""
        if self._b64 is None:
            self._b64 = encode_keys(self.key)
        return self._b64

    def names(self) -> list[str]:
        """Friendly names, row for row ("" for none)."""
        if self._name_list is None:
            get = self._names.get
            self._name_list = [get(k, "") for k in self.raw_keys()] if self._names else (
                [""] * len(self)
            )
        return self._name_list

    def unmanaged_reasons(self) -> list[str | None]:
        if not self.reasons:
            return [None] * len(self)
        table: list[str | None] = [*self.reasons, None]
        return [table[i] for i in self.unmanaged.tolist()]

    def override_of(self) -> list[Override | None]:
        if not self.overrides:
            return [None] * len(self)
        table: list[Override | None] = [*self.overrides, None]
        return [table[i] for i in self.pin.tolist()]

    def find(self, keys: Sequence[bytes]) -> np.ndarray:
        """For each raw key, its row here (the last one), or -1."""
        if not keys:
            return np.zeros(0, dtype=np.int64)
        n = len(self)
        wanted = [k if len(k) == KEY_LEN else b"" for k in keys]
        rows = lookup((self.interface,), np.zeros(n, dtype=np.int32), self.key,
                      (self.interface,), np.zeros(len(wanted), dtype=np.int32),
                      np.array(wanted, dtype="S32"))
        return np.where([len(k) == KEY_LEN for k in keys], rows, -1)

    def name_at(self, row: int) -> str:
        if self._name_list is not None:
            return self._name_list[row]
        return self._names.get(_raw_keys(self.key[row:row + 1])[0], "") if self._names else ""

    def counts(self) -> tuple[int, int, int, int]:
        """(peers, inline, pinned, unmanaged)."""
        return (len(self), int(np.count_nonzero(self.mode == Mode.INLINE)),
                int(np.count_nonzero(self.pinned)), int(np.count_nonzero(self.unmanaged >= 0)))

    # -- Sequence[PeerStatus] -----------------------------------------------------------
    def _all(self) -> tuple[PeerStatus, ...]:
        if self._objects is None:
            self._objects = tuple(
                PeerStatus(self.interface, key, name, _MODES[m], _CLASSES[c], pinned, rx, tx,
                           cpu, core, t, ov, why)
                for key, name, m, c, pinned, rx, tx, cpu, core, t, ov, why in zip(
                    self.raw_keys(), self.names(), self.mode.tolist(), self.pclass.tolist(),
                    self.pinned.tolist(), self.rx_bps.tolist(), self.tx_bps.tolist(),
                    self.cpu.tolist(), self.core.tolist(), self.time_in_mode.tolist(),
                    self.override_of(), self.unmanaged_reasons(), strict=True,
                )
            )
        return self._objects

    def __len__(self) -> int:
        return int(self.key.shape[0])

    @overload
    def __getitem__(self, index: int) -> PeerStatus: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[PeerStatus]: ...

    def __getitem__(self, index: int | slice) -> PeerStatus | Sequence[PeerStatus]:
        return self._all()[index]

    def __iter__(self) -> Iterator[PeerStatus]:
        return iter(self._all())

    def __repr__(self) -> str:
        return f"PeerColumns({self.interface!r}, {len(self)} peers)"


def columns(status: InterfaceStatus) -> PeerColumns:
    """The peers of `status` as columns (made once for a snapshot built by hand)."""
    peers = status.peers
    if isinstance(peers, PeerColumns):
        return peers
    cols = PeerColumns.from_peers(status.name, peers)
    cols._summary = summarise(cols.mode, cols.rx_bps, cols.tx_bps, cols.cpu, cols.core,
                              managed=sorted(status.cores), pool=status.crypt_cores)
    return cols


def counts(snapshot: Sequence[InterfaceStatus]) -> tuple[int, int, int, int]:
    """(peers, inline, pinned, unmanaged) over every interface."""
    totals = [0, 0, 0, 0]
    for i in snapshot:
        for k, v in enumerate(columns(i).counts()):
            totals[k] += v
    return totals[0], totals[1], totals[2], totals[3]


def has_peer(status: InterfaceStatus, key: bytes) -> bool:
    return bool(columns(status).find([key])[0] >= 0)


def locate(
    snapshot: Sequence[InterfaceStatus], wanted: Sequence[PeerId]
) -> list[tuple[PeerColumns, int] | None]:
    """For each peer of `wanted`, its columns and row in `snapshot`, or None."""
    out: list[tuple[PeerColumns, int] | None] = [None] * len(wanted)
    if not wanted:
        return out
    for status in snapshot:
        cols = columns(status)
        mine = [i for i, (name, _) in enumerate(wanted) if name == cols.interface]
        if not mine or not len(cols):
            continue
        rows = cols.find([wanted[i][1] for i in mine]).tolist()
        for i, r in zip(mine, rows, strict=True):
            if r >= 0:
                out[i] = (cols, r)
    return out


def marks_of(cols: PeerColumns, wanted: Sequence[bytes]) -> np.ndarray:
    """For each row of `cols`, the index in `wanted` (distinct raw keys) of its key, or -1."""
    return _marks((cols.interface,), np.zeros(len(cols), dtype=np.int32), cols.key,
                  [PeerId(cols.interface, k) for k in wanted])


def _marks(
    ifnames: tuple[str, ...], iface: np.ndarray, key: Keys,
    wanted: Sequence[PeerId], index: KeyIndex | None = None,
) -> np.ndarray:
    """For each row of the table, the index in `wanted` of its peer, or -1; `wanted` lists
    each at most once. `index`: the table's `KeyIndex`, if it has one (the wanted peers
    are then looked up in it, without a pass over the table's keys)."""
    usable = [(i, (name, k)) for i, (name, k) in enumerate(wanted) if len(k) == KEY_LEN]
    if not usable:
        return np.full(int(np.asarray(key).shape[0]), -1, dtype=np.int64)
    if index is not None and index.unique:
        # Each identity on one row at most: the wanted peer's row is the one to mark.
        out = np.full(len(index), -1, dtype=np.int64)
        found = index.rows_of([PeerId(*p) for _, p in usable]).tolist()
        for (i, _), r in zip(usable, found, strict=True):
            if r >= 0:
                out[r] = i
        return out
    names = tuple(dict.fromkeys(name for _, (name, _k) in usable))
    code = {name: c for c, name in enumerate(names)}
    found = lookup(
        names, np.array([code[name] for _, (name, _k) in usable], dtype=np.int32),
        np.array([k for _, (_n, k) in usable], dtype="S32"),
        ifnames, iface, key,
    )
    position = np.array([i for i, _ in usable], dtype=np.int64)
    return np.where(found >= 0, position[np.maximum(found, 0)], -1)


def _col(column: np.ndarray, rows: np.ndarray | slice, dtype: DTypeLike) -> np.ndarray:
    """The snapshot's own copy of `column`'s rows (one copy: an index array's rows are
    one already, a slice's are a view)."""
    if isinstance(rows, slice):
        return np.array(column[rows], dtype=dtype)
    return np.asarray(np.take(column, rows), dtype=dtype)


def _u64(column: U64, rows: np.ndarray | slice) -> U64:
    return _col(column, rows, np.uint64)


def _distinct(values: np.ndarray) -> frozenset[int]:
    """The distinct values of an array of non-negative integers (core numbers)."""
    if values.shape[0] and int(values.max()) < 1 << 16:
        return frozenset(np.flatnonzero(np.bincount(values)).tolist())
    return frozenset(np.unique(values).tolist())


def build_status(
    sample: GatewaySample,
    rates: Rates,
    pclass: U8,
    mode_since: F64,
    policy: Policy,
    unmanaged: Mapping[PeerId, str],
    unsupported: Mapping[tuple[str, str], str],
    overrides: Sequence[Override],
    wall_now: float,
    demand: F64 | None = None,
    index: KeyIndex | None = None,
) -> tuple[InterfaceStatus, ...]:
    """What the controller sees and decided, per interface: the snapshot the daemon
    publishes after each tick. `rates`, `pclass`, `mode_since` and `demand` (estimated
    Gbps, rx + tx; None: unknown) are aligned row for row with `sample.peers`; nothing
    here loops over peers in Python. `index`: the `KeyIndex` of `sample.peers` (the
    controller's), which finds overrides and unmanaged peers without a sort."""
    peers = sample.peers
    ifnames = tuple(dev.name for dev in sample.interfaces)
    pins = {o.peer: o for o in overrides if o.active(wall_now)}
    cores = frozenset(c for c in (policy.cores or range(sample.cores)) if c < sample.cores)
    k = len(sample.interfaces)
    n = len(peers)
    iface = np.asarray(peers.iface)
    # Rows naming no interface belong to none (below); the lookups need a valid index.
    look = np.clip(iface, 0, k - 1) if k else iface[:0]
    if not k:
        pins, unmanaged = {}, {}
    if index is not None and (index.ifnames != ifnames or len(index) != n
                              or (n and (int(iface.min()) < 0 or int(iface.max()) >= k))):
        index = None  # not this table's, or rows the lookups clip to another interface
    pin_list = tuple(pins.values())
    pin = _marks(ifnames, look, peers.key, tuple(pins), index) if pins else None
    marks = [(p, why) for p, why in unmanaged.items() if len(p.public_key) == KEY_LEN]
    reasons = tuple(why for _, why in marks)
    why = _marks(ifnames, look, peers.key, [p for p, _ in marks], index) if marks else None
    time_in_mode = sample.now - np.asarray(mode_since, dtype=np.float64)
    managed = sorted(cores)
    drop_pps = rates.drop_pps if rates.drop_pps.shape == (n,) else None
    if demand is not None and np.shape(demand) != (n,):
        demand = None

    if k == 1 and n and not np.any(iface):
        groups: list[np.ndarray | slice] = [slice(None)]
    elif k <= 8:
        groups = [np.flatnonzero(iface == j) for j in range(k)]  # each in row order
    elif k:
        order = np.argsort(iface, kind="stable")
        bounds = np.searchsorted(iface[order], np.arange(k + 1), side="left")
        groups = [order[bounds[j]:bounds[j + 1]] for j in range(k)]
    else:
        groups = []

    out = []
    for j, dev in enumerate(sample.interfaces):
        rows = groups[j]
        mode = _col(peers.mode, rows, np.uint8)
        core = _col(peers.core, rows, np.int32)
        p = _col(pin, rows, np.int32) if pin is not None else None
        u = _col(why, rows, np.int32) if why is not None else None
        cols = PeerColumns(
            dev.name,
            _col(peers.key, rows, "S32"),
            mode,
            _col(pclass, rows, np.uint8),
            _col(rates.rx_bps, rows, np.float64),
            _col(rates.tx_bps, rows, np.float64),
            _col(rates.cpu, rows, np.float64),
            core,
            _col(time_in_mode, rows, np.float64),
            pin=p,
            overrides=pin_list,
            unmanaged=u,
            reasons=reasons,
            names=policy.names,
            counters=(_u64(peers.rx_bytes, rows), _u64(peers.tx_bytes, rows),
                      _u64(peers.rx_cpu_ns, rows), _u64(peers.tx_cpu_ns, rows),
                      _u64(peers.drops, rows), _u64(peers.epoch, rows)),
        )
        inline = core[(mode == Mode.INLINE) & (core >= 0)]
        cols._summary = summarise(
            mode, cols.rx_bps, cols.tx_bps, cols.cpu, core, managed=managed,
            pool=dev.crypt_cores, core_busy=rates.core_busy,
            demand=None if demand is None else np.asarray(demand[rows], dtype=np.float64),
            drop_pps=None if drop_pps is None else drop_pps[rows], drops=cols.drops,
        )
        out.append(InterfaceStatus(
            name=dev.name,
            cores=cores,
            crypt_cores=dev.crypt_cores,
            inline_cores=_distinct(inline),
            threaded_napi=dev.threaded_napi,
            peers=cols,
            unsupported=tuple(
                f"{knob}: {reason}" for (ifname, knob), reason in sorted(unsupported.items())
                if ifname == dev.name
            ),
        ))
    return tuple(out)
