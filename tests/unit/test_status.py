"""The columnar status snapshot against the per-peer code it replaced: the same
PeerStatus objects, the same JSON bytes, the same metrics exposition, the same counts."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from factory import key
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from wghybrid.core.rates import KeyIndex, Rates
from wghybrid.core.status import (
    PeerColumns,
    build_status,
    columns,
    counts,
    encode_keys,
    has_peer,
    locate,
)
from wghybrid.daemon.api.fragments import Fragments, _peer_fields, _peer_tail
from wghybrid.daemon.metrics import peer_exposition
from wghybrid.model import (
    GatewaySample,
    InterfaceState,
    InterfaceStatus,
    Mode,
    Override,
    PeerClass,
    PeerId,
    PeerStatus,
    PeerTable,
    encode_key,
    raw_key,
)
from wghybrid.policy import Policy

pytestmark = pytest.mark.unit

KEYS = [key(1), key(2), key(3), bytes(32), b"\xff" * 32, b"\x07" * 31 + b"\0",
        key(1)[:8] + b"\x01" * 24]
NAMES = ("wg0", "wg1", "wg-ü")


def reference_status(
    sample: GatewaySample, rates: Rates, pclass: np.ndarray, mode_since: np.ndarray,
    pol: Policy, unmanaged: dict[PeerId, str], unsupported: dict[tuple[str, str], str],
    overrides: list[Override], wall_now: float,
) -> tuple[InterfaceStatus, ...]:
    """Controller.status() as it was: one PeerStatus per peer, per tick."""
    peers = sample.peers
    pins = {(o.interface, o.public_key): o for o in overrides if o.active(wall_now)}
    cores = frozenset(c for c in (pol.cores or range(sample.cores)) if c < sample.cores)
    out = []
    rx, tx, cpu = rates.rx_bps.tolist(), rates.tx_bps.tolist(), rates.cpu.tolist()
    pcl, mode = pclass.tolist(), peers.mode.tolist()
    core, since = peers.core.tolist(), mode_since.tolist()
    for k, dev in enumerate(sample.interfaces):
        rows = np.flatnonzero(peers.iface == k).tolist()
        plist = []
        for i in rows:
            pk = raw_key(peers.key[i])
            ov = pins.get((dev.name, pk))
            plist.append(PeerStatus(
                interface=dev.name, public_key=pk, name=pol.names.get(pk, ""),
                mode=Mode(mode[i]), pclass=PeerClass(pcl[i]), pinned=ov is not None,
                rx_bps=rx[i], tx_bps=tx[i], cpu=cpu[i], core=core[i],
                time_in_mode=sample.now - since[i], override=ov,
                unmanaged=unmanaged.get(PeerId(dev.name, pk)),
            ))
        inline_cores = frozenset(
            int(c) for c in peers.core[rows][peers.mode[rows] == Mode.INLINE] if c >= 0
        )
        out.append(InterfaceStatus(
            name=dev.name, cores=cores, crypt_cores=dev.crypt_cores, inline_cores=inline_cores,
            threaded_napi=dev.threaded_napi, peers=tuple(plist),
            unsupported=tuple(f"{knob}: {why}" for (ifname, knob), why
                              in sorted(unsupported.items()) if ifname == dev.name),
        ))
    return tuple(out)


def reference_fragments(snapshot: tuple[InterfaceStatus, ...],
                        live: dict[tuple[str, bytes], Override],
                        summaries: list[dict[str, Any]]) -> str:
    """api.Fragments.interfaces_json as it was: json.dumps of one dict per peer (the
    interfaces' summaries, tests/unit/test_status_view.py's, given)."""
    out = []
    for i, summary in zip(snapshot, summaries, strict=True):
        head = json.dumps({"name": i.name, "cores": _cpulist(i.cores),
                           "crypt_cores": _cpulist(i.crypt_cores),
                           "inline_cores": _cpulist(i.inline_cores),
                           "threaded_napi": i.threaded_napi,
                           "unsupported": list(i.unsupported),
                           "summary": summary}, allow_nan=False)[:-1]
        peers = ", ".join(
            _peer_tail(json.dumps(_peer_fields(p), allow_nan=False)[:-1],
                       live.get((p.interface, p.public_key)))
            for p in i.peers
        )
        out.append(f'{head}, "peers": [{peers}]}}')
    return ", ".join(out)


def _cpulist(cores: frozenset[int]) -> str:
    from wghybrid.model import format_cores

    return format_cores(cores) if cores else ""


def reference_peer_metrics(snapshot: tuple[InterfaceStatus, ...]) -> list[tuple[Any, ...]]:
    """The per-peer series metrics.peer_exposition writes, from PeerStatus objects (the
    counters: zero in these worlds): receive, transmit, CPU seconds by direction, info
    (empty labels left out)."""
    out: list[tuple[Any, ...]] = []
    for family in ("receive_bytes", "transmit_bytes", "cpu_seconds", "info"):
        for i in snapshot:
            for p in i.peers:
                labels = {"interface": p.interface, "public_key": encode_key(p.public_key)}
                if family == "cpu_seconds":
                    out.append((family, labels | {"direction": "rx"}, 0.0))
                    out.append((family, labels | {"direction": "tx"}, 0.0))
                    continue
                if family != "info":
                    out.append((family, labels, 0.0))
                    continue
                if p.name:
                    labels["name"] = p.name
                labels["mode"] = str(p.mode)
                labels["class"] = str(p.pclass)
                if p.core >= 0:
                    labels["core"] = str(p.core)
                out.append((family, labels, 1.0))
    return out


def peer_metric_samples(snapshot: tuple[InterfaceStatus, ...]) -> list[tuple[Any, ...]]:
    text = peer_exposition(snapshot).decode()
    return [(f.name.removeprefix("wghybrid_peer_"), s.labels, s.value)
            for f in text_string_to_metric_families(text) for s in f.samples]


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, -0.0, 1e16, 1.5e-7, 123456.789]))


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    ifnames = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=3, unique=True))
    n = draw(st.integers(0, 12))
    k = max(len(ifnames), 1)
    iface = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=n, max_size=n))
    n = len(keys)
    iface = iface[:n]
    col = st.lists(floats, min_size=n, max_size=n)
    sample = GatewaySample(
        now=draw(st.floats(0, 1e6)), cores=draw(st.integers(1, 8)),
        core_busy_ns=np.zeros(8, np.uint64),
        interfaces=tuple(InterfaceState(name, frozenset(draw(st.sets(st.integers(0, 7)))),
                                        draw(st.booleans())) for name in ifnames),
        peers=PeerTable.build(
            np.array(iface, dtype=np.int32), np.array(keys, dtype="S32"),
            mode=draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)),
            core=draw(st.lists(st.integers(-1, 7), min_size=n, max_size=n)),
        ),
    )
    zero = np.zeros(n)
    rates = Rates(sample.now, tuple(ifnames), sample.peers.iface.copy(), sample.peers.key.copy(),
                  np.zeros(n, np.uint64), np.zeros((7, n), np.uint64),
                  np.array(draw(col)), np.array(draw(col)), zero, zero, np.array(draw(col)),
                  zero, np.ones(n, dtype=bool))
    all_names = [*ifnames, "wg7"]
    some_key = st.sampled_from([*KEYS, key(9), b"short"])
    overrides = [
        Override(draw(st.sampled_from(all_names)), draw(some_key),
                 draw(st.sampled_from([None, Mode.INLINE, Mode.VANILLA])),
                 draw(st.sampled_from([None, 3])), draw(st.sampled_from([None, 50.0, 150.0])),
                 draw(st.sampled_from(["", "ops", 'q"\\ü\n'])))
        for _ in range(draw(st.integers(0, 4)))
    ]
    unmanaged = {
        PeerId(draw(st.sampled_from(all_names)), draw(some_key)):
            draw(st.sampled_from(["EPERM", "gone \u202e"]))
        for _ in range(draw(st.integers(0, 3)))
    }
    unmanaged[PeerId("wg0", b"junk")] = "never matches"
    return {
        "sample": sample, "rates": rates,
        "pclass": np.array(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.uint8),
        "mode_since": np.array(draw(st.lists(st.floats(0, 1e6), min_size=n, max_size=n))),
        "pol": Policy(names={k: draw(st.sampled_from(["", "alice", 'o"dd\x1b'])) for k in
                             draw(st.lists(st.sampled_from(KEYS), max_size=4))},
                      cores=draw(st.sampled_from([None, frozenset(), frozenset({1, 2, 9})]))),
        "unmanaged": unmanaged,
        "unsupported": {(name, "crypt_cores"): "EOPNOTSUPP" for name in ifnames[:1]},
        "overrides": overrides,
        "wall_now": 100.0,
    }


def _build(w: dict[str, Any]) -> tuple[InterfaceStatus, ...]:
    return build_status(w["sample"], w["rates"], w["pclass"], w["mode_since"], w["pol"],
                        w["unmanaged"], w["unsupported"], w["overrides"], w["wall_now"])


def _same(a: tuple[InterfaceStatus, ...], b: tuple[InterfaceStatus, ...]) -> None:
    """Equal field for field (by repr: NaN is not equal to itself)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.name, x.cores, x.crypt_cores, x.inline_cores, x.threaded_napi,
                x.unsupported) == (y.name, y.cores, y.crypt_cores, y.inline_cores,
                                   y.threaded_napi, y.unsupported)
        assert len(x.peers) == len(y.peers)
        assert repr(list(x.peers)) == repr(list(y.peers))


