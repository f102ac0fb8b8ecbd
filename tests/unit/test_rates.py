"""Rates from cumulative counters: resets, churn, late and missed samples."""

from __future__ import annotations

import numpy as np
import pytest
from factory import Gateway, key
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid.core.rates import (
    KeyIndex,
    lookup,
    realign,
    reindex,
    rows_of,
    same_rows,
    update_rates,
    update_rates_pair,
)
from wghybrid.model import GatewaySample, InterfaceState, PeerId, PeerTable, raw_key

pytestmark = pytest.mark.unit


def sample(now: float, keys: list[int], rx: list[int], epoch: list[int] | None = None,
           cpu: list[int] | None = None) -> GatewaySample:
    n = len(keys)
    return GatewaySample(
        now=now, cores=4, core_busy_ns=np.zeros(4, dtype=np.uint64),
        interfaces=(InterfaceState("wg0", frozenset({0}), False),),
        peers=PeerTable.build(
            np.zeros(n, dtype=np.int32), np.array([key(k) for k in keys], dtype="S32"),
            rx_bytes=rx, epoch=epoch or [1] * n, rx_cpu_ns=cpu or [0] * n,
        ),
    )


def test_first_reading_is_a_baseline_then_rates_follow() -> None:
    r = update_rates(None, sample(0.0, [1], [1000]), half_life=0.0)
    assert not r.valid[0] and r.rx_bps[0] == 0
    r = update_rates(r, sample(1.0, [1], [2000], cpu=[500_000_000]), half_life=0.0)
    assert r.valid[0]
    assert r.rx_bps[0] == pytest.approx(8000.0)
    assert r.cpu[0] == pytest.approx(0.5)


def test_late_sample_weighs_by_the_time_it_covers() -> None:
    r = update_rates(None, sample(0.0, [1], [0]), half_life=2.0)
    r = update_rates(r, sample(1.0, [1], [1000]), half_life=2.0)  # seeds at 8000 b/s
    on_time = update_rates(r, sample(2.0, [1], [1000]), half_life=2.0)  # 1 s of silence
    late = update_rates(r, sample(5.0, [1], [1000]), half_life=2.0)  # 4 s of silence
    assert on_time.rx_bps[0] == pytest.approx(8000 * 2 ** -0.5)
    assert late.rx_bps[0] == pytest.approx(8000 * 2 ** -2)


def test_counter_reset_rebaselines_instead_of_a_negative_or_huge_rate() -> None:
    r = update_rates(None, sample(0.0, [1, 2], [0, 0]), half_life=0.0)
    r = update_rates(r, sample(1.0, [1, 2], [1000, 1000]), half_life=0.0)
    # module reloaded: counters restart from small numbers, epoch changes for peer 1,
    # peer 2 only goes backwards (same epoch): both are resets.
    r2 = update_rates(r, sample(2.0, [1, 2], [10, 5], epoch=[2, 1]), half_life=0.0)
    assert list(r2.rx_bps) == [8000.0, 8000.0]  # held, not -7920 or 2^64
    r3 = update_rates(r2, sample(3.0, [1, 2], [1010, 1005], epoch=[2, 1]), half_life=0.0)
    assert list(r3.rx_bps) == [8000.0, 8000.0]


def test_counter_reset_with_bigger_numbers_is_caught_by_epoch() -> None:
    r = update_rates(None, sample(0.0, [1], [0]), half_life=0.0)
    r = update_rates(r, sample(1.0, [1], [1000]), half_life=0.0)
    r = update_rates(r, sample(2.0, [1], [10**12], epoch=[7]), half_life=0.0)
    assert r.rx_bps[0] == 8000.0


def test_peers_appear_and_vanish() -> None:
    r = update_rates(None, sample(0.0, [1, 2], [0, 0]), half_life=0.0)
    r = update_rates(r, sample(1.0, [1, 2], [1000, 2000]), half_life=0.0)
    r = update_rates(r, sample(2.0, [3, 2], [5, 4000]), half_life=0.0)  # 1 gone, 3 new
    assert [bytes(k)[:4] for k in r.key] == [key(3)[:4], key(2)[:4]]
    assert not r.valid[0] and r.rx_bps[0] == 0
    assert r.valid[1] and r.rx_bps[1] == 16000.0
    r = update_rates(r, sample(3.0, [3, 2, 1], [1005, 6000, 10**9]), half_life=0.0)
    assert r.rx_bps[0] == 8000.0 and r.rx_bps[1] == 16000.0
    assert not r.valid[2]  # came back: a new baseline, not the bytes since it left


