"""Rates: per-peer smoothed rates from cumulative counters (pure, vectorised).

Stage two of a tick: sample -> **rates** -> estimate -> assign -> place -> apply.

The data plane reports cumulative counters. This stage turns two consecutive readings
into rates and smooths them with an exponentially weighted moving average whose weight
depends on the real time between the readings, so a late or missed sample weighs as much
as the time it covers (alpha = 1 - 2^(-dt / half_life)).

Correctness at the edges, each handled without a Python loop per peer:
- a peer that appears has no rate until its second reading (its first is a baseline);
- a peer that vanishes is dropped; if it comes back it starts again from a baseline;
- a counter that restarts (module reloaded, peer re-added: `epoch` changes, or any
  counter goes backwards) is re-baselined instead of producing a huge or negative rate;
- a reading whose time did not advance changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from wghybrid.model import F64, KEY_LEN, U64, GatewaySample, Keys, PeerId, PeerTable

_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_cpu_ns", "tx_cpu_ns", "drops")
_RATES = ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "cpu", "drop_pps")


@dataclass(frozen=True, slots=True, eq=False)
class Rates:
    """Smoothed per-peer rates, aligned row for row with the sample they came from."""

    now: float
    ifnames: tuple[str, ...]
    iface: np.ndarray
    key: Keys
    epoch: U64
    counters: U64
    """Shape (len(_COUNTERS), n): the last raw counters, for the next delta."""
    rx_bps: F64
    tx_bps: F64
    rx_pps: F64
    tx_pps: F64
    cpu: F64
    """CPU used processing the peer (rx + tx), in cores."""
    drop_pps: F64
    valid: np.ndarray
    """bool: the peer has at least one delta behind its rates."""
    busy_ns: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))
    """Per core, the last cumulative busy ns."""
    core_busy: F64 = field(default_factory=lambda: np.zeros(0))
    """Per core, smoothed fraction busy (0..1); empty until two readings."""

    def __len__(self) -> int:
        return int(self.key.shape[0])

    @property
    def gbps(self) -> F64:
        return np.asarray((self.rx_bps + self.tx_bps) / 1e9, dtype=np.float64)


def key_bytes(key: Keys) -> np.ndarray:
    """The raw keys as an (n, 32) uint8 array (trailing NUL bytes included)."""
    arr = np.ascontiguousarray(np.asarray(key, dtype="S32"))
    return arr.view(np.uint8).reshape(-1, KEY_LEN)


def same_rows(prev: Rates, ifnames: tuple[str, ...], peers: PeerTable) -> bool:
    """True when the sample lists the same peers in the same order (the common case)."""
    return (
        prev.ifnames == ifnames
        and prev.key.shape == peers.key.shape
        and bool(np.array_equal(prev.iface, peers.iface))
        and same_keys(prev.key, peers.key)
    )


def same_keys(a: Keys, b: Keys) -> bool:
    """Equal key columns, compared as bytes (numpy compares "S32" elements as strings,
    several times slower)."""
    if a.dtype.itemsize != 32 or b.dtype.itemsize != 32:
        return bool(np.array_equal(a, b))
    return bool(np.array_equal(np.ascontiguousarray(a).view(np.uint64),
                               np.ascontiguousarray(b).view(np.uint64)))


_MIX = np.uint64(0x9E3779B97F4A7C15)
_SMALL = 4096


class _Side:
    """One side of a lookup, per row: a code for its interface's name, its raw key as four
    64-bit words (one array each), and a 64-bit digest of both."""

    __slots__ = ("code", "words", "digest")

    def __init__(self, codes_of: dict[str, int], ifnames: tuple[str, ...], iface: np.ndarray,
                 key: Keys) -> None:
        table = np.array([codes_of[name] for name in ifnames], dtype=np.int64)
        iface = np.asarray(iface)
        # Indexing like the list of names the identities were built from: a negative index
        # counts from the end, one past the end raises IndexError.
        self.code = table[iface] if iface.shape[0] else np.zeros(0, dtype=np.int64)
        self.words = np.ascontiguousarray(key_bytes(key).view(np.uint64).T)
        self.digest = self.words[0] ^ (self.code.astype(np.uint64) * _MIX)

    def sort(self, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """(row order, digests truncated to 64 - bits, in that order): one sort of plain
        integers, the row number riding in the low bits (cheaper than an argsort)."""
        low = np.uint64((1 << bits) - 1)
        packed = np.sort((self.digest & ~low) | np.arange(self.digest.shape[0], dtype=np.uint64))
        return (packed & low).astype(np.intp), packed >> np.uint64(bits)

    def same(self, rows: np.ndarray, other: _Side, other_rows: np.ndarray) -> np.ndarray:
        eq = self.code[rows] == other.code[other_rows]
        for w in range(KEY_LEN // 8):
            eq &= self.words[w][rows] == other.words[w][other_rows]
        return eq


def _match(old: _Side, new: _Side) -> np.ndarray:
    """For each row of `new`, the row of `old` with the same identity (the last one when
    `old` lists it twice, as a dict built from `old` would keep), or -1."""
    n, m = old.digest.shape[0], new.digest.shape[0]
    if n == 0 or m == 0:
        return np.full(m, -1, dtype=np.int64)
    bits = max(n, m).bit_length()
    order, sorted_digest = old.sort(bits)
    if bool(np.any(sorted_digest[1:] == sorted_digest[:-1])):
        return _match_exact(old, new)  # duplicate identities or colliding digests: rare
    if n <= _SMALL:
        # A few rows looked up among many (overrides, marks): a binary search in a table
        # that fits the cache needs no sort of the many.
        qorder, qdigest = np.arange(m), new.digest >> np.uint64(bits)
    else:
        qorder, qdigest = new.sort(bits)
    pos = np.minimum(np.searchsorted(sorted_digest, qdigest), n - 1)
    cand = order[pos]
    hit = (sorted_digest[pos] == qdigest) & old.same(cand, new, qorder)
    rows = np.empty(m, dtype=np.int64)
    rows[qorder] = np.where(hit, cand, -1)
    return rows


def _match_exact(old: _Side, new: _Side) -> np.ndarray:
    """`_match` on whole identities (code, key): no digest, any duplicates."""

    def ident(side: _Side) -> np.ndarray:
        n = side.code.shape[0]
        b = np.empty((n, 8 + KEY_LEN), dtype=np.uint8)
        b[:, :8] = side.code.astype(">i8").view(np.uint8).reshape(n, 8)
        b[:, 8:] = np.ascontiguousarray(side.words.T).view(np.uint8).reshape(n, KEY_LEN)
        return b.view(f"V{8 + KEY_LEN}").ravel()

    a, q = ident(old), ident(new)
    order = np.argsort(a, kind="stable")
    sorted_ids = a[order]
    # The last of equal identities: with a stable sort, the last in `old`'s order.
    pos = np.searchsorted(sorted_ids, q, side="right") - 1
    found = pos >= 0
    pos = np.maximum(pos, 0)
    found &= sorted_ids[pos] == q
    return np.where(found, order[pos], -1).astype(np.int64)


def lookup(
    old_ifnames: tuple[str, ...], old_iface: np.ndarray, old_key: Keys,
    ifnames: tuple[str, ...], iface: np.ndarray, key: Keys,
) -> np.ndarray:
    """For each (interface, key) row of the second table, the row of the first with the
    same identity (interface name + raw key; the last such row), or -1. Vectorised: two
    sorts of 64-bit digests and one comparison of the candidates' whole keys."""
    codes_of: dict[str, int] = {}
    for name in (*old_ifnames, *ifnames):
        codes_of.setdefault(name, len(codes_of))
    return _match(_Side(codes_of, old_ifnames, old_iface, old_key),
                  _Side(codes_of, ifnames, iface, key))