@settings(max_examples=300, deadline=None)
@given(w=worlds())
def test_columns_equal_the_per_peer_status(w: dict[str, Any]) -> None:
    ref = reference_status(**w)
    got = _build({**w})
    _same(got, ref)
    # what the consumers read, without PeerStatus objects
    assert counts(got) == (
        sum(len(i.peers) for i in ref),
        sum(p.mode == Mode.INLINE for i in ref for p in i.peers),
        sum(p.pinned for i in ref for p in i.peers),
        sum(p.unmanaged is not None for i in ref for p in i.peers),
    )
    live = {(o.interface, o.public_key): o for o in w["overrides"] if o.active(w["wall_now"])}
    for lv in ({}, live):
        assert Fragments.build(1, got).interfaces_json(lv) == reference_fragments(
            ref, lv, [columns(i).summary_json() for i in got])
        assert Fragments.build(1, ref).interfaces_json(lv) == reference_fragments(
            ref, lv, [columns(i).summary_json() for i in ref])
    assert peer_metric_samples(got) == reference_peer_metrics(ref)
    wanted = [(p.interface, p.public_key) for i in ref for p in i.peers]
    wanted += [(o.interface, o.public_key) for o in w["overrides"]]
    present = {(p.interface, p.public_key) for i in ref for p in i.peers}
    assert [at is not None for at in locate(got, wanted)] == [k in present for k in wanted]
    for i in got:
        for p in i.peers:
            assert has_peer(i, p.public_key)
        assert not has_peer(i, key(9)) and not has_peer(i, b"short")