def test_time_not_advancing_changes_nothing() -> None:
    r = update_rates(None, sample(0.0, [1], [0]), half_life=0.0)
    r = update_rates(r, sample(1.0, [1], [1000]), half_life=0.0)
    same = update_rates(r, sample(1.0, [1], [5000]), half_life=0.0)
    assert same.rx_bps[0] == 8000.0 and same.now == 1.0
    after = update_rates(same, sample(2.0, [1], [2000]), half_life=0.0)
    assert after.rx_bps[0] == 8000.0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(0.05, 10.0),  # dt
            st.integers(0, 10**9),  # bytes added
            st.booleans(),  # reset?
        ),
        min_size=1, max_size=30,
    )
)
def test_rates_are_finite_non_negative_and_bounded(steps: list[tuple[float, int, bool]]) -> None:
    """Whatever the counters do, smoothed rates stay within the largest true rate seen."""
    now, total, epoch = 0.0, 0, 1
    r = update_rates(None, sample(now, [1], [0]), half_life=3.0)
    peak = 0.0
    for dt, added, reset in steps:
        now += dt
        if reset:
            total, epoch = added, epoch + 1
        else:
            total += added
            peak = max(peak, added * 8 / dt)
        r = update_rates(r, sample(now, [1], [total], epoch=[epoch]), half_life=3.0)
        assert np.isfinite(r.rx_bps).all()
        assert 0.0 <= r.rx_bps[0] <= peak * (1 + 1e-9) + 1e-9


def test_vectorised_over_many_peers() -> None:
    gw = Gateway(1000)
    r = update_rates(None, gw.sample(), half_life=0.0)
    gw.advance(2.0, np.linspace(0.0, 4.0, 1000))
    r = update_rates(r, gw.sample(), half_life=0.0)
    np.testing.assert_allclose(r.gbps, np.linspace(0.0, 4.0, 1000), rtol=1e-6, atol=1e-6)


# -- churn: the vectorised alignment against a dict of identities --------------------------


def reference_identities(ifnames: tuple[str, ...], iface: np.ndarray, keys: np.ndarray
                         ) -> list[bytes]:
    names = [n.encode() for n in ifnames]
    return [names[i] + b"/" + raw_key(k) for i, k in zip(iface.tolist(), keys.tolist(),
                                                         strict=True)]


def reference_lookup(old: tuple[tuple[str, ...], np.ndarray, np.ndarray],
                     new: tuple[tuple[str, ...], np.ndarray, np.ndarray]) -> list[int]:
    """The per-peer dict the alignment used to build (the last of equal identities wins)."""
    index = {ident: i for i, ident in enumerate(reference_identities(*old))}
    return [index.get(ident, -1) for ident in reference_identities(*new)]


KEY_POOL = [
    key(1), key(2), key(3), bytes(32), b"\xff" * 32,
    key(1)[:8] + b"\x01" * 24,  # the first 8 bytes of key(1): same digest, other key
    b"\x07" * 31 + b"\0",  # trailing NUL, which an "S32" array hides
]
NAMES = ("wg0", "wg1", "wg-ü")


@st.composite
def tables(draw: st.DrawFn, max_rows: int = 12) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    ifnames = tuple(draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3)))
    rows = draw(st.lists(st.tuples(st.integers(0, len(ifnames) - 1),
                                   st.integers(0, len(KEY_POOL) - 1)), max_size=max_rows))
    iface = np.array([i for i, _ in rows], dtype=np.int32)
    keys = np.array([KEY_POOL[k] for _, k in rows], dtype="S32")
    return ifnames, iface, keys


@settings(max_examples=300, deadline=None)
@given(old=tables(), new=tables())
def test_lookup_equals_the_dict_of_identities(
    old: tuple[tuple[str, ...], np.ndarray, np.ndarray],
    new: tuple[tuple[str, ...], np.ndarray, np.ndarray],
) -> None:
    """Duplicates, names listed twice, digest collisions, NUL-ended keys: same rows."""
    assert lookup(*old, *new).tolist() == reference_lookup(old, new)


