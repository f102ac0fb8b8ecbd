"""Requests that are malformed in ways a lenient server would quietly half-answer: an
unknown query parameter, a JSON field given twice, an interface name that cannot be one,
a body sent to the policy reload. Each is a 400 naming what is wrong, in-process on the
simulated data plane; what is valid still works."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_events_api import ready

from wghybrid.daemon.api import build_app
from wghybrid.model import encode_key

pytestmark = pytest.mark.sim


def _explain(iface: str, peer: str) -> str:
    q = urllib.parse.quote
    return f"/v1/peers/{q(iface, safe='')}/{q(peer, safe='')}/explain"


@pytest.mark.parametrize("method, path, field", [
    ("GET", "/v1/health?verbose=1", "verbose"),
    ("GET", "/v1/status?interface=wg0", "interface"),
    ("GET", "/v1/peers?interfce=wg0", "interfce"),
    ("GET", "/v1/overrides?interface=wg0", "interface"),
    ("GET", "/v1/policy?x=", "x"),
    ("GET", "/v1/openapi.json?v=2", "v"),
    ("GET", "/v1/events?sinse=3", "sinse"),
    ("POST", "/v1/policy/reload?force=1", "force"),
])
async def test_an_unknown_query_parameter_is_a_400_naming_it(
    tmp_path: Path, method: str, path: str, field: str
) -> None:
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.request(method, path)
        body = await resp.json()
        assert resp.status == 400, body
        assert body["field"] == field and repr(field) in body["error"]
        # ... and without it, the same request is answered
        resp = await client.request(method, path.split("?")[0])
        assert resp.status == 200, await resp.text()


async def test_metrics_ignore_query_parameters(tmp_path: Path) -> None:
    """A scrape configuration's `params` must never break a scrape (exporters' custom)."""
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.get("/metrics?collect[]=x")
        assert resp.status == 200


async def test_an_unknown_parameter_of_delete_and_post_changes_nothing(tmp_path: Path) -> None:
    d, keys, _ = await ready(tmp_path)
    key = encode_key(keys[0])
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.post("/v1/overrides?dry=1", json={
            "interface": "wg0", "public_key": key, "mode": "inline"})
        assert resp.status == 400 and (await resp.json())["field"] == "dry"
        assert not d.overrides
        resp = await client.post("/v1/overrides", json={
            "interface": "wg0", "public_key": key, "mode": "inline"})
        assert resp.status == 201
        resp = await client.delete("/v1/overrides", params={
            "interface": "wg0", "public_key": key, "all": "1"})
        assert resp.status == 400 and (await resp.json())["field"] == "all"
        assert len(d.overrides) == 1  # still there


@pytest.mark.parametrize("text, field", [
    ('{"interface": "wg0", "interface": "wg1", "public_key": "%s", "mode": "inline"}',
     "interface"),
    ('{"interface": "wg0", "public_key": "%s", "mode": "vanilla", "mode": "inline"}', "mode"),
    ('{"interface": "wg0", "public_key": "%s", "mode": "inline", '
     '"reason": "a", "reason": "a"}', "reason"),
])
async def test_a_field_given_twice_is_a_400_naming_it(
    tmp_path: Path, text: str, field: str
) -> None:
    d, keys, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.post("/v1/overrides", data=text % encode_key(keys[0]),
                                 headers={"Content-Type": "application/json"})
        body = await resp.json()
        assert resp.status == 400, body
        assert body["field"] == field and "twice" in body["error"]
        assert not d.overrides


BAD_NAMES = ["", "x" * 16, "wg0/1", "wg:0", "wg 0", "wg0\t", ".", "..", "wg\u00e90",
             "wg0\x00", "wg\u202e0"]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_a_name_that_cannot_be_an_interface_is_a_400(tmp_path: Path, name: str) -> None:
    d, keys, _ = await ready(tmp_path)
    key = encode_key(keys[0])
    async with TestClient(TestServer(build_app(d))) as client:
        answers: list[tuple[str, int, dict[str, Any]]] = []
        resp = await client.post("/v1/overrides", json={
            "interface": name, "public_key": key, "mode": "inline"})
        answers.append(("post", resp.status, await resp.json()))
        resp = await client.delete("/v1/overrides", params={"interface": name,
                                                            "public_key": key})
        answers.append(("delete", resp.status, await resp.json()))
        if name not in ("", ".", ".."):  # an empty or a dot segment is another path
            resp = await client.get(_explain(name, "peer-1"))
            answers.append(("explain", resp.status, await resp.json()))
        resp = await client.get("/v1/peers", params={"interface": name})
        answers.append(("peers", resp.status, await resp.json()))
        for what, status, body in answers:
            assert status == 400 and body["field"] == "interface", (what, status, body)
        assert not d.overrides


@pytest.mark.parametrize("name", ["wg1", "x" * 15, "site-b.1", "a_b@c"])
async def test_a_well_formed_unknown_interface_is_still_a_404(
    tmp_path: Path, name: str
) -> None:
    d, keys, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.post("/v1/overrides", json={
            "interface": name, "public_key": encode_key(keys[0]), "mode": "inline"})
        body = await resp.json()
        assert resp.status == 404 and body["field"] == "interface", body


async def test_an_overlong_peer_in_the_explain_path_is_a_400(tmp_path: Path) -> None:
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.get(_explain("wg0", "p" * 257))
        body = await resp.json()
        assert resp.status == 400 and body["field"] == "peer", body


@pytest.mark.parametrize("body, headers, status, field", [
    (None, {}, 200, None),
    (b"", {"Content-Type": "application/json"}, 200, None),
    (b"{}", {"Content-Type": "application/json"}, 200, None),
    (b'{"name": "other"}', {"Content-Type": "application/json"}, 400, "name"),
    (b"[]", {"Content-Type": "application/json"}, 400, None),
    (b"reload", {"Content-Type": "text/plain"}, 415, None),
])
async def test_the_policy_reload_takes_no_body(
    tmp_path: Path, body: bytes | None, headers: dict[str, str], status: int,
    field: str | None,
) -> None:
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.post("/v1/policy/reload", data=body, headers=headers)
        answer = json.loads(await resp.text())
        assert resp.status == status, answer
        if status != 200:
            assert answer["field"] == field and answer["error"]
