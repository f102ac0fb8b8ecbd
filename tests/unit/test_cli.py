"""The `wghybrid` CLI against a small in-process HTTP server speaking the API contract.

The server (`FakeDaemon`) serves canned status JSON in the contract's shape and keeps
overrides the way the contract says (validation, 201/404/415/422); it runs on its own
event loop in a thread because the CLI runs its own with asyncio.run. The real daemon is
exercised by tests/sim/test_cli_e2e.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from wghybrid import __version__, cli
from wghybrid.cli import parse as cli_parse
from wghybrid.cli import status as cli_status
from wghybrid.model import BadKeyError, decode_key

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def key(n: int) -> str:
    return base64.b64encode(bytes([n]) * 31 + b"\x01").decode()


ALICE, BOB, ANON, CAROL, CARLA = key(1), key(2), key(3), key(4), key(5)
LONG_NAME = "a-very-long-peer-name-for-the-branch-office-in-the-north-east"


def peer(iface: str, public_key: str, name: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "interface": iface, "public_key": public_key, "name": name, "mode": "inline",
        "class": "mouse", "pinned": False, "rx_bps": 1.2e9, "tx_bps": 3.0e8, "cpu": 0.42,
        "core": 5, "time_in_mode": 192.0, "override": None, "unmanaged": None,
    }
    base.update(kw)
    return base


def canned_status() -> dict[str, Any]:
    bob_override = {
        "interface": "wg0", "public_key": BOB, "mode": "vanilla", "core": None,
        "expires": None, "reason": "backup window", "created": 1_700_000_000.0,
    }
    return {
        "version": "0.1.0", "backend": "sim", "dry_run": False,
        "policy": {"name": "default", "source": "/etc/wghybrid/policy.toml", "error": None},
        "interfaces": [
            {
                "name": "wg0", "cores": "0-7", "crypt_cores": "0-1", "inline_cores": "4-6",
                "threaded_napi": True, "summary": {
                    "rx_bps": 2.5e10, "tx_bps": 1.2e10, "demand_bps": 4e10,
                    "cpu": {"inline": 0.42, "vanilla": 3.1}, "peers": {"inline": 2, "vanilla": 1},
                    "drop_pps": 12.0, "drops": 34_000,
                    "cores": [{"core": c, "busy": 0.1 * c if c != 3 else None,
                               "inline": int(c in (4, 5, 6)), "pool": c < 2}
                              for c in range(8)],
                },
                "peers": [
                    peer("wg0", ALICE, "alice"),
                    peer("wg0", BOB, "bob", mode="vanilla", **{"class": "elephant"},
                         pinned=True, rx_bps=2.35e10, tx_bps=1.1e10, cpu=3.1, core=-1,
                         time_in_mode=7300.0, override=bob_override),
                    peer("wg0", ANON, "", rx_bps=0.0, tx_bps=950.0, cpu=0.0, core=6,
                         time_in_mode=5.0, unmanaged="no such peer in the module"),
                ],
            },
            {
                "name": "wg1", "cores": "0-7", "crypt_cores": "", "inline_cores": "7",
                "threaded_napi": False,
                "peers": [
                    peer("wg1", CAROL, LONG_NAME, core=7),
                    peer("wg1", CARLA, "carla", core=7),
                ],
            },
        ],
    }


POLICY = {
    "name": "default", "description": "shipped default", "interval": 1.0, "smoothing": 3.0,
    "cores": "all", "interfaces": "all", "restore_on_stop": False,
    "classify": {"promote_gbps": 2.0, "demote_gbps": 1.0},
    "placement": {"max_moves": 8, "threaded_napi": "auto"},
    "names": {ALICE: "alice", BOB: "bob"},
    "source": "/etc/wghybrid/policy.toml",
}


def error(status: int, message: str, field: str | None = None) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)


class FakeDaemon:
    """The API contract's shape, over a unix socket or TCP, on a thread of its own."""

    def __init__(self, token: str | None = None) -> None:
        self.status = canned_status()
        self.health: dict[str, Any] = {"status": "ok", "ticks": 12, "last_tick": time.time(),
                                       "last_error": None}
        self.overrides: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.reload_error: str | None = None
        self.metrics = (
            "# TYPE wghybrid_peer_receive_bytes_total counter\n"
            f'wghybrid_peer_receive_bytes_total{{interface="wg0",public_key="{ALICE}"}} 1234\n'
            f'wghybrid_peer_receive_bytes_total{{interface="wg0",public_key="{BOB}"}} 9.5e+11\n'
            f'wghybrid_peer_transmit_bytes_total{{interface="wg0",public_key="{ALICE}"}} 42\n'
            f'wghybrid_peer_transmit_bytes_total{{interface="wg1",public_key="{ALICE}"}} 7\n'
            'wghybrid_ticks_total 12\n'
        )
        self.broken = False
        self.token = token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle
    def start(self, unix: str | None = None, tls: ssl.SSLContext | None = None) -> FakeDaemon:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(unix, tls), self.loop).result(10)
        return self

    async def _start(self, unix: str | None, tls: ssl.SSLContext | None) -> None:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/v1/health", self.get_health)
        app.router.add_get("/v1/status", self.get_status)
        app.router.add_get("/v1/peers", self.get_peers)
        app.router.add_get("/v1/overrides", self.get_overrides)
        app.router.add_post("/v1/overrides", self.post_override)
        app.router.add_delete("/v1/overrides", self.delete_override)
        app.router.add_get("/v1/policy", self.get_policy)
        app.router.add_post("/v1/policy/reload", self.reload_policy)
        app.router.add_get("/metrics", self.get_metrics)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        if unix is not None:
            await web.UnixSite(self.runner, unix).start()
        else:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            scheme = "https" if tls else "http"
            self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
            await web.SockSite(self.runner, sock, ssl_context=tls).start()

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # -- handlers
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path, dict(request.query), body))
        if self.token is not None and request.headers.get("Authorization") != (
            f"Bearer {self.token}"
        ):
            return error(401, "a bearer token is required")
        if self.broken:
            return web.Response(status=500, text="Internal Server Error")
        resp: web.StreamResponse = await handler(request)
        return resp

    def _peers(self, interface: str | None = None) -> list[dict[str, Any]]:
        return [p for i in self.status["interfaces"] for p in i["peers"]
                if interface in (None, i["name"])]

    def _has_iface(self, name: str) -> bool:
        return any(i["name"] == name for i in self.status["interfaces"])

    async def get_health(self, request: web.Request) -> web.Response:
        return web.json_response(self.health)

    async def get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status)

    async def get_peers(self, request: web.Request) -> web.Response:
        iface = request.query.get("interface")
        if iface is not None and not self._has_iface(iface):
            return error(404, f"no interface {iface!r}", "interface")
        return web.json_response({"peers": self._peers(iface)})

    async def get_overrides(self, request: web.Request) -> web.Response:
        return web.json_response({"overrides": self.overrides})

    async def post_override(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return error(415, "content type must be application/json")
        body = await request.json()
        iface, pub = body.get("interface"), body.get("public_key")
        if not self._has_iface(iface):
            return error(404, f"no interface {iface!r}", "interface")
        try:
            decode_key(pub)
        except BadKeyError as exc:
            return error(400, str(exc), "public_key")
        if not any(p["public_key"] == pub for p in self._peers(iface)):
            return error(404, f"no peer {pub} on {iface}", "public_key")
        if body.get("mode") not in (None, "vanilla", "inline"):
            return error(422, f"bad mode {body['mode']!r}", "mode")
        if body.get("mode") is None and body.get("core") is None:
            return error(422, "give mode, core or both", None)
        now = time.time()
        expires = body.get("expires")
        if "expires_in" in body:
            expires = now + body["expires_in"]
        if expires is not None and expires <= now:
            return error(422, "expiry is in the past", "expires")
        ov = {"interface": iface, "public_key": pub, "mode": body.get("mode"),
              "core": body.get("core"), "expires": expires, "reason": body.get("reason", ""),
              "created": now}
        self.overrides = [o for o in self.overrides
                          if (o["interface"], o["public_key"]) != (iface, pub)] + [ov]
        return web.json_response({"override": ov}, status=201)

    async def delete_override(self, request: web.Request) -> web.Response:
        where = (request.query.get("interface"), request.query.get("public_key"))
        found = [o for o in self.overrides if (o["interface"], o["public_key"]) == where]
        if not found:
            return error(404, f"no override for {where[1]} on {where[0]}")
        self.overrides.remove(found[0])
        return web.json_response({"cleared": found[0]})

    async def get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics, content_type="text/plain")

    async def get_policy(self, request: web.Request) -> web.Response:
        return web.json_response({"policy": POLICY, "error": self.reload_error})

    async def reload_policy(self, request: web.Request) -> web.Response:
        if self.reload_error is not None:
            return error(422, self.reload_error)
        return web.json_response({"policy": POLICY})


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wgh-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    sock = short_dir / "wghybrid.sock"
    fake = FakeDaemon().start(str(sock))
    monkeypatch.setenv("WGHYBRID_SOCKET", str(sock))
    monkeypatch.delenv("WGHYBRID_URL", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    yield fake
    fake.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(list(argv))
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------------
# status


def test_plain_wghybrid_shows_status(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys)
    assert (code, err) == (0, "")
    assert run(capsys, "status") == (0, out, "")
    assert "\x1b[" not in out  # not a terminal: no colour
    lines = out.splitlines()
    assert lines[0] == "wghybrid 0.1.0, backend sim, policy default (/etc/wghybrid/policy.toml)"
    assert "interface: wg0" in lines and "interface: wg1" in lines
    assert "  vanilla pool: 0-1" in lines
    assert "  inline cores: 4-6" in lines
    assert "  threaded napi: on" in lines
    alice = next(ln for ln in lines if ln.startswith("  alice"))
    assert alice.split() == ["alice", "inline", "mouse", "1.20G", "300M", "0.42", "5", "3m12s"]
    bob = next(ln for ln in lines if ln.startswith("  bob"))
    assert bob.split()[:4] == ["bob", "vanilla*", "elephant", "23.5G"]  # *: pinned
    assert bob.split()[-2:] == ["-", "2h01m"]  # core -1: the data plane's default
    # sorted by load: bob (34.5 Gbit/s), then alice, then the idle one
    table = [ln.split()[0] for ln in lines
             if ln.startswith(("  bob ", "  alice ", "  " + ANON[:8]))]
    assert table == ["bob", "alice", ANON[:8]]
    assert "  delivered: 37.0 Gbit/s (rx 25.0 Gbit/s, tx 12.0 Gbit/s)" in lines
    assert "  estimated demand: 40.0 Gbit/s" in lines
    assert "  cpu: 3.52 cores (inline 0.42, vanilla 3.10)" in lines
    assert "  drops: 12/s (34.0k in all)" in lines
    assert "  peers: 3 (2 inline, 1 vanilla; 1 pinned, 1 unmanaged)" in lines
    assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
    assert any("override: mode vanilla, until never: backup window" in ln for ln in lines)
    anon = next(ln for ln in lines if ln.startswith("  " + ANON[:8]))  # no name: short key
    assert anon.split()[3:5] == ["0", "950"]
    assert any("unmanaged: no such peer in the module" in ln for ln in lines)
    assert [r[:2] for r in daemon.requests] == [("GET", "/v1/status"), ("GET", "/v1/health")] * 2


def test_status_warns_when_the_loop_is_degraded(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon.health = {"status": "degraded", "ticks": 40, "last_tick": time.time() - 75,
                     "last_error": "sample: timed out after 5 s"}
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.splitlines()[1].startswith("  degraded: sample: timed out after 5 s (last tick 1m1")
    code, out, _ = run(capsys, "status", "wg1")
    assert out.splitlines()[0].startswith("  degraded: ")


def test_status_of_one_interface(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "wg1")
    assert code == 0
    assert "interface: wg1" in out and "wg0" not in out and "backend" not in out
    assert "carla" in out and LONG_NAME[:10] in out and LONG_NAME[-9:] in out
    assert LONG_NAME not in out  # too long for 80 columns: the middle is cut


def test_status_of_an_unknown_interface_is_one_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "status", "wg9") == (
        1, "", "wghybrid: wg9 is not an interface the daemon manages\n"
    )


def test_status_json_is_the_api_json(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (["status", "--json"], ["--json"], ["--json", "status"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        assert json.loads(out) == daemon.status
    code, out, _ = run(capsys, "status", "wg1", "--json")
    only = json.loads(out)
    assert [i["name"] for i in only["interfaces"]] == ["wg1"]
    assert only["interfaces"][0] == daemon.status["interfaces"][1]


def test_dump_is_tab_separated_one_line_per_peer(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "dump")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[1] for r in rows] == [ALICE, BOB, ANON, CAROL, CARLA]
    assert all(len(r) == 15 for r in rows)
    assert rows[1] == ["wg0", BOB, "bob", "vanilla", "pinned", "elephant", "23500000000",
                       "11000000000", "3.100", "-1", "7300", "vanilla", "", "", ""]
    assert rows[2][2] == "" and rows[2][14] == "no such peer in the module"
    code, out, _ = run(capsys, "dump", "wg1")
    assert [line.split("\t")[2] for line in out.splitlines()] == [LONG_NAME, "carla"]


def test_colour_only_on_a_terminal_and_never_with_no_color(daemon: FakeDaemon) -> None:
    def through_pty(extra_env: dict[str, str]) -> str:
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update(extra_env)
        proc = subprocess.Popen(
            [sys.executable, "-m", "wghybrid", "status"], stdout=slave,
            stderr=subprocess.PIPE, env=env,
        )
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        if proc.stderr:
            proc.stderr.close()
        return b"".join(chunks).decode()

    coloured = through_pty({})
    assert "\x1b[" in coloured and "\x1b[32" in coloured  # inline in green
    plain = through_pty({"NO_COLOR": "1"})
    assert "\x1b[" not in plain
    assert "alice" in plain and "inline  mouse" in plain


# ---------------------------------------------------------------------------
# the daemon is not there, or refuses


def test_no_daemon_is_one_line_naming_the_socket(
    short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = short_dir / "wghybrid.sock"
    for argv in ([], ["status"], ["dump"], ["override", "list"], ["policy", "reload"]):
        code, out, err = run(capsys, *argv, "--socket", str(sock)) if argv else run(
            capsys, "--socket", str(sock))
        assert (code, out) == (1, "")
        assert err == (
            f"wghybrid: cannot reach the daemon at {sock}: No such file or directory "
            "(is wghybrid.service running?)\n"
        )


def test_default_socket_is_run_wghybrid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WGHYBRID_SOCKET", raising=False)
    monkeypatch.delenv("WGHYBRID_URL", raising=False)
    args = cli.build_parser().parse_args([])
    assert args.socket == "/run/wghybrid/wghybrid.sock"
    monkeypatch.setenv("WGHYBRID_SOCKET", "/tmp/x.sock")
    assert cli.build_parser().parse_args(["status"]).socket == "/tmp/x.sock"
    assert cli.build_parser().parse_args(["status", "--socket", "/y"]).socket == "/y"
    assert cli.build_parser().parse_args(["--socket", "/z", "dump"]).socket == "/z"


def test_a_socket_nobody_listens_on(short_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = short_dir / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    code, _, err = run(capsys, "--socket", str(path))
    assert code == 1
    assert err == (f"wghybrid: cannot reach the daemon at {path}: Connection refused "
                   "(is wghybrid.service running?)\n")


def test_a_server_error_is_one_line(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    daemon.broken = True
    assert run(capsys, "status") == (
        1, "", "wghybrid: GET /v1/status: HTTP 500 Internal Server Error\n"
    )


# ---------------------------------------------------------------------------
# overrides


def test_override_set_by_name(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "override", "set", "wg0", "alice", "--mode", "vanilla",
                         "--core", "3", "--for", "10m", "--reason", "bulk transfer")
    assert (code, err) == (0, "")
    assert daemon.requests[0][:3] == ("GET", "/v1/peers", {"interface": "wg0"})
    method, path, _, body = daemon.requests[1]
    assert (method, path) == ("POST", "/v1/overrides")
    assert body == {"interface": "wg0", "public_key": ALICE, "mode": "vanilla", "core": 3,
                    "expires_in": 600.0, "reason": "bulk transfer"}
    assert out.startswith("[#] override wg0/alice mode vanilla core 3 until ")
    assert out.rstrip().endswith("(in 9m59s): bulk transfer") or out.rstrip().endswith(
        "(in 10m00s): bulk transfer")
    assert out.count("\n") == 1


def test_override_set_by_key_and_until(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    until = datetime(2100, 1, 2, 3, 4, 5, tzinfo=UTC)
    code, out, _ = run(capsys, "override", "set", "wg1", CAROL, "--mode", "inline",
                       "--until", "2100-01-02T03:04:05Z")
    assert code == 0
    assert [r[0] for r in daemon.requests] == ["POST"]  # a key needs no lookup
    assert daemon.requests[0][3] == {"interface": "wg1", "public_key": CAROL, "mode": "inline",
                                     "expires": until.timestamp()}
    assert out.startswith(f"[#] override wg1/{CAROL[:8]} mode inline until 2100-01-0")


def test_override_set_json(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "override", "set", "wg0", "bob", "--core", "2", "--json")
    assert code == 0
    assert json.loads(out)["override"] == daemon.overrides[0]


def test_override_set_by_key_prefix_and_ambiguity(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "override", "set", "wg0", BOB[:6], "--mode", "inline")
    assert code == 0 and out.startswith("[#] override wg0/bob mode inline")
    daemon.status["interfaces"][0]["peers"][0]["name"] = "bob"  # two peers named bob
    code, out, err = run(capsys, "override", "set", "wg0", "bob", "--mode", "inline")
    assert (code, out) == (1, "")
    assert err == f"wghybrid: 'bob' matches several peers on wg0: {ALICE[:8]}, {BOB[:8]}\n"


def test_override_set_errors_are_one_line(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "override", "set", "wg0", "nobody", "--mode", "inline")
    assert code == 1
    assert err == ("wghybrid: wg0 has no peer 'nobody' (a base64 key, a name, or the start "
                   "of a key)\n")
    # The API's own 4xx message, verbatim.
    assert run(capsys, "override", "set", "wg9", "alice", "--mode", "inline") == (
        1, "", "wghybrid: no interface 'wg9'\n"
    )
    assert run(capsys, "override", "set", "wg0", ANON[:-2] + "A=", "--core", "1")[2] == (
        f"wghybrid: no peer {ANON[:-2]}A= on wg0\n"
    )
    assert run(capsys, "override", "set", "wg0", "alice", "--mode", "inline",
               "--until", "2001-01-01T00:00:00Z")[2] == "wghybrid: expiry is in the past\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["override", "set", "wg0", "alice"], "give --mode, --core or both"),
        (["override", "set", "wg0", "alice", "--mode", "fast"], "invalid choice: 'fast'"),
        (["override", "set", "wg0", "alice", "--core", "-1"], "bad core '-1'"),
        (["override", "set", "wg0", "alice", "--mode", "inline", "--for", "10x"],
         "bad duration '10x'"),
        (["override", "set", "wg0", "alice", "--mode", "inline", "--until", "tomorrow"],
         "bad time 'tomorrow'"),
        (["override", "set", "wg0", "alice", "--mode", "inline", "--for", "1m", "--until",
          "2100-01-01"], "not allowed with argument"),
        (["override", "set", "wg0"], "the following arguments are required: PEER"),
        (["override"], "a subcommand is required"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["--socket"], "expected one argument"),
        (["status", "--timeout", "0"], "bad number of seconds '0'"),
        (["--timeout", "nan"], "bad number of seconds 'nan'"),
    ],
)
def test_bad_arguments_exit_2_with_argparse_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    err = usage_error(capsys, *argv)
    assert message in err
    assert "Traceback" not in err


def test_override_clear_and_list(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "override", "list") == (0, "no overrides\n", "")
    run(capsys, "override", "set", "wg0", "alice", "--mode", "vanilla", "--reason", "test")
    run(capsys, "override", "set", "wg0", ANON, "--core", "6")
    code, out, _ = run(capsys, "override", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["interface", "peer", "mode", "core", "expires", "reason"]
    assert lines[1].split() == ["wg0", "alice", "vanilla", "-", "never", "test"]
    assert lines[2].split() == ["wg0", ANON[:8], "-", "6", "never"]
    code, out, _ = run(capsys, "override", "list", "--json")
    assert json.loads(out) == {"overrides": daemon.overrides}

    daemon.requests.clear()
    assert run(capsys, "override", "clear", "wg0", "alice") == (
        0, "[#] override wg0/alice cleared\n", ""
    )
    assert daemon.requests[-1][:3] == (
        "DELETE", "/v1/overrides", {"interface": "wg0", "public_key": ALICE}
    )
    assert [o["public_key"] for o in daemon.overrides] == [ANON]
    assert run(capsys, "override", "clear", "wg0", "alice") == (
        1, "", f"wghybrid: no override for {ALICE} on wg0\n"
    )


# ---------------------------------------------------------------------------
# policy, validate, version, run


def test_policy_show(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "show")
    assert code == 0
    assert out.splitlines()[0] == "# loaded from /etc/wghybrid/policy.toml"
    assert 'name = "default"' in out.splitlines()
    assert "source =" not in out
    assert "[classify]" in out and "promote_gbps = 2.0" in out
    assert f'"{ALICE}" = "alice"' in out
    code, out, _ = run(capsys, "policy", "show", "--json")
    assert json.loads(out) == {"policy": POLICY, "error": None}


def test_policy_reload(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "policy", "reload") == (
        0, "[#] policy reloaded: default from /etc/wghybrid/policy.toml\n", ""
    )
    assert daemon.requests[-1][:2] == ("POST", "/v1/policy/reload")
    daemon.reload_error = "/etc/wghybrid/policy.toml: classify.demote_gbps: must be < 2.0"
    assert run(capsys, "policy", "reload") == (
        1, "", "wghybrid: policy rejected, the running one is unchanged: "
        "/etc/wghybrid/policy.toml: classify.demote_gbps: must be < 2.0\n",
    )
    code, out, _ = run(capsys, "policy", "show")
    assert out.startswith("# last reload failed, this policy keeps running: /etc/wghybrid")


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = ROOT / "policies" / "default.toml"
    code, out, err = run(capsys, "validate", str(good), "--cores", "8")
    assert (code, err) == (0, "")
    assert out.startswith(f"{good}: OK")
    bad = tmp_path / "bad.toml"
    bad.write_text("[classify]\npromote_gbps = -1\n")
    code, out, err = run(capsys, "validate", str(bad))
    assert (code, out) == (1, "")
    assert err.startswith(f"{bad}: ") and "promote_gbps" in err and err.count("\n") == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "version") == (0, f"wghybrid {__version__}\n", "")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"wghybrid {__version__}\n"


def test_run_delegates_to_the_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    daemon = pytest.importorskip("wghybrid.daemon.config")
    reference = argparse.ArgumentParser(
        prog="wghybrid run", description="Run the wghybrid daemon in the foreground."
    )
    daemon.add_run_arguments(reference)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == reference.format_help()
    assert "--backend" in reference.format_help()
    # Global options before `run` are a usage error, not silently dropped.
    assert run(capsys, "--json", "run")[0] == 2


# ---------------------------------------------------------------------------
# TCP with a bearer token


def test_tcp_with_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDaemon(token="s3cret").start()
    try:
        token = tmp_path / "token"
        token.write_text("s3cret\n")
        code, out, _ = run(capsys, "--url", fake.url, "--token-file", str(token), "--json")
        assert code == 0 and json.loads(out) == fake.status
        assert run(capsys, "--url", fake.url) == (1, "", "wghybrid: a bearer token is required\n")
        monkeypatch.setenv("WGHYBRID_URL", fake.url)
        monkeypatch.setenv("WGHYBRID_TOKEN_FILE", str(token))
        assert run(capsys, "dump")[0] == 0
        code, _, err = run(capsys, "--token-file", str(tmp_path / "none"))
        assert code == 1
        assert err == f"wghybrid: cannot read the token file {tmp_path / 'none'}: " \
                      "No such file or directory\n"
    finally:
        fake.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_private_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key_file = tmp_path / "api.crt", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key_file), "-out", str(cert), "-days", "1",
         "-subj", "/CN=wghybrid", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key_file)
    fake = FakeDaemon(token="t").start(tls=tls)
    try:
        token = tmp_path / "token"
        token.write_text("t")
        base = ["--url", fake.url, "--token-file", str(token)]
        code, out, _ = run(capsys, *base, "--cacert", str(cert), "dump")
        assert code == 0 and len(out.splitlines()) == 5
        code, out, err = run(capsys, *base, "dump")  # the system CAs do not know it
        assert (code, out) == (1, "")
        assert err.startswith(f"wghybrid: cannot reach the daemon at {fake.url}: TLS certificate "
                              "not accepted: ")
        assert "self-signed" in err and err.count("\n") == 1
    finally:
        fake.stop()


# ---------------------------------------------------------------------------
# argument types


@given(st.integers(0, 30), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59))
def test_parse_duration_sums_its_parts(d: int, h: int, m: int, s: int) -> None:
    text = f"{d}d{h}h{m}m{s}s"
    total = d * 86400 + h * 3600 + m * 60 + s
    if total == 0:
        with pytest.raises(argparse.ArgumentTypeError):
            cli_parse.parse_duration(text)
    else:
        assert cli_parse.parse_duration(text) == total


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600), ("1.5h", 5400), ("2d", 172800)]
)
def test_parse_duration_examples(text: str, seconds: float) -> None:
    assert cli_parse.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "-5m", "0", "1h 30m", "5mm"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli_parse.parse_duration(text)