@settings(max_examples=300, deadline=None)
@given(w=worlds())
def test_the_status_made_with_the_controllers_index_is_the_same(w: dict[str, Any]) -> None:
    """Overrides and unmanaged marks found through the kept index of the sample's peers
    (the controller's, no sort) mark the rows the lookups mark (duplicate keys too)."""
    s = w["sample"]
    ifnames = tuple(i.name for i in s.interfaces)
    index = KeyIndex(ifnames, s.peers.iface, s.peers.key) if ifnames else None
    got = build_status(s, w["rates"], w["pclass"], w["mode_since"], w["pol"], w["unmanaged"],
                       w["unsupported"], w["overrides"], w["wall_now"], index=index)
    _same(got, reference_status(**w))


@settings(max_examples=50, deadline=None)
@given(raw=st.lists(st.binary(min_size=32, max_size=32), max_size=20))
def test_encode_keys_is_base64(raw: list[bytes]) -> None:
    assert encode_keys(np.array(raw, dtype="S32")) == [encode_key(k) for k in raw]


def test_columns_are_made_lazily_and_kept() -> None:
    cols = PeerColumns("wg0", np.array([key(1), key(2)], dtype="S32"),
                       np.array([1, 0], np.uint8), np.array([0, 1], np.uint8),
                       np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([0.5, 0.25]),
                       np.array([3, -1], np.int32), np.array([10.0, 20.0]),
                       names={key(2): "bob"})
    assert cols._objects is None
    first = cols[1]
    assert first == PeerStatus("wg0", key(2), "bob", Mode.VANILLA, PeerClass.ELEPHANT, False,
                               2.0, 4.0, 0.25, -1, 20.0)
    assert cols[1] is first and list(cols)[1] is first
    assert cols.name_at(0) == "" and cols.names() == ["", "bob"]
    status = InterfaceStatus("wg0", frozenset(), frozenset(), frozenset(), False, cols)
    assert columns(status) is cols
    hand = InterfaceStatus("wg0", frozenset(), frozenset(), frozenset(), False, (first,))
    assert list(columns(hand)) == [first]
    assert math.isclose(columns(hand).cpu[0], 0.25)
