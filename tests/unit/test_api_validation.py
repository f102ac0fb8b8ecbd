"""The API's request validation and JSON shapes, without a server."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import pytest

from wghybrid.daemon.api.base import ApiError
from wghybrid.daemon.api.fragments import Fragments, interface_json, peer_json
from wghybrid.daemon.api.routes import parse_override
from wghybrid.model import (
    InterfaceStatus,
    Mode,
    Override,
    PeerClass,
    PeerStatus,
    encode_key,
    parse_cores,
)

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
KEY = bytes(range(1, 33))
OTHER = bytes(range(100, 132))
PEER = PeerStatus("wg0", KEY, "alice", Mode.INLINE, PeerClass.MOUSE, False, 1e6, 2e6, 0.25, 3,
                  12.5)
SNAPSHOT = (
    InterfaceStatus("wg0", frozenset(range(8)), frozenset({0, 1}), frozenset({3}), True, (PEER,)),
)


def body(**extra: Any) -> dict[str, Any]:
    return {"interface": "wg0", "public_key": encode_key(KEY), **extra}


def test_a_valid_override_is_parsed() -> None:
    o = parse_override(body(mode="vanilla", core=5, expires_in=60, reason="bulk"), SNAPSHOT, NOW)
    assert o == Override("wg0", KEY, Mode.VANILLA, 5, NOW + 60, "bulk", NOW)


def test_absolute_expiry_and_nulls_are_accepted() -> None:
    o = parse_override(body(mode="inline", core=None, expires=NOW + 10, reason=None), SNAPSHOT, NOW)
    assert (o.mode, o.core, o.expires, o.reason) == (Mode.INLINE, None, NOW + 10, "")


@pytest.mark.parametrize(
    "request_body, status, field",
    [
        (body(mode="fast"), 400, "mode"),
        (body(mode=1), 400, "mode"),
        (body(core=-1), 400, "core"),
        (body(core=True), 400, "core"),
        (body(core=2.0), 400, "core"),
        (body(core=99), 422, "core"),  # not a managed core of wg0
        (body(mode="inline", expires_in=0), 400, "expires_in"),
        (body(mode="inline", expires_in=-5), 400, "expires_in"),
        (body(mode="inline", expires_in=1e12), 400, "expires_in"),
        (body(mode="inline", expires_in="60"), 400, "expires_in"),
        (body(mode="inline", expires=NOW - 1), 422, "expires"),
        (body(mode="inline", expires=NOW + 1, expires_in=5), 400, "expires"),
        (body(), 422, "mode"),
        (body(mode=None, core=None), 422, "mode"),
        (body(mode="inline", colour="red"), 400, "colour"),
        (body(mode="inline", reason="x" * 5000), 400, "reason"),
        (body(mode="inline", reason="line\nbreak"), 400, "reason"),
        (body(mode="inline", reason="\x1b[31mred"), 400, "reason"),
        ({"public_key": encode_key(KEY), "mode": "inline"}, 400, "interface"),
        (body(mode="inline", public_key="abc"), 400, "public_key"),
        (body(mode="inline", public_key="A" * 43 + "!"), 400, "public_key"),
        (body(mode="inline", public_key=None), 400, "public_key"),
        (body(mode="inline", interface="wg9"), 404, "interface"),
        (body(mode="inline", public_key=encode_key(OTHER)), 404, "public_key"),
    ],
)
def test_bad_overrides_are_refused_with_the_field(
    request_body: dict[str, Any], status: int, field: str
) -> None:
    with pytest.raises(ApiError) as exc:
        parse_override(request_body, SNAPSHOT, NOW)
    assert (exc.value.status, exc.value.field) == (status, field)
    assert exc.value.message


def test_peer_json_has_the_documented_fields_and_finite_numbers() -> None:
    odd = PeerStatus("wg0", KEY, "", Mode.VANILLA, PeerClass.ELEPHANT, True, math.nan, math.inf,
                     1.5, -1, 0.0, unmanaged="no such peer")
    out = peer_json(odd, None)
    doc = json.loads(resources.files("wghybrid").joinpath("openapi.json").read_text())
    assert set(out) == set(doc["components"]["schemas"]["Peer"]["required"])
    assert (out["rx_bps"], out["tx_bps"], out["pinned"]) == (0.0, 0.0, False)
    assert (out["mode"], out["class"], out["unmanaged"]) == ("vanilla", "elephant", "no such peer")
    json.dumps(out, allow_nan=False)


def test_interface_json_renders_cpulists_and_live_overrides() -> None:
    pin = Override("wg0", KEY, Mode.VANILLA, None, None, "ops", NOW)
    out = interface_json(SNAPSHOT[0], {("wg0", KEY): pin})
    assert (out["cores"], out["crypt_cores"], out["inline_cores"]) == ("0-7", "0-1", "3")
    assert parse_cores(out["cores"]) == frozenset(range(8))
    (peer,) = out["peers"]
    assert peer["pinned"] is True
    assert peer["override"]["mode"] == "vanilla"
    empty = InterfaceStatus("wg1", frozenset(), frozenset(), frozenset(), False, ())
    assert interface_json(empty, {})["crypt_cores"] == ""


def test_pre_encoded_fragments_equal_the_plain_encoding() -> None:
    other = PeerStatus("wg0", OTHER, 'quote " and \\ and ü', Mode.VANILLA, PeerClass.ELEPHANT,
                       False, 5e9, 1e8, 2.5, -1, 3.0, unmanaged="gone")
    snap = (
        InterfaceStatus("wg0", frozenset(range(8)), frozenset({0, 1}), frozenset({3}), True,
                        (PEER, other), ("threaded_napi: EOPNOTSUPP",)),
        InterfaceStatus("wg1", frozenset(), frozenset(), frozenset(), False, ()),
    )
    pin = Override("wg0", OTHER, None, 4, NOW + 60, "ops", NOW)
    for live in ({}, {("wg0", OTHER): pin}):
        fragments = Fragments.build(7, snap)
        plain = [interface_json(i, live) for i in snap]
        assert json.loads(f"[{fragments.interfaces_json(live)}]") == plain
        assert json.loads(f"[{fragments.peers('wg0', live)}]") == plain[0]["peers"]
        assert json.loads(f"[{fragments.peers(None, live)}]") == plain[0]["peers"]
        assert fragments.peers("wg1", live) == ""
