"""Stalled decryption: a peer whose datagrams arrive and are dropped while it accepts none.

Issue 12, finding 8: with threaded NAPI, a kernel whose WireGuard carried upstream's
"enable threaded NAPI" (reverted as CVE-2026-52945) could stop polling a peer for good
once its rx_queue held MAX_QUEUED_PACKETS: every later datagram of that peer is dropped
at the full queue, and it decrypts nothing again. The patched module is tested not to
(kmod/harness/scenarios/threaded_stall.sh); this is the daemon's guard for any stall of
that shape, whatever its cause (a starved NAPI thread, a kernel we have not tested).

The signature, from the counters the module exposes (uapi wghybrid.h): `drops` counts
data packets dropped at a full peer queue, `rx_packets` every data message accepted,
keepalives included. A peer is stalled when, for `window` seconds, it accepted nothing
(rx_packets still) while at least `min_drops` of its packets were dropped, and it had
accepted packets before (it has a session: without one, there is nothing to decrypt).

What it cannot tell apart: `drops` also counts packets dropped on the way out. A peer
whose far end vanished while this side overfills its send queue (a UDP sender faster
than its encryption) also accepts nothing and drops; WireGuard's passive keepalive makes
a live far end answer within 10 s, so a window above that excludes every live peer, but
not that one. Recovering it costs a session that had no far end anyway.

Pure: arrays in, arrays out; vectorised over the peers (one tick of 100,000 peers costs
a few numpy passes). The daemon (wghybrid.daemon.stall) acts on what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wghybrid.core.rates import lookup, rows_of, same_keys
from wghybrid.model import GatewaySample, PeerId, raw_key


@dataclass(frozen=True, slots=True)
class Alignment:
    """The controller's alignment of one sample with the one before it."""

    prev_now: float | None
    """The earlier sample's time (None: there was none)."""
    rows: np.ndarray | None
    """For each row of the later sample, the earlier one's row with the same device and
    key, or -1; None: the same peers in the same order."""


@dataclass(frozen=True, slots=True)
class Stalled:
    """One peer that is stalled as of the last update."""

    row: int
    """Its row in the sample."""
    interface: str
    public_key: bytes
    since: float
    """When it last accepted a packet (the sample clock)."""
    dropped: int
    """Packets dropped since then."""
    rx_packets: int
    mode: int
    threaded_napi: bool
    """Its device's threaded NAPI flag."""


