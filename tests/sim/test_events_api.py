"""GET /v1/events (paging, filters, the follow stream and its bounds) and GET
/v1/peers/{iface}/{peer}/explain, in-process on the simulated data plane; bad parameters
are a 400 naming the parameter, never a 5xx."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_daemon_loop import Clock, make_daemon, quiesce

from wghybrid.daemon.api import build_app
from wghybrid.daemon.service import Daemon
from wghybrid.model import Mode, Override, encode_key

pytestmark = pytest.mark.sim


def named(d: Daemon, keys: list[bytes]) -> dict[bytes, str]:
    names = {k: f"peer-{i}" for i, k in enumerate(keys)}
    d.controller.set_policy(dataclasses.replace(d.policy, names=names))
    return names


async def ready(tmp_path: Path) -> tuple[Daemon, list[bytes], Clock]:
    clock = Clock()
    d, dp = make_daemon(tmp_path, clock)
    keys = [bytes(k).ljust(32, b"\0") for k in dp.gateway.keys.tolist()]
    named(d, keys)
    await quiesce(d, clock)
    for _ in range(3):  # past the baseline reading: measured
        clock.t += 1.0
        await d.tick()
    return d, keys, clock


@pytest.mark.parametrize("query, field", [
    ("since=-1", "since"), ("since=abc", "since"), ("since=1.5", "since"),
    ("since=%EF%BC%91", "since"),  # a full-width digit: not ASCII
    ("since=" + "9" * 30, "since"), ("since=1&since=2", "since"),
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=", "limit"),
    ("follow=2", "follow"), ("follow=yes", "follow"),
    ("interface=" + "x" * 257, "interface"), ("peer=", "peer"),
    ("sinse=3", "sinse"),
])
async def test_bad_parameters_are_a_400_naming_them(
    tmp_path: Path, query: str, field: str
) -> None:
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.get("/v1/events?" + query)
        body = await resp.json()
        assert resp.status == 400, body
        assert body["field"] == field and field in body["error"]


async def test_events_page_and_filter(tmp_path: Path) -> None:
    d, keys, clock = await ready(tmp_path)
    await d.set_override(Override("wg0", keys[1], Mode.VANILLA, None, None, "t", d.wall()),
                         by="tester")
    clock.t += 1.0
    await d.tick()
    async with TestClient(TestServer(build_app(d))) as client:
        everything = await (await client.get("/v1/events", params={"limit": "1000"})).json()
        seqs = [e["seq"] for e in everything["events"]]
        assert seqs == list(range(1, everything["latest"] + 1)) and len(seqs) >= 3
        assert everything["oldest"] == 1 and everything["missed"] == 0
        page = await (await client.get("/v1/events", params={"since": "1", "limit": "2"})).json()
        assert [e["seq"] for e in page["events"]] == [2, 3] and page["next_since"] == 3
        last = await (await client.get("/v1/events", params={"limit": "1"})).json()
        assert [e["seq"] for e in last["events"]] == [everything["latest"]]
        mine = await (await client.get("/v1/events", params={
            "interface": "wg0", "peer": "peer-1", "limit": "1000"})).json()
        assert mine["events"] and all(e["name"] == "peer-1" for e in mine["events"])
        pin = next(e for e in mine["events"] if e["op"] == "override-set")
        assert pin["by"] == "tester" and pin["cause"] == "operator"
        assert pin["public_key"] == encode_key(keys[1])
        carried = next(e for e in mine["events"] if e["op"] == "mode")
        assert carried["cause"] == "override" and carried["value"] == "vanilla"
        assert carried["reason"]["rule"] == "override"
        by_key = await (await client.get("/v1/events", params={
            "peer": encode_key(keys[1]), "limit": "1000"})).json()
        assert [e["seq"] for e in by_key["events"]] == [e["seq"] for e in mine["events"]]
        none = await (await client.get("/v1/events", params={"interface": "wg7"})).json()
        assert none["events"] == []


async def test_the_api_records_who_changed_what(tmp_path: Path) -> None:
    d, keys, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.post("/v1/overrides", json={
            "interface": "wg0", "public_key": encode_key(keys[2]), "mode": "vanilla"})
        assert resp.status == 201
        resp = await client.delete("/v1/overrides", params={
            "interface": "wg0", "public_key": encode_key(keys[2])})
        assert resp.status == 200
        again = await client.delete("/v1/overrides", params={
            "interface": "wg0", "public_key": encode_key(keys[2])})
        body = await again.json()
        assert again.status == 404
        assert body["error"] == f"no override for peer-2 ({encode_key(keys[2])}) on 'wg0'"
    set_, cleared = d.events.last(2)
    assert (set_.op, cleared.op) == ("override-set", "override-clear")
    assert set_.by.startswith("TCP 127.0.0.1") and set_.name == "peer-2"


async def test_overrides_are_listed_by_name(tmp_path: Path) -> None:
    d, keys, clock = await ready(tmp_path)
    by_key = sorted(keys, key=encode_key)  # names against the order of the keys
    names = {by_key[0]: "", by_key[1]: "zed", by_key[2]: "amy"}
    d.controller.set_policy(dataclasses.replace(d.policy, names=names))
    clock.t += 1.0
    await d.tick()
    for k in keys:
        await d.set_override(Override("wg0", k, Mode.INLINE, None, None, "", d.wall()))
    async with TestClient(TestServer(build_app(d))) as client:
        listed = (await (await client.get("/v1/overrides")).json())["overrides"]
    assert [o["name"] for o in listed] == ["amy", "zed", ""]


async def test_follow_streams_new_events_and_ends_with_the_daemon(tmp_path: Path) -> None:
    d, keys, clock = await ready(tmp_path)
    app = build_app(d, max_streams=1)
    async with TestClient(TestServer(app)) as client:
        latest = d.events.latest
        resp = await client.get("/v1/events", params={"follow": "1", "since": str(latest)})
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        # a second stream is over this app's cap (1): refused at once, not queued
        second = await client.get("/v1/events", params={"follow": "1"})
        assert second.status == 503 and "event streams" in (await second.json())["error"]
        await d.set_override(Override("wg0", keys[0], Mode.VANILLA, None, None, "", d.wall()))
        line = await asyncio.wait_for(resp.content.readline(), 5.0)
        event = json.loads(line)
        assert event["seq"] == latest + 1 and event["op"] == "override-set"
        assert event["name"] == "peer-0"
        d.request_stop()  # the daemon stops: the stream ends
        rest = await asyncio.wait_for(resp.content.read(), 5.0)
        assert rest.strip() == b""


async def test_a_stream_sends_its_backlog_first(tmp_path: Path) -> None:
    d, keys, _ = await ready(tmp_path)
    for k in keys:
        await d.set_override(Override("wg0", k, Mode.VANILLA, None, None, "", d.wall()))
    async with TestClient(TestServer(build_app(d))) as client:
        latest = d.events.latest
        assert latest >= 3
        resp = await client.get("/v1/events", params={"follow": "1", "since": "0",
                                                      "limit": "1"})
        lines = [json.loads(await asyncio.wait_for(resp.content.readline(), 5.0))
                 for _ in range(latest)]
        # the backlog (cut at the limit), then the rest
        assert [e["seq"] for e in lines] == list(range(1, latest + 1))
        d.request_stop()


def explain_path(iface: str, peer: str) -> str:
    return f"/v1/peers/{urllib.parse.quote(iface, safe='')}/" \
           f"{urllib.parse.quote(peer, safe='')}/explain"


async def test_explain_by_name_or_key(tmp_path: Path) -> None:
    d, keys, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        by_name = await client.get(explain_path("wg0", "peer-1"))
        data: dict[str, Any] = await by_name.json()
        assert by_name.status == 200, data
        assert data["peer"]["public_key"] == encode_key(keys[1])
        assert data["peer"]["name"] == "peer-1" and data["text"]
        assert data["controller"]["measured"] is True
        assert set(data["costs"]) >= {"inline_cores_per_gbps", "vanilla_cores_per_gbps"}
        assert (await (await client.get(explain_path("wg0", "PEER-1"))).json())["peer"] \
            == data["peer"]
        # a key has "/" and "+" in it: percent-encoded, or not
        for key in keys:
            text = encode_key(key)
            for path in (explain_path("wg0", text), f"/v1/peers/wg0/{text}/explain"):
                resp = await client.get(path)
                assert resp.status == 200, (path, await resp.text())
                assert (await resp.json())["peer"]["public_key"] == text


@pytest.mark.parametrize("iface, peer, message", [
    ("wg9", "peer-1", "unknown interface 'wg9'"),
    ("wg0", "nobody", "unknown peer 'nobody' on 'wg0'"),
    ("wg0", "A" * 43 + "=", "unknown peer 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=' on 'wg0'"),
])
async def test_explain_unknown_is_a_404_naming_it(
    tmp_path: Path, iface: str, peer: str, message: str
) -> None:
    d, _, _ = await ready(tmp_path)
    async with TestClient(TestServer(build_app(d))) as client:
        resp = await client.get(explain_path(iface, peer))
        assert resp.status == 404
        assert (await resp.json())["error"] == message


async def test_a_stream_keeps_alive_and_ends_at_its_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wghybrid.daemon.api import events as api

    monkeypatch.setattr(api, "KEEPALIVE", 0.1)
    monkeypatch.setattr(api, "FOLLOW_FOR", 0.5)
    d, _, _ = await ready(tmp_path)
    app = build_app(d)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/events", params={"follow": "1",
                                                      "since": str(d.events.latest)})
        assert await asyncio.wait_for(resp.content.readline(), 5.0) == b"\n"  # keep-alive
        rest = await asyncio.wait_for(resp.content.read(), 5.0)  # ends by itself
        assert rest.strip() == b""
        assert not app[api.STREAMS]  # its slot is free again


async def test_the_admin_token_is_who_over_tcp(tmp_path: Path) -> None:
    from wghybrid.daemon.api import Access

    d, keys, _ = await ready(tmp_path)
    token = "t" * 20
    app = build_app(d, access=Access(admin_token=token))
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/v1/overrides", headers={"Authorization": f"Bearer {token}"},
                                 json={"interface": "wg0", "public_key": encode_key(keys[0]),
                                       "mode": "vanilla"})
        assert resp.status == 201
    assert d.events.last(1)[0].by == "admin token (127.0.0.1)"