def rows_of(
    ifnames: tuple[str, ...], iface: np.ndarray, key: Keys, wanted: Sequence[PeerId]
) -> np.ndarray:
    """For each peer of `wanted`, its row in the table, or -1."""
    names, q_iface, q_key = _wanted(wanted)
    return lookup(ifnames, iface, key, names, q_iface, q_key)


def _wanted(wanted: Sequence[PeerId]) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    names = tuple(dict.fromkeys(name for name, _ in wanted))
    q_iface = np.array([names.index(name) for name, _ in wanted], dtype=np.int64)
    q_key = np.array([k for _, k in wanted], dtype="S32")
    return names, q_iface, q_key


class KeyIndex:
    """A table's identities (interface name + raw key), sorted once by digest: finding
    rows in it costs a binary search per query and no sort of the table. The controller
    keeps the index of its current sample, so that a tick sorts the peers at most once
    (none when the sample lists the peers it listed before), however many lookups it
    makes (the realignment, operator overrides, unmanaged marks, the status)."""

    __slots__ = ("ifnames", "iface", "key", "codes_of", "side", "bits", "order", "digest",
                 "unique")

    def __init__(self, ifnames: tuple[str, ...], iface: np.ndarray, key: Keys) -> None:
        self.ifnames, self.iface, self.key = ifnames, iface, key
        self.codes_of: dict[str, int] = {}
        for name in ifnames:
            self.codes_of.setdefault(name, len(self.codes_of))
        self.side = _Side(self.codes_of, ifnames, iface, key)
        n = self.side.digest.shape[0]
        self.bits = max(n, 1).bit_length()
        self.order, self.digest = self.side.sort(self.bits)
        self.unique = not bool(np.any(self.digest[1:] == self.digest[:-1]))
        """No two rows share a truncated digest (so no two share an identity)."""

    def __len__(self) -> int:
        return int(self.side.digest.shape[0])

    def codes(self, names: Sequence[str]) -> dict[str, int]:
        """The codes of this table's names, extended by new codes for other names."""
        codes = dict(self.codes_of)
        for name in names:
            codes.setdefault(name, len(codes))
        return codes

    def _sorted_digest(self, bits: int) -> np.ndarray | None:
        """The sorted digests truncated to 64 - `bits` (>= self.bits); None when two of
        them are equal (a lookup then compares whole identities)."""
        if bits == self.bits:
            return self.digest if self.unique else None
        d = self.digest >> np.uint64(bits - self.bits)
        return None if bool(np.any(d[1:] == d[:-1])) else d

    def search(self, query: _Side, qsorted: KeyIndex | _Sorted | None = None) -> np.ndarray:
        """For each row of `query` (its codes from `codes()`), the row here with the same
        identity (the last one), or -1. `qsorted`: the query's own index, when it has
        one (its rows are then searched in digest order, without a sort)."""
        n, m = len(self), int(query.digest.shape[0])
        if n == 0 or m == 0:
            return np.full(m, -1, dtype=np.int64)
        if qsorted is None and m > _SMALL:
            qsorted = _Sorted(query)
        if qsorted is None:
            bits = self.bits
            qorder, qdigest = np.arange(m), query.digest >> np.uint64(bits)
        else:
            bits = max(self.bits, qsorted.bits)
            qorder, qdigest = qsorted.order, qsorted.digest >> np.uint64(bits - qsorted.bits)
        table = self._sorted_digest(bits)
        if table is None:
            return _match_exact(self.side, query)
        pos = np.minimum(np.searchsorted(table, qdigest), n - 1)
        cand = self.order[pos]
        hit = (table[pos] == qdigest) & self.side.same(cand, query, qorder)
        rows = np.empty(m, dtype=np.int64)
        rows[qorder] = np.where(hit, cand, -1)
        return rows

    def rows_of(self, wanted: Sequence[PeerId]) -> np.ndarray:
        """`rows_of(...)` on the table this index was made from."""
        if not wanted:
            return np.zeros(0, dtype=np.int64)
        names, q_iface, q_key = _wanted(wanted)
        return self.search(_Side(self.codes(names), names, q_iface, q_key))

    def rows_in(self, old: KeyIndex) -> np.ndarray:
        """`lookup` of this table's rows in `old`'s table: for each row here, the row of
        `old` with the same identity (the last one), or -1."""
        if self.ifnames == old.ifnames:
            return old.search(self.side, self)
        return old.search(_Side(old.codes(self.ifnames), self.ifnames, self.iface, self.key))


