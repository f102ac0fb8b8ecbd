"""The daemon against hostile clients, a second instance and odd files (issue 11).

Every test runs the real daemon as a subprocess on the simulated gateway. None measures
speed: where a bound appears (health answering within 1 s while thousands of connections
are held), it is a functional one, two orders of magnitude above the normal latency.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_daemon import QUIET_SCENARIO, DaemonProcess, policy_text, wait_until

from wghybrid.model import encode_key

pytestmark = pytest.mark.sim

GHOST = encode_key(bytes(range(200, 232)))
"""A peer no scenario has."""


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def _exit_code(d: DaemonProcess, timeout: float = 30.0) -> int:
    assert d.proc is not None
    return d.proc.wait(timeout)


def _raw(path: Path, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a fresh unix connection; what comes back until the daemon closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and b"Connection: close" not in out:
                break
        return out


# ---------------------------------------------------------------------------
# One daemon per state directory


async def test_a_second_daemon_on_the_same_state_directory_is_refused(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    (tmp_path / "other").mkdir()
    other = DaemonProcess(tmp_path / "other", scenario=QUIET_SCENARIO)
    other.state_dir = daemon.state_dir  # same state, another socket
    other.start()
    assert _exit_code(other) == 2
    assert daemon.proc is not None
    line = f"another wghybrid daemon (pid {daemon.proc.pid}) is running on the state directory"
    assert line in other.log, other.log
    assert "Traceback" not in other.log
    assert (await daemon.get("/v1/health"))["ticks"] >= 1
    assert daemon.stop() == 0
    other.start()  # the lock went with the first daemon
    try:
        await other.wait_ticks(1)
        assert other.stop() == 0
    finally:
        if other.proc is not None and other.proc.poll() is None:
            other.stop(signal.SIGKILL)


# ---------------------------------------------------------------------------
# Odd files: FIFO, devices, empty, BOM, huge numbers


def test_a_fifo_as_the_policy_is_refused_at_start(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO)
    d.policy.unlink()
    os.mkfifo(d.policy)
    d.start()
    assert _exit_code(d) == 2
    assert "a FIFO, not a regular file" in d.log
    assert "Traceback" not in d.log


async def test_a_fifo_swapped_in_as_the_policy_wedges_neither_reload_nor_stop(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    daemon.policy.unlink()
    os.mkfifo(daemon.policy)
    async with daemon.session() as s, s.post("/v1/policy/reload") as r:
        assert r.status == 422
        assert "a FIFO, not a regular file" in (await r.json())["error"]
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)

    async def rejected_twice() -> bool:
        return daemon.log.count("policy reload rejected") >= 2

    await wait_until(rejected_twice, "the SIGHUP reload to be rejected")
    health = await daemon.get("/v1/health")
    await daemon.wait_ticks(health["ticks"] + 2)
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    "content, reason",
    [
        (b'{"version": 1, "overrides": [{"interface": "wg0", "public_key": "'
         + GHOST.encode() + b'", "mode": "inline", "expires": 1' + b"0" * 400 + b"}]}",
         "override expires is out of range"),
        (b'{"version": 1, "overrides": [{"interface": "wg0", "public_key": "'
         + GHOST[:-2].encode() + b'B=", "mode": "inline"}]}', "not canonical"),
        (b"", "not valid JSON"),
        (b"\xef\xbb\xbf{}", "state version None"),
        (b'{"version": 1, "overrides": ' + b"[" * 100000 + b"]" * 100000 + b"}", "state.json"),
    ],
    ids=["401-digit-expires", "non-canonical-key", "empty", "bom", "deep"],
)
def test_a_bad_state_file_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO)
    d.state_dir.mkdir(parents=True)
    (d.state_dir / "state.json").write_bytes(content)
    d.start()
    assert _exit_code(d) == 2
    errors = [line for line in d.log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "cannot read the state" in errors[0], d.log
    assert reason in errors[0] and str(d.state_dir / "state.json") in errors[0]
    assert "Traceback" not in d.log


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_a_state_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO)
    d.state_dir.mkdir(parents=True)
    path = d.state_dir / "state.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    d.start()
    assert _exit_code(d) == 2
    assert "not a regular file" in d.log and "Traceback" not in d.log


# ---------------------------------------------------------------------------
# Malformed requests and hang-ups


async def test_hang_ups_and_malformed_requests_are_no_internal_error(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    await daemon.wait_ticks(1)
    sock = daemon.socket
    head = b"POST /v1/overrides HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    for _ in range(20):  # hang up mid-body
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(head + b"Content-Length: 1000\r\n\r\n{\"interface\"")
    # an early 413 from Content-Length, without waiting for the body
    answer = _raw(sock, head + b"Content-Length: 99999999999\r\n\r\n{}")
    assert answer.startswith(b"HTTP/1.1 413"), answer
    for junk in (
        b"GET /v1/health HTTP/1.1\r\n\r\n",  # no Host
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + os.urandom(64),  # TLS to plain HTTP
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    ):
        for _ in range(50):
            answer = _raw(sock, junk)
            assert not answer.startswith(b"HTTP/1.1 5"), (junk[:40], answer[:200])
    health = await daemon.get("/v1/health")
    await daemon.wait_ticks(health["ticks"] + 2)
    assert await daemon.metric("wghybrid_internal_errors_total") == 0
    log = daemon.log
    assert "Traceback" not in log
    # every line has a timestamp and a level; the bad clients took a handful of them
    lines = log.splitlines()
    assert all(" WARNING " in ln or " INFO " in ln for ln in lines if "client" in ln), log
    assert len([ln for ln in lines if "wghybrid.clients" in ln]) < 40, log
    assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# Descriptor exhaustion


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


async def test_thousands_of_idle_connections_under_1024_descriptors(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO, policy=policy_text(interval=0.1))
    with d.log_path.open("wb") as out:
        env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
        d.proc = subprocess.Popen(
            d.argv(), stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_limit_fds
        )
    try:
        await _hold_thousands(d)
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)


async def _hold_thousands(d: DaemonProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 3000
    if hard < want + 200:
        pytest.skip(f"the test itself needs {want + 200} descriptors (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want + 200), hard))
    held: list[socket.socket] = []
    try:
        await d.wait_ticks(1)
        keys = [p["public_key"] for p in (await d.get("/v1/peers"))["peers"]]
        before = await d.get("/v1/health")
        for i in range(want):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(str(d.socket))
                # half a request head, never finished
                s.send(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            except OSError:  # EAGAIN: the listen backlog is full right now
                s.close()
                await asyncio.sleep(0.001)
                continue
            held.append(s)
            if i % 200 == 0:
                await asyncio.sleep(0)
        assert len(held) > 1500
        await asyncio.sleep(1.0)  # past _conns.MIN_AGE: the held ones may now be evicted
        # while they are held: health answers within 1 s, and a write (fsync, rename:
        # descriptors) succeeds
        timeout = aiohttp.ClientTimeout(total=1.0)
        for _ in range(5):
            async with aiohttp.ClientSession(
                base_url="http://wghybrid",
                connector=aiohttp.UnixConnector(path=str(d.socket)),
                timeout=timeout,
            ) as s, s.get("/v1/health") as r:
                assert r.status == 200
        body = {"interface": "wg0", "public_key": keys[0], "mode": "vanilla"}
        async with d.session() as s, s.post("/v1/overrides", json=body) as r:
            assert r.status == 201, await r.text()
        after = await d.wait_ticks(before["ticks"] + 5)
        assert after["last_error"] is None
    finally:
        for s in held:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert await d.metric("wghybrid_sample_errors_total") == 0
    assert await d.metric("wghybrid_internal_errors_total") == 0
    assert (await d.get("/v1/health"))["status"] == "ok"
    log = d.log
    assert "Too many open files" not in log and "Traceback" not in log, log[-3000:]
    assert "cannot save state" not in log
    assert "connections, the cap" in log  # the guard said so, once per 10 s at most
    assert d.stop() == 0


# ---------------------------------------------------------------------------
# Roles, tokens and their warnings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"


async def test_tcp_roles_by_token_and_the_warnings(tmp_path: Path) -> None:
    admin, reader = tmp_path / "admin", tmp_path / "reader"
    admin.write_text(ADMIN + "\n")
    admin.chmod(0o600)
    reader.write_text(READER + "\n")
    reader.chmod(0o640)  # group-readable: a warning
    port = _free_port()
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO, extra=(
        "--listen", f"127.0.0.1:{port}", "--token-file", str(admin),
        "--read-token-file", str(reader),
    ))
    d.start()
    try:
        await d.wait_ticks(1)
        key = next(iter(await d.peers()).__iter__())
        key = (await d.peers())[key]["public_key"]
        url = f"http://127.0.0.1:{port}"
        body = {"interface": "wg0", "public_key": key, "mode": "vanilla"}
        async with aiohttp.ClientSession(url) as s:
            def auth(token: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {token}"}

            async with s.get("/v1/status") as r:
                assert r.status == 401
            async with s.get("/v1/status", headers=auth(READER)) as r:
                assert r.status == 200
            async with s.get("/metrics", headers=auth(READER)) as r:
                assert r.status == 200
            async with s.post("/v1/overrides", json=body, headers=auth(READER)) as r:
                assert r.status == 403 and "read-only" in (await r.json())["error"]
            async with s.post("/v1/policy/reload", headers=auth(READER)) as r:
                assert r.status == 403
            async with s.post("/v1/overrides", json=body, headers=auth(ADMIN)) as r:
                assert r.status == 201
            params = {"interface": "wg0", "public_key": key}
            async with s.delete("/v1/overrides", params=params, headers=auth(READER)) as r:
                assert r.status == 403
            async with s.delete("/v1/overrides", params=params, headers=auth(ADMIN)) as r:
                assert r.status == 200
            # 1,000 requests without Host from an unauthenticated client: no traceback
            for _ in range(200):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    c.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
                    c.recv(4096)
        log = d.log
        assert f"--read-token-file {reader} is readable by its group" in log
        assert "without --tls-cert: bearer tokens and answers cross the network" in log
        assert f"--token-file {admin} is readable" not in log
        assert "Traceback" not in log
        assert len(log.splitlines()) < 40, log
        assert d.stop() == 0
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--token-file", "TOKEN"), "--token-file only applies with --listen"),
        (("--read-token-file", "TOKEN"), "--read-token-file only applies with --listen"),
        (("--admin-group", "no-such-group-wgh"), "--admin-group no-such-group-wgh: no such"),
        (("--listen", "127.0.0.1:1", "--token-file", "TOKEN", "--read-token-file", "TOKEN"),
         "must hold different tokens"),
        (("--listen", "127.0.0.1:1", "--token-file", "FIFO"), "a FIFO, not a regular file"),
    ],
)
def test_bad_access_configuration_is_refused(
    tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    token = tmp_path / "token"
    token.write_text(ADMIN)
    token.chmod(0o600)
    os.mkfifo(tmp_path / "fifo")
    extra = tuple(
        {"TOKEN": str(token), "FIFO": str(tmp_path / "fifo")}.get(a, a) for a in extra
    )
    d = DaemonProcess(tmp_path, scenario=QUIET_SCENARIO, extra=extra)
    d.start()
    assert _exit_code(d) == 2
    assert message in d.log and "Traceback" not in d.log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as another user")
async def test_on_the_unix_socket_other_users_only_read(daemon: DaemonProcess) -> None:
    import grp
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    top = Path(tempfile.mkdtemp(prefix="wgh-roles-", dir="/tmp"))  # pytest's tmp is 0700
    top.chmod(0o755)
    daemon.socket = top / "run" / "api.sock"
    daemon.start()
    await daemon.wait_ticks(1)
    group = grp.getgrgid(nobody.pw_gid).gr_gid
    os.chown(daemon.socket.parent, -1, group)
    os.chown(daemon.socket, -1, group)
    key = next(iter((await daemon.peers()).values()))["public_key"]
    # The client is Debian's /usr/bin/python3 with the standard library only: the venv
    # may live where nobody cannot enter (a checkout under /root, 0700).
    body = json.dumps({"interface": "wg0", "public_key": key, "mode": "vanilla"})
    script = f"""
