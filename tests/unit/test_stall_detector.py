"""The stalled-decryption detector (wghybrid.core.stall): issue 12, finding 8."""

from __future__ import annotations

import numpy as np
import pytest

from wghybrid.core.stall import StallDetector
from wghybrid.model import GatewaySample, InterfaceState, Mode, PeerId, PeerTable

pytestmark = pytest.mark.unit

WINDOW, MIN_DROPS = 15.0, 64


def key(i: int) -> bytes:
    return bytes([i + 1]) * 31 + b"\0"  # a trailing NUL, as numpy would lose it


def sample(now: float, rx: list[int], drops: list[int], *, epoch: list[int] | None = None,
           order: list[int] | None = None, threaded: bool = True) -> GatewaySample:
    n = len(rx)
    rows = list(range(n)) if order is None else order
    peers = PeerTable.build(
        np.zeros(n, np.int32), np.array([key(i) for i in rows], dtype="S32"),
        rx_packets=[rx[i] for i in rows], drops=[drops[i] for i in rows],
        epoch=[(epoch or [1] * n)[i] for i in rows], mode=[Mode.VANILLA] * n)
    return GatewaySample(now, 2, np.zeros(2, np.uint64),
                         (InterfaceState("wg0", frozenset({0, 1}), threaded),), peers)


def run(det: StallDetector, seconds: range, rx, drops, **kw) -> list[list[int]]:
    """Feed one sample per second; which key indexes were stalled at each."""
    out = []
    for t in seconds:
        found = det.update(sample(float(t), rx(t), drops(t), **kw), WINDOW, MIN_DROPS)
        out.append(sorted(s.public_key[0] - 1 for s in found))
    return out


def test_a_peer_that_keeps_accepting_is_never_stalled_however_much_it_drops() -> None:
    det = StallDetector()
    hits = run(det, range(60), lambda t: [100 * t + 1], lambda t: [1000 * t])
    assert hits == [[]] * 60


def test_accepting_nothing_while_dropping_is_a_stall_after_one_window() -> None:
    det = StallDetector()
    # Accepts until t=10, then nothing while 500 packets a second are dropped.
    hits = run(det, range(40), lambda t: [100 * min(t, 10) + 1],
               lambda t: [500 * max(0, t - 10)])
    first = next(t for t, h in enumerate(hits) if h)
    assert first == 10 + WINDOW
    assert all(h == [0] for h in hits[first:])
    s = det.update(sample(40.0, [1001], [15000]), WINDOW, MIN_DROPS)[0]
    assert (s.since, s.dropped, s.rx_packets, s.threaded_napi) == (10.0, 15000, 1001, True)
    assert s.public_key == key(0) and s.interface == "wg0"


def test_too_few_drops_is_no_stall() -> None:
    det = StallDetector()
    hits = run(det, range(60), lambda t: [50], lambda t: [min(t, MIN_DROPS - 1)])
    assert hits == [[]] * 60


def test_a_peer_that_never_accepted_is_not_stalled_it_has_no_session() -> None:
    """Staged packets purged while the handshake fails are drops too, with rx at 0."""
    det = StallDetector()
    hits = run(det, range(60), lambda t: [0], lambda t: [1000 * t])
    assert hits == [[]] * 60


def test_a_one_way_tunnel_answered_by_keepalives_is_not_stalled() -> None:
    """This side sends (and drops some of what it sends); the far end answers only with
    a keepalive every 10 s (passive keepalive): rx moves every 10 s, under the window."""
    det = StallDetector()
    hits = run(det, range(120), lambda t: [1 + t // 10], lambda t: [300 * t])
    assert hits == [[]] * 120


def test_rearm_restarts_the_window() -> None:
    det = StallDetector()
    run(det, range(30), lambda t: [5], lambda t: [100 * t])
    found = det.update(sample(30.0, [5], [3000]), WINDOW, MIN_DROPS)
    assert found
    det.rearm(found[0].row)
    assert det.update(sample(31.0, [5], [3100]), WINDOW, MIN_DROPS) == []
    assert det.update(sample(30.0 + WINDOW, [5], [4500]), WINDOW, MIN_DROPS) != []


def test_a_new_epoch_starts_afresh_and_counts_as_accepting_once_it_has_packets() -> None:
    det = StallDetector()
    run(det, range(30), lambda t: [5], lambda t: [100 * t])
    assert det.accepted_since([PeerId("wg0", key(0))], [1.0]).tolist() == [0]
    # Re-created: epoch 2, counters from zero; it has accepted 3 packets by t=31.
    assert det.update(sample(31.0, [3], [0], epoch=[2]), WINDOW, MIN_DROPS) == []
    assert det.accepted_since([PeerId("wg0", key(0)), PeerId("wg0", key(9))],
                              [30.5, 0.0]).tolist() == [1, -1]
    # A new epoch that accepts nothing and drops is judged over a whole window again.
    hits = run(det, range(32, 60), lambda t: [3], lambda t: [100 * (t - 31)], epoch=[2])
    assert next(i + 32 for i, h in enumerate(hits) if h) == 31 + WINDOW


def test_state_follows_the_peer_when_rows_move_and_peers_come_and_go() -> None:
    det = StallDetector()
    # Peer 0 stalls at t=0; peer 1 is healthy; rows are reordered every other tick and a
    # third peer appears at t=5.
    for t in range(20):
        n = 3 if t >= 5 else 2
        rx = [7, 10 * t + 1, 10 * t + 1][:n]
        drops = [100 * t, 0, 0][:n]
        order = list(reversed(range(n))) if t % 2 else list(range(n))
        found = det.update(sample(float(t), rx, drops, order=order), WINDOW, MIN_DROPS)
        stalled = [s.public_key for s in found]
        assert stalled == ([key(0)] if t >= WINDOW else []), t


def test_drops_going_backwards_is_not_a_huge_count() -> None:
    det = StallDetector()
    det.update(sample(0.0, [5], [1000]), WINDOW, MIN_DROPS)
    assert det.update(sample(20.0, [5], [10]), WINDOW, MIN_DROPS) == []


def test_the_controllers_alignment_gives_the_same_answers_as_a_lookup() -> None:
    """With the controller's alignment (`hint`), right or unusable, the detector finds
    what it finds on its own."""
    from wghybrid.core.rates import lookup
    from wghybrid.core.stall import Alignment

    own, hinted, bad = StallDetector(), StallDetector(), StallDetector()
    prev = None
    for t in range(40):
        n = 3 if t >= 5 else 2
        rx = [7, 10 * t + 1, 10 * t + 1][:n]
        drops = [100 * t, 0, 5 * t][:n]
        order = list(reversed(range(n))) if t % 3 else list(range(n))
        s = sample(float(t), rx, drops, order=order)
        if prev is None:
            hint = Alignment(None, None)
        else:
            rows = lookup(("wg0",), prev.peers.iface, prev.peers.key, ("wg0",),
                          s.peers.iface, s.peers.key)
            hint = Alignment(prev.now, rows)
        wrong = Alignment(prev.now if prev else None, np.zeros(n + 1, dtype=np.intp))
        a = [x.public_key for x in own.update(s, WINDOW, MIN_DROPS)]
        b = [x.public_key for x in hinted.update(s, WINDOW, MIN_DROPS, hint)]
        c = [x.public_key for x in bad.update(s, WINDOW, MIN_DROPS, wrong)]
        assert a == b == c == ([key(0)] if t >= WINDOW else []), t
        prev = s