def test_parse_time_zones() -> None:
    assert cli_parse.parse_time("2100-01-01T00:00:00Z") == 4102444800.0
    assert cli_parse.parse_time("2100-01-01T01:00:00+01:00") == 4102444800.0
    naive = datetime(2100, 1, 1, 0, 0, 0).astimezone().timestamp()  # local time
    assert cli_parse.parse_time("2100-01-01T00:00:00") == naive


# ---------------------------------------------------------------------------
# status: filters, order, FIELD, colour, --watch (issue 13)


def peer_names_shown(out: str) -> list[str]:
    """The first cell of each table row (the lines after the table's header)."""
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["peer", "mode"])
    return [ln.split()[0] for ln in lines[head + 1:] if ln.startswith("  ")
            and not ln.startswith("   ") and not ln.startswith("  *")]


def test_status_filters_sort_and_top(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "wg0", "--sort", "name")
    assert code == 0 and peer_names_shown(out) == ["alice", "bob", ANON[:8]]
    assert peer_names_shown(run(capsys, "status", "wg0", "--sort", "cpu")[1]) == [
        "bob", "alice", ANON[:8]]
    assert peer_names_shown(run(capsys, "status", "wg0", "--sort", "mode")[1]) == [
        "alice", ANON[:8], "bob"]  # inline first, each by load
    code, out, _ = run(capsys, "status", "wg0", "--mode", "inline")
    assert peer_names_shown(out) == ["alice", ANON[:8]]
    code, out, _ = run(capsys, "status", "wg0", "--top", "1")
    assert peer_names_shown(out) == ["bob"] and "2 more not shown" in out
    code, out, _ = run(capsys, "status", "--peer", "car*")
    assert peer_names_shown(out.split("interface: wg1")[1]) == ["carla"]
    assert "(no peer matches)" in out.split("interface: wg1")[0]
    code, out, _ = run(capsys, "status", "wg0", "--peer", ALICE[:6] + "*")  # a key glob
    assert peer_names_shown(out) == ["alice"]
    code, out, _ = run(capsys, "--mode", "vanilla")  # plain wghybrid takes them too
    assert peer_names_shown(out.split("interface: wg1")[0]) == ["bob"]
    code, out, _ = run(capsys, "status", "wg0", "--json", "--mode", "vanilla")
    assert [p["name"] for p in json.loads(out)["interfaces"][0]["peers"]] == ["bob"]