import socket
def status(method, path, body=""):
    s = socket.socket(socket.AF_UNIX)
    s.connect({str(daemon.socket)!r})
    s.sendall((f"{{method}} {{path}} HTTP/1.1\\r\\nHost: x\\r\\n"
               f"Content-Type: application/json\\r\\nContent-Length: {{len(body)}}\\r\\n"
               f"Connection: close\\r\\n\\r\\n{{body}}").encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data.split(b" ", 2)[1].decode()
print(status("GET", "/v1/status"))
print(status("POST", "/v1/overrides", {body!r}))
"""
    out = subprocess.run(
        ["/usr/bin/python3", "-c", script], capture_output=True, text=True, timeout=60,
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/",
    )
    try:
        assert out.stdout.split() == ["200", "403"], (out.stdout, out.stderr)
        assert daemon.stop() == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


# ---------------------------------------------------------------------------
# Overrides for absent peers


async def test_an_override_for_an_absent_peer_is_shown_and_cleared_by_name(
    daemon: DaemonProcess,
) -> None:
    daemon.policy.write_text(policy_text() + f'\n[names]\n"{GHOST}" = "ghost"\n')
    daemon.state_dir.mkdir(parents=True)
    state = {"version": 1, "unmanaged": [], "overrides": [
        {"interface": "wg0", "public_key": GHOST, "mode": "inline", "core": None,
         "expires": None, "reason": "waits for it", "created": time.time()},
    ]}
    (daemon.state_dir / "state.json").write_text(json.dumps(state))
    daemon.start()
    await daemon.wait_ticks(1)
    status = await daemon.get("/v1/status")
    [absent] = status["absent_overrides"]
    assert (absent["public_key"], absent["name"], absent["present"]) == (GHOST, "ghost", False)
    [listed] = (await daemon.get("/v1/overrides"))["overrides"]
    assert listed["present"] is False
    metrics = await daemon.get("/metrics")
    assert f'wghybrid_override_absent{{interface="wg0",public_key="{GHOST}"}} 1.0' in metrics
    assert 'wghybrid_overrides{present="false"} 1.0' in metrics
    shown = daemon.cli("status")
    assert "overrides waiting for a peer that is not present" in shown.stdout
    assert "wg0/ghost" in shown.stdout
    cleared = daemon.cli("override", "clear", "wg0", "ghost")
    assert cleared.returncode == 0, cleared.stderr
    assert "[#] override wg0/ghost cleared" in cleared.stdout
    assert (await daemon.get("/v1/overrides"))["overrides"] == []
    assert daemon.stop() == 0