def many_peers(seed: int, n: int, new: int) -> tuple[np.ndarray, ...]:
    """Keys and interfaces of n peers, a permutation of them, and the same table with
    `new` of them gone (`keep`: the rows left) and `new` new ones at the end."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, (n, 32), dtype=np.uint8).view("S32").ravel()
    iface = (rng.random(n) < 0.3).astype(np.int32)
    perm = rng.permutation(n)
    keep = np.sort(rng.choice(n, n - new, replace=False))
    new_keys = np.concatenate([keys[keep], rng.integers(0, 256, (new, 32), np.uint8)
                               .view("S32").ravel()])
    new_iface = np.concatenate([iface[keep], np.zeros(new, np.int32)])
    return keys, iface, perm, keep, new_keys, new_iface


def test_lookup_many_peers_churn_and_reshuffle() -> None:
    keys, iface, perm, keep, new_keys, new_iface = many_peers(3, 5000, 50)
    names = ("wg0", "wg1")
    assert lookup(names, iface, keys, names, iface[perm], keys[perm]).tolist() == perm.tolist()
    # 1 % gone, 1 % new at the end, and wg1 renamed: its peers are new peers
    old, new = (names, iface, keys), (("wg0", "wg9"), new_iface, new_keys)
    assert lookup(*old, *new).tolist() == reference_lookup(old, new)


def test_rows_of_finds_keys_by_interface_name() -> None:
    names = ("wg0", "wg1")
    iface = np.array([0, 1, 0], dtype=np.int32)
    keys = np.array([key(1), key(1), key(2)], dtype="S32")
    wanted = [PeerId("wg1", key(1)), PeerId("wg0", key(2)), PeerId("wg2", key(1)),
              PeerId("wg0", key(3))]
    assert rows_of(names, iface, keys, wanted).tolist() == [1, 2, -1, -1]
    assert rows_of(names, iface, keys, []).tolist() == []


def test_an_interface_index_out_of_range_raises_as_before() -> None:
    with pytest.raises(IndexError):
        lookup(("wg0",), np.array([1], dtype=np.int32), np.array([key(1)], dtype="S32"),
               ("wg0",), np.array([0], dtype=np.int32), np.array([key(1)], dtype="S32"))


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(tables(max_rows=8), min_size=2, max_size=6))
def test_churned_rates_equal_the_reference_alignment(
    ticks: list[tuple[tuple[str, ...], np.ndarray, np.ndarray]],
) -> None:
    """Rates folded through churn are those of the dict alignment, row for row."""
    r = None
    for t, (ifnames, iface, keys) in enumerate(ticks):
        n = len(keys)
        s = GatewaySample(
            now=float(t), cores=2, core_busy_ns=np.zeros(2, np.uint64),
            interfaces=tuple(InterfaceState(name, frozenset(), False) for name in ifnames),
            peers=PeerTable.build(iface, keys, rx_bytes=np.arange(n, dtype=np.uint64) * 1000
                                  * (t + 1), epoch=np.ones(n, np.uint64)),
        )
        if r is not None:
            rows = realign(r, s)
            if same_rows(r, ifnames, s.peers):  # the fast path, as before: row for row
                assert rows is None
            else:
                want = reference_lookup((r.ifnames, r.iface, r.key), (ifnames, iface, keys))
                assert rows is not None and rows.tolist() == want
                expected = update_rates(r, s, 0.0, np.asarray(want, dtype=np.int64))
                got = update_rates(r, s, 0.0)
                np.testing.assert_array_equal(got.rx_bps, expected.rx_bps)
                np.testing.assert_array_equal(got.valid, expected.valid)
        r = update_rates(r, s, 0.0)


# -- the kept index: one sort per changed peer set, the same rows as the lookup ------------


@settings(max_examples=300, deadline=None)
@given(old=tables(), new=tables(), wanted=tables(max_rows=5))
def test_key_index_finds_the_rows_the_dict_of_identities_finds(
    old: tuple[tuple[str, ...], np.ndarray, np.ndarray],
    new: tuple[tuple[str, ...], np.ndarray, np.ndarray],
    wanted: tuple[tuple[str, ...], np.ndarray, np.ndarray],
) -> None:
    """Duplicates, names listed twice or renamed, digest collisions, NUL-ended keys."""
    index_old, index_new = KeyIndex(*old), KeyIndex(*new)
    assert index_new.rows_in(index_old).tolist() == reference_lookup(old, new)
    names, iface, keys = wanted
    peers = [PeerId(names[i], raw_key(k)) for i, k in zip(iface.tolist(), keys.tolist(),
                                                          strict=True)]
    assert index_old.rows_of(peers).tolist() == rows_of(*old, peers).tolist()


def test_key_index_of_many_peers_churn_and_reshuffle() -> None:
    n = 20_000
    keys, iface, perm, keep, new_keys, new_iface = many_peers(5, n, 200)
    names = ("wg0", "wg1")
    old = KeyIndex(names, iface, keys)
    assert KeyIndex(names, iface[perm], keys[perm]).rows_in(old).tolist() == perm.tolist()
    got = KeyIndex(names, new_iface, new_keys).rows_in(old)
    assert got.tolist() == lookup(names, iface, keys, names, new_iface, new_keys).tolist()
    assert got[:n - 200].tolist() == keep.tolist() and (got[n - 200:] == -1).all()


def counted_indexes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    made: list[int] = []
    real = KeyIndex.__init__

    def init(self: KeyIndex, *args: object) -> None:
        made.append(1)
        real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(KeyIndex, "__init__", init)
    return made


def test_reindex_sorts_a_peer_set_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same peers in the same order: the index is kept (no sort); another peer set:
    one new index, which the next tick's alignment starts from."""
    made = counted_indexes(monkeypatch)
    s0 = sample(0.0, [1, 2, 3], [0, 0, 0])
    r0 = update_rates(None, s0, 0.0)
    rows, index = reindex(None, None, s0)
    assert rows is None and index is None and not made
    index = KeyIndex(r0.ifnames, r0.iface, r0.key)
    made.clear()
    rows, kept = reindex(r0, index, sample(1.0, [1, 2, 3], [5, 5, 5]))
    assert rows is None and kept is index and not made
    s2 = sample(2.0, [3, 9, 1], [9, 9, 9])
    rows, new = reindex(r0, index, s2)
    assert made == [1] and new is not None and new is not index
    assert rows is not None and rows.tolist() == [2, -1, 0] == realign(r0, s2).tolist()