class _Sorted:
    """A side's rows in digest order (what `KeyIndex` keeps), for a one-off query."""

    __slots__ = ("bits", "order", "digest")

    def __init__(self, side: _Side) -> None:
        self.bits = max(int(side.digest.shape[0]), 1).bit_length()
        self.order, self.digest = side.sort(self.bits)


def reindex(
    prev: Rates | None, index: KeyIndex | None, sample: GatewaySample
) -> tuple[np.ndarray | None, KeyIndex | None]:
    """`realign(prev, sample)`, and the index of the sample's peers: `index` (the index
    of `prev`'s peers, or None when none was made) when the sample lists the same peers
    in the same order, else a new one, made for the alignment."""
    ifnames = tuple(i.name for i in sample.interfaces)
    if prev is None:
        return None, None
    if same_rows(prev, ifnames, sample.peers):
        return None, index
    new = KeyIndex(ifnames, sample.peers.iface, sample.peers.key)
    old = index if index is not None else KeyIndex(prev.ifnames, prev.iface, prev.key)
    return new.rows_in(old), new


def alignment(prev: Rates, ifnames: tuple[str, ...], peers: PeerTable) -> np.ndarray:
    """For each row of `peers`, the row of `prev` with the same identity, or -1."""
    return lookup(prev.ifnames, prev.iface, prev.key, ifnames, peers.iface, peers.key)