def test_status_is_80_columns_with_pins_and_long_names(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    wg1 = daemon.status["interfaces"][1]
    ov = {"interface": "wg1", "public_key": CAROL, "mode": "vanilla", "core": 3,
          "expires": time.time() + 7200, "reason": "x" * 300, "created": time.time()}
    wg1["peers"][0].update(pinned=True, mode="vanilla", override=ov, cpu=123.456, core=123,
                           unmanaged="y" * 200, rx_bps=9.99e14, time_in_mode=9e6)
    wg1["peers"].append(peer("wg1", key(9), "z" * 64, mode="vanilla", pinned=True,
                             override=ov))
    for argv in ([], ["status", "wg1"], ["status", "--sort", "name"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0
        lines = out.splitlines()
        assert all(len(ln) <= 80 for ln in lines), max(lines, key=len)
        rows = [ln for ln in lines if "vanilla*" in ln]
        assert len(rows) == (2 if "wg1" in argv else 3)  # bob, the long name, the z's
        assert any(ln.startswith("  a-very-long") and "…" in ln for ln in rows)
        assert any(ln.startswith("  zzzz") and "…" in ln for ln in rows)
    code, out, _ = run(capsys, "status", "wg1", "--width", "120")
    assert LONG_NAME in out and max(len(ln) for ln in out.splitlines()) <= 120


def test_status_field_is_tab_separated_like_wg_show(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "wg0", "modes")
    assert (code, out) == (0, f"{ALICE}\tinline\n{BOB}\tvanilla\n{ANON}\tinline\n")
    assert run(capsys, "status", "wg0", "peers")[1] == f"{ALICE}\n{BOB}\n{ANON}\n"
    assert run(capsys, "status", "wg0", "names")[1].splitlines()[2] == f"{ANON}\t"
    assert run(capsys, "status", "wg0", "cores")[1].splitlines()[1] == f"{BOB}\t-1"
    assert run(capsys, "status", "wg0", "rates")[1].splitlines()[1] == (
        f"{BOB}\t23500000000\t11000000000")
    assert run(capsys, "status", "wg0", "cpu")[1].splitlines()[0] == f"{ALICE}\t0.420"
    assert run(capsys, "status", "wg0", "control")[1].splitlines()[1] == f"{BOB}\tpinned"
    assert run(capsys, "status", "all", "pool")[1] == "wg0\t0-1\nwg1\t\n"
    code, out, _ = run(capsys, "status", "all", "modes")
    assert out.splitlines()[-1] == f"wg1\t{CARLA}\tinline"
    code, out, _ = run(capsys, "status", "wg0", "modes", "--mode", "vanilla")
    assert out == f"{BOB}\tvanilla\n"
    code, out, _ = run(capsys, "status", "wg0", "peers", "--sort", "load")
    assert out.split() == [BOB, ALICE, ANON]
    assert run(capsys, "status", "wg9", "modes") == (
        1, "", "wghybrid: wg9 is not an interface the daemon manages\n")


def test_status_bad_arguments_are_usage_errors(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    err = usage_error(capsys, "status", "wg0", "transfers")
    assert "unknown field 'transfers'; the fields are: peers, names, modes" in err
    assert err.count("\n") >= 2 and err.startswith("usage: wghybrid status")
    assert "invalid choice: 'load2'" in usage_error(capsys, "status", "--sort", "load2")
    assert "invalid choice: 'both'" in usage_error(capsys, "status", "--mode", "both")
    assert "bad number '0'" in usage_error(capsys, "status", "--top", "0")
    assert "bad number 'x'" in usage_error(capsys, "--top", "x")
    assert "bad width '20'" in usage_error(capsys, "status", "--width", "20")
    assert "argument --watch: bad interval '-1'" in usage_error(capsys, "status", "--watch", "-1")
    assert "--json takes one snapshot" in usage_error(capsys, "status", "--watch", "--json")
    assert "not a FIELD" in usage_error(capsys, "status", "wg0", "modes", "--watch")
    assert "FIELD is tab-separated" in usage_error(capsys, "status", "wg0", "modes", "--json")
    assert "invalid choice: 'yes'" in usage_error(capsys, "--color", "yes")
    assert daemon.requests == []  # refused before asking the daemon anything


def test_colour_mode_as_wg_color_mode(daemon: FakeDaemon, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WG_COLOR_MODE", raising=False)
    assert "\x1b[" not in run(capsys, "status")[1]  # captured: not a terminal
    assert "\x1b[32m" in run(capsys, "status", "--color", "always")[1]
    assert "\x1b[" in run(capsys, "--color", "always", "policy", "show")[1]
    monkeypatch.setenv("WG_COLOR_MODE", "always")
    assert "\x1b[32m" in run(capsys, "status")[1]
    assert "\x1b[" not in run(capsys, "status", "--color", "never")[1]  # the flag wins
    assert "\x1b[" not in run(capsys, "status", "wg0", "modes")[1]  # a FIELD: never
    monkeypatch.setenv("WG_COLOR_MODE", "bogus")  # anything else: auto
    assert "\x1b[" not in run(capsys, "status")[1]
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("WG_COLOR_MODE", "always")  # asked for explicitly: NO_COLOR is auto's
    assert "\x1b[" in run(capsys, "status")[1]


def _through_pty(argv: list[str], env: dict[str, str], enough: Any) -> tuple[int, bytes, bytes]:
    """Run the CLI on a terminal; once `enough(screen)`, SIGINT it, as Ctrl-C does."""
    master, slave = pty.openpty()
    # A shell starts a foreground command with SIGINT at its default; a test run started
    # in the background of a script inherits it ignored (bash ignores SIGINT for
    # asynchronous commands), and so would the child, which then never sees Ctrl-C. A
    # handler in this process becomes the default in the child at exec.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "wghybrid", *argv], stdin=slave,
                                stdout=slave, stderr=subprocess.PIPE, env=env)
    finally:
        signal.signal(signal.SIGINT, old)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while not enough(seen) and time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            seen += data
        proc.send_signal(signal.SIGINT)
        # Keep draining the terminal until the child closes it: what it writes on its way
        # out (the rest of a frame, the cursor restored) blocks it on a full pty buffer
        # otherwise, and it never exits (seen under CI's load: a 30 s timeout).
        end = time.monotonic() + 30
        while time.monotonic() < end:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
            elif proc.poll() is not None:
                break
        code = proc.wait(30)
        err = proc.stderr.read() if proc.stderr else b""
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()  # also on a failure: an unclosed pipe fails a later test
    return code, seen, err


def test_watch_refreshes_the_screen_and_ends_cleanly_on_ctrl_c(daemon: FakeDaemon) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "WG_COLOR_MODE")}
    clear = b"\x1b[H\x1b[2J"
    code, screen, err = _through_pty(["status", "--watch", "0.1"], env,
                                     lambda seen: seen.count(clear) >= 3)
    assert (code, err) == (0, b"")  # no traceback, status 0
    frames = screen.split(clear)[1:]
    assert len(frames) >= 3
    plain = [re.sub(rb"\x1b\[[0-9;]*m", b"", f) for f in frames]
    assert all(b"every 0.1 s" in f and b"interface: wg0" in f for f in plain[:2]), frames
    assert b"\x1b[32m" in frames[0]  # a terminal: colour
    assert len([r for r in daemon.requests if r[1] == "/v1/status"]) >= 3


def test_watch_keeps_going_when_the_daemon_goes_away(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = []

    def sleep(seconds: float) -> None:
        frames.append(seconds)
        if len(frames) == 1:
            daemon.broken = True
        elif len(frames) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_status.time, "sleep", sleep)
    code, out, err = run(capsys, "status", "--watch", "5")
    assert (code, err) == (0, "") and frames == [5.0, 5.0, 5.0]
    shown = out.split("every 5 s, ")
    assert len(shown) == 4 and "interface: wg0" in shown[1]
    assert "wghybrid: GET /v1/status: HTTP 500 Internal Server Error" in shown[2]
    daemon.broken = True
    assert run(capsys, "status", "--watch")[0] == 1  # at once: nothing to watch


@pytest.mark.parametrize(("argv", "interface", "field", "interval"), [
    (["status", "--watch"], None, None, 2.0),
    (["status", "--watch", "2"], None, None, 2.0),
    (["status", "--watch", "0.5"], None, None, 0.5),
    (["status", "--watch", "wg0"], "wg0", None, 2.0),
    (["status", "wg0", "--watch"], "wg0", None, 2.0),
    (["status", "--watch=2", "wg0"], "wg0", None, 2.0),
    (["status", "--watch", "wg0", "5"], "wg0", None, 5.0),
    (["status", "--watch", "all", "--sort", "name"], "all", None, 2.0),
    (["status", "wg0", "--watch", "3"], "wg0", None, 3.0),
    (["--watch"], None, None, 2.0),
    (["--watch", "3"], None, None, 3.0),
    (["--watch", "status", "wg0"], "wg0", None, 2.0),
    (["status", "wg0", "modes"], "wg0", "modes", None),
])
def test_watch_takes_a_number_and_leaves_the_interface_alone(
    argv: list[str], interface: str | None, field: str | None, interval: float | None
) -> None:
    args = cli.build_parser().parse_args(cli_parse.watch_words_first(argv))
    assert (args.interface, args.field, getattr(args, "watch", None)) == (
        interface, field, interval)


@pytest.mark.parametrize("argv", [
    ["status", "--watch", "0"], ["status", "--watch", "-1"], ["status", "--watch", "nan"],
    ["status", "--watch", "1e9"], ["status", "--watch", "inf"], ["status", "--watch=abc"],
    ["status", "--watch=wg0"], ["status", "wg0", "--watch", "0.01"],
    ["status", "--watch", "10x"], ["--watch", "-5"], ["--watch=nan", "status"],
])
def test_a_bad_watch_interval_is_a_usage_error_naming_the_option(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    err = usage_error(capsys, *argv)
    assert "error: argument --watch: bad interval" in err and "from 0.1 to 3600" in err
    assert "Traceback" not in err and daemon.requests == []


def test_status_watch_wg0_watches_wg0(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_status.time, "sleep", sleep)
    for argv in (["status", "--watch", "wg0"], ["status", "wg0", "--watch"],
                 ["status", "--watch=2", "wg0"]):
        code, out, err = run(capsys, *argv)
        assert (code, err) == (0, "") and slept.pop() == 2.0, argv
        assert "every 2 s, " in out and "interface: wg0" in out and "wg1" not in out
    code, out, err = run(capsys, "status", "--watch", "wg9")  # a word: an interface
    assert (code, err) == (1, "wghybrid: wg9 is not an interface the daemon manages\n")
    assert "not a FIELD" in usage_error(capsys, "status", "--watch", "wg0", "modes")


def test_status_transfer_is_the_byte_counters_of_metrics(
    daemon: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "status", "wg0", "transfer")
    assert (code, out) == (0, f"{ALICE}\t1234\t42\n{BOB}\t950000000000\t0\n{ANON}\t0\t0\n")
    code, out, _ = run(capsys, "status", "all", "transfer")
    assert out.splitlines()[3:] == [f"wg1\t{CAROL}\t0\t0", f"wg1\t{CARLA}\t0\t0"]
    daemon.metrics = "wghybrid_ticks_total 12\n"  # above per_peer_max: no per-peer series
    code, out, err = run(capsys, "status", "wg0", "transfer")
    assert (code, out) == (1, "")
    assert err.startswith("wghybrid: no per-peer byte counters in /metrics: ")
    assert "and it has 5 (" in err and err.count("\n") == 1


def test_parse_transfer_reads_the_daemons_format() -> None:
    text = (f'wghybrid_peer_receive_bytes_total{{interface="wg0",public_key="{ALICE}"}} 5\n'
            f'wghybrid_peer_transmit_bytes_total{{interface="wg0",public_key="{ALICE}"}} 6\n'
            f'wghybrid_peer_receive_bytes_total{{interface="wg0",public_key="{BOB}"}} nan\n'
            f'wghybrid_peer_info{{interface="wg0",public_key="{BOB}"}} 1\n')
    assert cli_status.parse_transfer(text) == {("wg0", ALICE): (5, 6)}
