"""The operator's path, only through the installed `wghybrid` command, against the real
daemon (`wghybrid run --backend sim`) on its real unix socket.

The daemon runs under the unit's memory and system-call restrictions (SANDBOX_EXEC), so a
W+X mapping or a forbidden system call that breaks it fails this test, not a gateway."""

from __future__ import annotations

import ctypes.util
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

from wghybrid.cli import _dump
from wghybrid.model import decode_key
from wghybrid.policy.load import DATA_PLANE

pytestmark = pytest.mark.sim

ROOT = Path(__file__).resolve().parents[2]
WGHYBRID = str(Path(sys.executable).parent / "wghybrid")
T = TypeVar("T")

# Confine the daemon as systemd/wghybrid.service does, where this machine can without
# systemd, then exec the command line given:
# - MemoryDenyWriteExecute=yes: the kernel's own PR_SET_MDWE (Linux >= 6.3);
# - SystemCallFilter=@system-service ~@privileged @resources with
#   SystemCallErrorNumber=EPERM, and RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET
#   AF_INET6: the same seccomp filter, built with libseccomp from systemd-analyze's own
#   list of the groups.
SANDBOX_EXEC = """
import ctypes, errno, os, socket, subprocess, sys

libc = ctypes.CDLL(None, use_errno=True)
print("mdwe:", "on" if libc.prctl(65, 1, 0, 0, 0) == 0 else "unsupported", flush=True)

def groups():
    text = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"],
                          capture_output=True, text=True, check=True).stdout
    found, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace():
            found[current].append(line.strip())
        else:
            current = line.strip()
            found[current] = []
    return found

def expand(found, names):
    out = set()
    for n in names:
        out |= expand(found, found[n]) if n.startswith("@") else {n}
    return out

class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

try:
    lib = ctypes.CDLL("libseccomp.so.2")
    found = groups()
except (OSError, subprocess.CalledProcessError):
    print("seccomp: unsupported", flush=True)
else:
    allowed = expand(found, ["@system-service"]) - expand(found, ["@privileged", "@resources"])
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, EPERM = 0x7FFF0000, 0x00050000 | errno.EPERM
    ctx = lib.seccomp_init(EPERM)
    for name in sorted(allowed - {"socket"}):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:
            assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 0, None) == 0, name
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    for family in (socket.AF_UNIX, socket.AF_NETLINK, socket.AF_INET, socket.AF_INET6):
        eq = Cmp(0, 4, family, 0)  # SCMP_CMP_EQ on the first argument
        assert lib.seccomp_rule_add_array(ctx, ALLOW, nr, 1, ctypes.byref(eq)) == 0
    assert lib.seccomp_load(ctx) == 0
    print("seccomp: on,", len(allowed), "system calls", flush=True)
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    except PermissionError:
        pass
    else:
        raise SystemExit("the seccomp filter is not in force")
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
            [sys.executable, "-c", SANDBOX_EXEC, WGHYBRID, "run", "--backend", "sim",
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
    sandbox = (gw.root / "daemon.log").read_text().splitlines()[:2]
    assert sandbox[0] in ("mdwe: on", "mdwe: unsupported")
    assert sandbox[1].startswith(("seccomp: on,", "seccomp: unsupported"))
    if shutil.which("systemd-analyze") and ctypes.util.find_library("seccomp"):
        assert sandbox[1].startswith("seccomp: on,"), sandbox

    # status: the pretty view and the JSON agree on the peers.
    status = gw.status()
    (iface,) = status["interfaces"]
    assert status["backend"] == "sim" and iface["name"] == "wg0"
    assert len(iface["peers"]) == 206
    text = gw.ok()  # plain `wghybrid` is `wghybrid status`
    assert "\x1b[" not in text
    assert "interface: wg0" in text and "  cores: 0-31" in text
    assert any(line.startswith("  elephant-0 ") for line in text.splitlines())
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "  delivered: " in text and "  core load: " in text
    summary = iface["summary"]
    assert summary["peers"]["inline"] + summary["peers"]["vanilla"] == 206
    assert [c["core"] for c in summary["cores"]] == list(range(32))
    # the simulator's names are not the policy file's, and policy show says so
    pol = json.loads(gw.ok("policy", "show", "--json"))["policy"]
    assert pol["names"] == {} and len(pol["name_sources"]) == 206
    assert {s["from"] for s in pol["name_sources"].values()} == {DATA_PLANE}
    assert "# 206 more name(s), not from this file" in gw.ok("policy", "show")
    modes = gw.ok("status", "wg0", "modes").splitlines()
    assert len(modes) == 206 and all(m.split("\t")[1] in ("vanilla", "inline") for m in modes)
    transfer = [line.split("\t") for line in gw.ok("status", "wg0", "transfer").splitlines()]
    assert len(transfer) == 206 and all(int(rx) > 0 and int(tx) > 0 for _, rx, tx in transfer)

    # dump: one well-formed line per peer.
    rows = [line.split("\t") for line in gw.ok("dump").splitlines()]
    assert len(rows) == 206
    assert all(len(r) == len(_dump.DUMP_COLUMNS) for r in rows)
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
    def pinned() -> dict[str, Any] | None:
        p = gw.peer("mouse-007")
        return p if p["pinned"] and p["mode"] == "vanilla" and p["core"] == 3 else None

    applied = wait_for("mouse-007 pinned vanilla on core 3", pinned)
    assert applied["override"]["reason"] == "e2e"
    line = next(ln for ln in gw.ok("status", "wg0").splitlines()
                if ln.startswith("  mouse-007 "))
    assert line.split()[1] == "vanilla*"  # *: pinned
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