def _core_busy(prev: Rates, sample: GatewaySample, dt: float, alpha: float) -> F64:
    """Smoothed per-core busy fraction; restarts when the core count changes."""
    cur = sample.core_busy_ns
    if dt <= 0 or prev.busy_ns.shape != cur.shape or np.any(cur < prev.busy_ns):
        return prev.core_busy if prev.core_busy.shape == cur.shape else np.zeros(0)
    inst = np.clip((cur - prev.busy_ns).astype(np.float64) / (dt * 1e9), 0.0, 1.0)
    if prev.core_busy.shape != cur.shape:
        return inst
    return np.asarray(prev.core_busy + alpha * (inst - prev.core_busy), dtype=np.float64)


def _stack(peers: PeerTable) -> U64:
    return np.stack([getattr(peers, c) for c in _COUNTERS]).astype(np.uint64, copy=False)


def realign(prev: Rates | None, sample: GatewaySample) -> np.ndarray | None:
    """None when the sample lists the same peers as `prev` in the same order, else, for
    each row of the sample, the row of `prev` with the same identity or -1."""
    ifnames = tuple(i.name for i in sample.interfaces)
    if prev is None or same_rows(prev, ifnames, sample.peers):
        return None
    return alignment(prev, ifnames, sample.peers)


def update_rates(
    prev: Rates | None, sample: GatewaySample, half_life: float,
    rows: np.ndarray | None | bool = True,
) -> Rates:
    """Fold one sample into the smoothed rates; returns new state, `prev` is untouched.

    `rows` is `realign(prev, sample)` when the caller has it already (True: compute it).
    """
    if prev is None:
        return _first(sample, 1)[0]
    return _fold((prev,), sample, (half_life,), rows)[0]


def update_rates_pair(
    slow: Rates | None, fast: Rates | None, sample: GatewaySample, half_life: float,
    rows: np.ndarray | None | bool = True,
) -> tuple[Rates, Rates]:
    """`update_rates(slow, sample, half_life, rows)` and `update_rates(fast, sample, 0.0,
    rows)` (the same counters smoothed and not) in one pass over the counters, when both
    were folded from the same samples by this function (they share their counters); else
    one call each."""
    if slow is None and fast is None:
        first = _first(sample, 2)
        return first[0], first[1]
    if slow is None or fast is None or not _same_history(slow, fast):
        return (update_rates(slow, sample, half_life, rows),
                update_rates(fast, sample, 0.0, rows))
    both = _fold((slow, fast), sample, (half_life, 0.0), rows)
    return both[0], both[1]


def _same_history(a: Rates, b: Rates) -> bool:
    return (a.now == b.now and a.counters is b.counters and a.epoch is b.epoch
            and a.valid is b.valid and a.busy_ns is b.busy_ns and a.ifnames == b.ifnames
            and a.iface is b.iface and a.key is b.key)


def _first(sample: GatewaySample, count: int) -> list[Rates]:
    """The first reading, a baseline (`count` Rates sharing their counters)."""
    peers = sample.peers
    n = len(peers)
    ifnames = tuple(i.name for i in sample.interfaces)
    iface, key, epoch = peers.iface.copy(), peers.key.copy(), peers.epoch.copy()
    counters, valid, busy_ns = _stack(peers), np.zeros(n, dtype=bool), sample.core_busy_ns.copy()
    return [_rates(sample.now, ifnames, iface, key, epoch, counters,
                   [np.zeros(n) for _ in _RATES], valid, busy_ns, np.zeros(0))
            for _ in range(count)]


