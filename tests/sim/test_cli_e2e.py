"""The operator's path, only through the installed `wghybrid` command, against the real
daemon (`wghybrid run --backend sim`) on its real unix socket.

The daemon runs as the unit runs it in one respect that matters to Python: with
MemoryDenyWriteExecute (here the kernel's own PR_SET_MDWE, inherited across exec, where
the kernel has it), so a W+X mapping anywhere in its stack would kill the test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from wghybrid import _render
from wghybrid.model import decode_key

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]
WGHYBRID = str(Path(sys.executable).parent / "wghybrid")
T = TypeVar("T")

# Turn on the kernel's MDWE (Linux >= 6.3), then exec the command line given.
MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
on = libc.prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
print("mdwe:", "on" if on else "unsupported", flush=True)
os.execv(sys.argv[1], sys.argv[1:])
"""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got is not None:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Gateway:
    """A daemon on the simulated gateway and the CLI pointed at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "wghybrid.sock"
        self.policy = root / "policy.toml"
        shutil.copy(ROOT / "policies" / "default.toml", self.policy)
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("WGHYBRID_URL", "WGHYBRID_TOKEN_FILE", "JOURNAL_STREAM")}
        self.env["WGHYBRID_SOCKET"] = str(self.socket)
        self.log = open(root / "daemon.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MDWE_EXEC, WGHYBRID, "run", "--backend", "sim",
             "--scenario", "mixed", "--policy", str(self.policy),
             "--state-dir", str(root / "state")],
            stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([WGHYBRID, *args], capture_output=True, text=True, timeout=30,
                              env=self.env, check=False)

    def ok(self, *args: str) -> str:
        done = self.cli(*args)
        assert done.returncode == 0 and done.stderr == "", (args, done.stderr)
        return done.stdout

    def status(self) -> dict[str, Any]:
        return json.loads(self.ok("status", "--json"))

    def peer(self, name: str) -> dict[str, Any]:
        (found,) = [p for i in self.status()["interfaces"] for p in i["peers"]
                    if p["name"] == name]
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.log.close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    root = Path(tempfile.mkdtemp(prefix="wgh-e2e-", dir="/tmp"))  # short socket path
    gw = Gateway(root)
    yield gw
    if gw.proc.poll() is None:
        gw.proc.kill()
        gw.proc.wait(10)
    if not gw.log.closed:
        gw.log.close()
    shutil.rmtree(root, ignore_errors=True)


def test_operator_path_through_the_cli(gateway: Gateway) -> None:
    gw = gateway
    wait_for("the daemon's first tick", lambda: gw.cli("dump").stdout or None)
    log = (gw.root / "daemon.log").read_text()
    assert log.startswith(("mdwe: on\n", "mdwe: unsupported\n")), log

    # status: the pretty view and the JSON agree on the peers.
    status = gw.status()
    (iface,) = status["interfaces"]
    assert status["backend"] == "sim" and iface["name"] == "wg0"
    assert len(iface["peers"]) == 206
    text = gw.ok()  # plain `wghybrid` is `wghybrid status`
    assert "\x1b[" not in text
    assert "interface: wg0" in text and "  cores: 0-31" in text
    assert any(line.startswith("  elephant-0 ") for line in text.splitlines())

    # dump: one well-formed line per peer.
    rows = [line.split("\t") for line in gw.ok("dump").splitlines()]
    assert len(rows) == 206
    assert all(len(r) == len(_render.DUMP_COLUMNS) for r in rows)
    for r in rows:
        decode_key(r[1])
        assert r[0] == "wg0" and r[3] in ("vanilla", "inline") and r[4] == "auto"

    # override by friendly name: printed as one change, then visible everywhere.
    out = gw.ok("override", "set", "wg0", "mouse-007", "--mode", "vanilla", "--core", "3",
                "--for", "1h", "--reason", "e2e")
    assert out.startswith("[#] override wg0/mouse-007 mode vanilla core 3 until ")
    assert out.count("\n") == 1
    listed = json.loads(gw.ok("override", "list", "--json"))["overrides"]
    key = gw.peer("mouse-007")["public_key"]
    assert [(o["public_key"], o["mode"], o["core"], o["reason"]) for o in listed] == [
        (key, "vanilla", 3, "e2e")
    ]
    applied = wait_for(
        "mouse-007 pinned vanilla on core 3",
        lambda: (p := gw.peer("mouse-007"))["pinned"] and p["mode"] == "vanilla"
        and p["core"] == 3 and p,
    )
    assert applied["override"]["reason"] == "e2e"
    line = next(ln for ln in gw.ok("status", "wg0").splitlines()
                if ln.startswith("  mouse-007 "))
    assert "vanilla (pinned)" in line
    dumped = next(r.split("\t") for r in gw.ok("dump").splitlines() if "\tmouse-007\t" in r)
    assert dumped[1] == key and dumped[4] == "pinned" and dumped[11:13] == ["vanilla", "3"]

    assert gw.ok("override", "clear", "wg0", key[:10]) == "[#] override wg0/mouse-007 cleared\n"
    assert gw.cli("override", "clear", "wg0", "mouse-007").returncode == 1
    assert gw.ok("override", "list") == "no overrides\n"

    # policy reload: a good file is taken, a bad one is refused and the old one runs on.
    assert gw.ok("policy", "reload") == f"[#] policy reloaded: default from {gw.policy}\n"
    gw.policy.write_text(gw.policy.read_text() + "\n[classify]\nbogus = 1\n")
    bad = gw.cli("policy", "reload")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("wghybrid: policy rejected, the running one is unchanged: ")
    assert bad.stderr.count("\n") == 1 and str(gw.policy) in bad.stderr
    shown = json.loads(gw.ok("policy", "show", "--json"))
    assert shown["policy"]["name"] == "default" and shown["error"]
    assert "last policy reload failed" in gw.ok("status")

    # validate uses the daemon's loader on the same file.
    assert gw.cli("validate", str(gw.policy)).returncode == 1
    assert gw.cli("validate", str(ROOT / "policies" / "default.toml")).returncode == 0

    assert gw.stop() == 0
    gone = gw.cli("status")
    assert (gone.returncode, gone.stdout) == (1, "")
    assert gone.stderr == (f"wghybrid: cannot reach the daemon at {gw.socket}: "
                           "No such file or directory (is wghybrid.service running?)\n")