@settings(max_examples=100, deadline=None)
@given(ticks=st.lists(st.tuples(tables(max_rows=8), st.sampled_from([0.0, 1.0, 2.5])),
                      min_size=2, max_size=6))
def test_the_pair_of_rates_equals_two_folds(
    ticks: list[tuple[tuple[tuple[str, ...], np.ndarray, np.ndarray], float]],
) -> None:
    """Smoothed and unsmoothed rates folded together are those folded one by one, bit for
    bit, through churn, restarts and readings whose time does not advance."""
    slow = fast = ref_slow = ref_fast = None
    now = 0.0
    for t, ((ifnames, iface, keys), step) in enumerate(ticks):
        n = len(keys)
        now += step
        s = GatewaySample(
            now=now, cores=2, core_busy_ns=np.full(2, int(now * 1e8), np.uint64),
            interfaces=tuple(InterfaceState(name, frozenset(), False) for name in ifnames),
            peers=PeerTable.build(iface, keys, rx_bytes=np.arange(n, dtype=np.uint64) * 1000
                                  * (t + 1), rx_cpu_ns=np.full(n, 10**6 * t, np.uint64),
                                  epoch=np.full(n, 1 + t // 3, np.uint64)),
        )
        slow, fast = update_rates_pair(slow, fast, s, 2.0)
        assert slow.counters is fast.counters  # one fold for both, not two
        ref_slow, ref_fast = update_rates(ref_slow, s, 2.0), update_rates(ref_fast, s, 0.0)
        for got, want in ((slow, ref_slow), (fast, ref_fast)):
            assert got.now == want.now
            for f in ("rx_bps", "tx_bps", "rx_pps", "tx_pps", "cpu", "drop_pps", "valid",
                      "counters", "epoch", "core_busy", "busy_ns", "iface"):
                np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
