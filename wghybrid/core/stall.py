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

from wghybrid.model import GatewaySample, raw_key

_ID = np.dtype([("iface", "<i4"), ("key", "S32"), ("epoch", "<u8")])
"""A peer's identity in one data plane: device, key and counter epoch (a re-created
peer, or a reloaded module, is a new identity whose counters start again)."""


_PEER = np.dtype([("iface", "<i4"), ("key", "S32")])


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


def _peer_ids(ident: np.ndarray) -> np.ndarray:
    """(device, key) of identities, without the epoch."""
    out = np.empty(len(ident), dtype=_PEER)
    out["iface"] = ident["iface"]
    out["key"] = ident["key"]
    return out


class StallDetector:
    """Per peer, when it last accepted a packet and how many it has dropped since."""

    def __init__(self) -> None:
        self._id = np.zeros(0, dtype=_ID)
        self._rx = np.zeros(0, dtype=np.uint64)
        self._drops = np.zeros(0, dtype=np.uint64)
        """The last sample's rx_packets and drops."""
        self._since = np.zeros(0)
        """Start of the current judgement: when rx_packets last changed, or first sight,
        or the last `rearm`."""
        self._drops_at = np.zeros(0, dtype=np.uint64)
        """drops at `_since`."""
        self._accepted = np.zeros(0)
        """When rx_packets was last seen to grow (-inf: never in this epoch; a peer first
        seen with packets counts from then)."""
        self._now = 0.0

    def _align(self, ident: np.ndarray, rx: np.ndarray, drops: np.ndarray,
               now: float) -> None:
        """Carry each peer's state over to the new sample's rows (a peer seen first, or in
        a new epoch, starts from now)."""
        old = self._id
        since = np.full(len(ident), now)
        drops_at = drops.copy()
        last_rx = rx.copy()
        last_drops = drops.copy()
        accepted = np.where(rx > 0, now, -np.inf)
        if len(old):
            order = np.argsort(old, kind="stable")
            pos = np.minimum(np.searchsorted(old[order], ident), len(old) - 1)
            src = order[pos]
            hit = old[src] == ident
            s = src[hit]
            since[hit] = self._since[s]
            drops_at[hit] = self._drops_at[s]
            last_rx[hit] = self._rx[s]
            last_drops[hit] = self._drops[s]
            accepted[hit] = self._accepted[s]
            if not hit.all():
                # A peer in a new epoch (re-created, or the module reloaded) keeps its
                # past: it had a session before, so stalling again before its first
                # packet is a stall (the daemon's retry after re-creating it).
                new = np.flatnonzero(~hit)
                old_ik, new_ik = _peer_ids(old), _peer_ids(ident[new])
                order = np.argsort(old_ik, kind="stable")
                pos = np.minimum(np.searchsorted(old_ik[order], new_ik), len(old) - 1)
                src = order[pos]
                same = old_ik[src] == new_ik
                at = new[same]
                accepted[at] = np.maximum(accepted[at], self._accepted[src[same]])
        self._id, self._since, self._drops_at = ident, since, drops_at
        self._rx, self._drops, self._accepted = last_rx, last_drops, accepted

    def update(self, sample: GatewaySample, window: float, min_drops: int) -> list[Stalled]:
        """Read one sample; the peers stalled as of it."""
        p = sample.peers
        now = float(sample.now)
        ident = np.empty(len(p), dtype=_ID)
        ident["iface"] = p.iface
        ident["key"] = p.key
        ident["epoch"] = p.epoch
        rx, drops = p.rx_packets, p.drops
        if len(ident) != len(self._id) or not np.array_equal(ident, self._id):
            self._align(ident, rx, drops, now)
        moved = rx != self._rx
        if moved.any():
            self._since[moved] = now
            self._accepted[moved] = now
            self._drops_at[moved] = drops[moved]
            self._rx = rx.copy()
        self._drops = drops.copy()
        self._now = now
        # drops never go back within an epoch (uapi); a reading that does (an odd kernel
        # answer) counts as none dropped rather than as 2**64.
        dropped = np.where(drops >= self._drops_at, drops - self._drops_at, 0)
        hit = ((self._accepted > -np.inf) & (now - self._since >= window)
               & (dropped >= min_drops))
        if not hit.any():
            return []
        names = [i.name for i in sample.interfaces]
        threaded = [i.threaded_napi for i in sample.interfaces]
        out = []
        for r in np.flatnonzero(hit).tolist():
            k = int(p.iface[r])
            out.append(Stalled(r, names[k], raw_key(p.key[r]), float(self._since[r]),
                               int(dropped[r]), int(rx[r]), int(p.mode[r]),
                               bool(threaded[k])))
        return out

    def rearm(self, row: int) -> None:
        """Judge the peer at `row` (of the last sample) afresh from now: after a recovery
        step, a full window must pass before it counts as stalled again."""
        if 0 <= row < len(self._id):
            self._since[row] = self._now
            self._drops_at[row] = self._drops[row]

    def accepted_since(self, interface_index: int, public_key: bytes, t: float) -> bool:
        """Whether the peer (in any epoch the last sample has) accepted a packet after `t`."""
        if not len(self._id):
            return False
        key = np.frombuffer(raw_key(public_key), dtype="S32")[0]
        rows = (self._id["iface"] == interface_index) & (self._id["key"] == key)
        return bool((self._accepted[rows] > t).any())