def _fold(
    prevs: Sequence[Rates], sample: GatewaySample, half_lives: Sequence[float],
    rows: np.ndarray | None | bool,
) -> list[Rates]:
    """Fold one sample into each of `prevs` (folded from the same samples: the counters,
    epoch, validity and time are those of `prevs[0]`), each with its half-life."""
    prev = prevs[0]
    peers = sample.peers
    ifnames = tuple(i.name for i in sample.interfaces)
    n = len(peers)
    counters = _stack(peers)
    dt = sample.now - prev.now
    if rows is True:
        rows = realign(prev, sample)
    if rows is None or rows is False:
        rows = None
        old_counters, old_epoch, old_valid = prev.counters, prev.epoch, prev.valid
        olds = [[getattr(p, r) for r in _RATES] for p in prevs]
    else:
        assert isinstance(rows, np.ndarray)
        known = rows >= 0
        take = np.where(known, rows, 0)
        # Gathered, then the new rows filled in place: the values of
        # np.where(known, old[take], fill), without a second pass over every row.
        new_rows = np.flatnonzero(~known)
        if len(prev):
            old_counters = prev.counters[:, take]
            old_counters[:, new_rows] = counters[:, new_rows]
            old_epoch = prev.epoch[take]
            old_epoch[new_rows] = peers.epoch[new_rows]
            old_valid = prev.valid[take]
            old_valid[new_rows] = False
        else:
            old_counters, old_epoch = counters, peers.epoch
            old_valid = np.zeros(n, dtype=bool)
        olds = [[_gather(getattr(p, r), take, new_rows) if len(prev) else np.zeros(n)
                 for r in _RATES] for p in prevs]
    iface, key = peers.iface.copy(), peers.key.copy()

    if dt <= 0:
        # Time did not advance (a duplicate or out-of-order reading): keep the baseline.
        epoch, held, valid = old_epoch.copy(), old_counters.copy(), np.asarray(old_valid).copy()
        return [_rates(prev.now, ifnames, iface, key, epoch, held,
                       [np.asarray(o, dtype=np.float64).copy() for o in old], valid,
                       p.busy_ns, p.core_busy)
                for p, old in zip(prevs, olds, strict=True)]

    # A restart: new epoch, or any counter going backwards. Such rows re-baseline.
    backwards = np.any(counters < old_counters, axis=0)
    reset = backwards | (peers.epoch != old_epoch)
    if rows is not None:
        reset |= rows < 0
    # counters - np.where(reset, counters, old_counters): the difference, zero where reset.
    reset_rows = np.flatnonzero(reset)
    diff = counters - old_counters
    diff[:, reset_rows] = 0
    delta = diff.astype(np.float64)
    inst = (
        delta[0] * 8.0 / dt,
        delta[1] * 8.0 / dt,
        delta[2] / dt,
        delta[3] / dt,
        (delta[4] + delta[5]) / 1e9 / dt,
        delta[6] / dt,
    )
    # A peer's first delta seeds its average; later ones are blended in.
    old_valid = np.asarray(old_valid)
    first = ~old_valid & ~reset
    valid = (old_valid | first) & ~(reset & ~old_valid)
    epoch, busy_ns = peers.epoch.copy(), sample.core_busy_ns.copy()
    # The rows that are seeded or re-baselined, few or none (each is one element of
    # np.where(reset, o * old_valid, np.where(first, x, blend)), written in place).
    first_rows = np.flatnonzero(first)
    valid_reset = old_valid[reset_rows]
    out = []
    for p, old, half_life in zip(prevs, olds, half_lives, strict=True):
        alpha = 1.0 - 2.0 ** (-dt / half_life) if half_life > 0 else 1.0
        blended = []
        for o, x in zip(old, inst, strict=True):
            o = np.asarray(o, dtype=np.float64)
            # o + alpha * (x - o), in place (the same values: IEEE addition commutes; times
            # alpha 1, unsmoothed, is the identity).
            v = np.subtract(x, o, dtype=np.float64)
            if alpha != 1.0:
                v *= alpha
            v += o
            v[first_rows] = x[first_rows]
            v[reset_rows] = o[reset_rows] * valid_reset
            blended.append(v)
        out.append(_rates(sample.now, ifnames, iface, key, epoch, counters, blended, valid,
                          busy_ns, _core_busy(p, sample, dt, alpha)))
    return out


def _gather(arr: np.ndarray, take: np.ndarray, new_rows: np.ndarray) -> np.ndarray:
    """np.where(rows >= 0, arr[take], 0.0) as float64, with `new_rows` where rows < 0."""
    out = np.asarray(arr[take], dtype=np.float64)
    out[new_rows] = 0.0
    return out


def _rates(
    now: float, ifnames: tuple[str, ...], iface: np.ndarray, key: Keys, epoch: U64,
    counters: U64, rates: Sequence[np.ndarray], valid: np.ndarray, busy_ns: U64,
    core_busy: F64,
) -> Rates:
    rx_bps, tx_bps, rx_pps, tx_pps, cpu, drop_pps = rates
    return Rates(now, ifnames, iface, key, epoch, counters, rx_bps, tx_bps, rx_pps, tx_pps,
                 cpu, drop_pps, valid, busy_ns, core_busy)