class StallDetector:
    """Per peer, when it last accepted a packet and how many it has dropped since."""

    def __init__(self) -> None:
        self._ifnames: tuple[str, ...] = ()
        self._iface = np.zeros(0, dtype=np.int32)
        self._key = np.zeros(0, dtype="S32")
        self._epoch = np.zeros(0, dtype=np.uint64)
        """The last sample's identities (device index, key, counter epoch)."""
        self._at: float | None = None
        """The last sample's time."""
        self._rx = np.zeros(0, dtype=np.uint64)
        self._drops = np.zeros(0, dtype=np.uint64)
        """The last sample's rx_packets and drops."""
        self._since = np.zeros(0)
        """Start of the current judgement: when rx_packets last changed, or first sight,
        or the last `rearm`."""
        self._drops_at = np.zeros(0, dtype=np.uint64)
        """drops at `_since`."""
        self._accepted = np.zeros(0)
        """When rx_packets was last seen to grow (-inf: never; a peer first seen with
        packets counts from then; a peer in a new epoch keeps its old time)."""

    def _rows(self, sample: GatewaySample, ifnames: tuple[str, ...],
              hint: Alignment | None) -> np.ndarray | None:
        """For each row of `sample`, the row of the last sample with the same device and
        key, or -1; None when both list the same peers in the same order. The
        controller's alignment of the same two samples (`hint`) when it has one: the
        lookup costs a few sorts of the whole table."""
        p = sample.peers
        if hint is not None and self._at is not None and hint.prev_now == self._at:
            rows = hint.rows
            if rows is None and len(self._rx) == len(p):
                return None
            if rows is not None and rows.shape == (len(p),) and (
                    not rows.size or int(rows.max()) < len(self._rx)):
                return rows
            # A hint that does not fit this state (it cannot, unless the controller saw
            # other samples than this): look the rows up instead.
        if (ifnames == self._ifnames and p.key.shape == self._key.shape
                and np.array_equal(p.iface, self._iface) and same_keys(p.key, self._key)):
            return None
        return lookup(self._ifnames, self._iface, self._key, ifnames, p.iface, p.key)

    def update(self, sample: GatewaySample, window: float, min_drops: int,
               hint: Alignment | None = None) -> list[Stalled]:
        """Read one sample; the peers stalled as of it. `hint`: the controller's
        alignment of this sample with the one before (`Controller.alignment`)."""
        p = sample.peers
        now = float(sample.now)
        ifnames = tuple(i.name for i in sample.interfaces)
        rx, drops = p.rx_packets, p.drops
        rows = self._rows(sample, ifnames, hint)
        if rows is None and len(self._rx) != len(p):
            rows = np.full(len(p), -1) if not len(self._rx) else lookup(
                self._ifnames, self._iface, self._key, ifnames, p.iface, p.key)
        if rows is None:
            since, drops_at, accepted = self._since, self._drops_at, self._accepted
            last_rx = self._rx
            fresh = p.epoch != self._epoch
        else:
            known = rows >= 0
            if known.all():  # the same peers in another order: a plain gather
                since, drops_at, accepted, last_rx, epoch = (
                    a[rows] for a in (self._since, self._drops_at, self._accepted, self._rx,
                                      self._epoch))
                fresh = epoch != p.epoch
            else:
                src = np.where(known, rows, 0)
                take = (lambda a, fill: np.where(known, a[src], fill)) if len(self._rx) else (
                    lambda a, fill: np.full(len(p), fill, dtype=np.asarray(fill).dtype))
                since = take(self._since, now)
                drops_at = take(self._drops_at, np.uint64(0)).astype(np.uint64)
                accepted = take(self._accepted, -np.inf)
                last_rx = take(self._rx, np.uint64(0)).astype(np.uint64)
                fresh = ~known | (take(self._epoch, np.uint64(0)) != p.epoch)
        if fresh.any():
            # First sight, or a new epoch (re-created, module reloaded): judged from now.
            # A new epoch keeps `accepted`: it had a session before, so stalling before
            # its first packet is a stall (the daemon's retry after re-creating it).
            since = np.where(fresh, now, since)
            drops_at = np.where(fresh, drops, drops_at)
            accepted = np.where(fresh & (rx > 0), now, accepted)
            last_rx = np.where(fresh, rx, last_rx)
        moved = rx != last_rx
        if moved.any():
            since = np.where(moved, now, since)
            accepted = np.where(moved, now, accepted)
            drops_at = np.where(moved, drops, drops_at)
        self._ifnames, self._iface, self._key, self._epoch = ifnames, p.iface, p.key, p.epoch
        self._at, self._rx, self._drops = now, rx, drops
        self._since, self._drops_at, self._accepted = since, drops_at, accepted
        # drops never go back within an epoch (uapi); a reading that does (an odd kernel
        # answer) counts as none dropped rather than as 2**64.
        dropped = np.where(drops >= drops_at, drops - drops_at, 0)
        hit = (accepted > -np.inf) & (now - since >= window) & (dropped >= min_drops)
        if not hit.any():
            return []
        threaded = [i.threaded_napi for i in sample.interfaces]
        out = []
        for r in np.flatnonzero(hit).tolist():
            k = int(p.iface[r])
            out.append(Stalled(r, ifnames[k], raw_key(p.key[r]), float(since[r]),
                               int(dropped[r]), int(rx[r]), int(p.mode[r]),
                               bool(threaded[k])))
        return out

    def rearm(self, row: int) -> None:
        """Judge the peer at `row` (of the last sample) afresh from now: after a recovery
        step, a full window must pass before it counts as stalled again."""
        if self._at is not None and 0 <= row < len(self._rx):
            self._since = self._since.copy()
            self._drops_at = self._drops_at.copy()
            self._since[row] = self._at
            self._drops_at[row] = self._drops[row]

    def accepted_since(self, peers: list[PeerId], t: list[float]) -> np.ndarray:
        """Per peer: 1 if it accepted a packet after its time in `t`, 0 if not, -1 if
        the last sample does not have it (one lookup for all of them)."""
        if not peers:
            return np.zeros(0, dtype=np.int8)
        rows = rows_of(self._ifnames, self._iface, self._key, peers) if self._ifnames \
            else np.full(len(peers), -1)
        have = rows >= 0
        after = np.zeros(len(peers), dtype=bool)
        after[have] = self._accepted[rows[have]] > np.asarray(t)[have]
        return np.where(have, after.astype(np.int8), np.int8(-1))
