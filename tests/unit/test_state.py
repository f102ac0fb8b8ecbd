"""Persisted daemon state: round trip, atomic replacement, refusal of a corrupt file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wghybrid.daemon.state import (
    DaemonState,
    StateError,
    StateStore,
    Unmanaged,
    override_from_dict,
    override_to_dict,
    state_from_dict,
    state_to_dict,
    write_atomic,
)
from wghybrid.model import Mode, Override, encode_key

pytestmark = pytest.mark.unit

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))

keys = st.binary(min_size=32, max_size=32)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
overrides = st.builds(
    Override,
    interface=st.text(min_size=1, max_size=15),
    public_key=keys,
    mode=st.none() | st.sampled_from(Mode),
    core=st.none() | st.integers(0, 4096),
    expires=st.none() | finite,
    reason=st.text(max_size=50),
    created=finite,
)
states = st.builds(
    DaemonState,
    overrides=st.lists(overrides, max_size=5).map(tuple),
    unmanaged=st.lists(
        st.builds(Unmanaged, st.text(min_size=1, max_size=15), keys, st.text(max_size=30)),
        max_size=3,
    ).map(tuple),
)


@given(states)
def test_state_round_trips_through_json(state: DaemonState) -> None:
    text = json.dumps(state_to_dict(state))
    assert state_from_dict(json.loads(text)) == state


def test_store_saves_and_loads(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load() == DaemonState()
    state = DaemonState(
        (Override("wg0", KEY_A, Mode.INLINE, 3, None, "pinned by ops", 1700000000.0),),
        (Unmanaged("wg1", KEY_B, "no such peer"),),
    )
    store.save(state)
    assert StateStore(tmp_path / "state").load() == state
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == oct(0o750)
    # nothing but the state file is left behind
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["state.json"]


def test_store_removes_a_torn_temporary_and_keeps_the_old_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = DaemonState((Override("wg0", KEY_A, Mode.VANILLA),))
    store.save(state)
    # a writer killed between open() and rename() leaves its temporary file behind
    (tmp_path / ".state.json.4242.tmp").write_text('{"version": 1, "overr')
    assert store.load() == state
    assert not (tmp_path / ".state.json.4242.tmp").exists()


def test_write_atomic_replaces_whole_content(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    write_atomic(path, b"old content that is long")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "Expecting property name"),
        (b"[]", "not a JSON object"),
        (b'{"version": 7}', "version 7"),
        (b'{"version": 1, "overrides": [{"interface": "wg0", "public_key": "x"}]}',
         "not 44 characters"),
        (b'{"version": 1, "overrides": [{"interface": "wg0", "public_key": "'
         + encode_key(KEY_A).encode() + b'", "mode": "fast"}]}', "not vanilla or inline"),
        (b'{"version": 1, "overrides": [], "unmanaged": [{"interface": 3}]}', "malformed"),
    ],
)
def test_corrupt_state_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    (tmp_path / "state.json").write_bytes(content)
    with pytest.raises(StateError) as exc:
        StateStore(tmp_path).load()
    assert str(tmp_path / "state.json") in str(exc.value)
    assert reason in str(exc.value)


@pytest.mark.parametrize(
    "field, value",
    [("core", -1), ("core", True), ("core", 1.5), ("expires", float("inf")), ("created", "x"),
     ("reason", 5), ("interface", "")],
)
def test_override_from_dict_rejects_bad_fields(field: str, value: object) -> None:
    d = override_to_dict(Override("wg0", KEY_A, Mode.INLINE, 2, None, "", 0.0))
    d[field] = value
    with pytest.raises(ValueError):
        override_from_dict(d)


def test_one_peer_identity_everywhere() -> None:
    """PeerId is how every layer keys a peer: operations, overrides and status rows give
    the same one, it equals the plain pair that JSON and state files decode to (so dicts
    keyed either way agree), and it prints as operators abbreviate peers."""
    from wghybrid.model import Mode, PeerClass, PeerId, PeerStatus, SetPeerCore, SetPeerMode

    k = bytes(range(32))
    peer = PeerId("wg0", k)
    assert peer == ("wg0", k) and hash(peer) == hash(("wg0", k))
    assert {("wg0", k): 1}[peer] == 1
    assert str(peer) == "wg0/AAECAwQF"
    assert SetPeerMode("wg0", k, Mode.INLINE).peer == peer
    assert SetPeerCore("wg0", k, 3).peer == peer
    assert Override("wg0", k, Mode.VANILLA).peer == peer
    status = PeerStatus("wg0", k, "", Mode.INLINE, PeerClass.MOUSE, False, 0.0, 0.0, 0.0,
                        -1, 0.0)
    assert status.peer == peer
    assert SetPeerMode("wg0", k, Mode.INLINE).describe() == "peer wg0/AAECAwQF mode inline"
