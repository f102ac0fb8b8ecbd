"""systemd/wghybrid.service: systemd accepts it, its hardening holds, the daemon runs under it.

`systemd-analyze verify` checks that ExecStart= is executable, and /usr/bin/wghybrid is not
installed here: the tests verify a copy whose ExecStart= points at this venv's wghybrid,
the one change made to the file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "wghybrid.service"
INSTALLED_EXEC = "/usr/bin/wghybrid"

EXPOSURE_MAX = 2.0
"""Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = none).

What cannot be removed costs about 1.6 here: the service runs as root (0.4: the sysfs
knobs it writes are writable by uid 0 only, see the unit's header), on the host network
(0.5) with CAP_NET_ADMIN (0.2), no PrivateUsers= (0.2: a user namespace would void
CAP_NET_ADMIN on the host's devices), netlink/unix/inet sockets, the full /proc
(/proc/stat), and ProtectClock='s read-only rtc device. 2.0 leaves room for one small
addition and fails if a main protection goes (see test_the_threshold_catches_*)."""

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def venv_wghybrid() -> Path:
    exe = Path(sys.executable).parent / "wghybrid"
    assert exe.is_file(), f"{exe} missing: pip install -e . into this venv"
    return exe


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    text = UNIT.read_text() if text is None else text
    assert text.count(INSTALLED_EXEC) >= 1
    path = tmp_path / "wghybrid.service"
    path.write_text(text.replace(INSTALLED_EXEC, str(venv_wghybrid())))
    return path


def directives(text: str) -> dict[str, list[str]]:
    """"Section.Key" -> every value given, in order (systemd keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def exposure(path: Path) -> float:
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True, text=True, check=False, timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert m, f"no exposure level in:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(local_copy(tmp_path))],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # Unknown keys and unparsable values are only warnings to systemd: refuse them here.
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stderr


@needs_systemd_analyze
def test_verify_fails_on_a_broken_copy(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    broken = UNIT.read_text().replace("ProtectHome=yes", "ProtectHomes=yes")
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(local_copy(tmp_path, broken))],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert "ProtectHomes" in proc.stderr


@needs_systemd_analyze
def test_security_exposure_is_at_most_the_threshold(
    tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    score = exposure(local_copy(tmp_path))
    record_property("systemd_exposure", score)
    print(f"systemd-analyze security exposure: {score}")
    assert score <= EXPOSURE_MAX


@needs_systemd_analyze
@pytest.mark.parametrize(
    "dropped",
    [
        ("CapabilityBoundingSet=",),
        ("ProtectSystem=", "ProtectHome=", "PrivateTmp="),
        ("SystemCallFilter=", "RestrictAddressFamilies=", "IPAddressDeny="),
    ],
    ids=["capabilities", "filesystem", "syscalls-network"],
)
def test_the_threshold_catches_a_lost_protection(
    tmp_path: Path, dropped: tuple[str, ...]
) -> None:
    lines = [ln for ln in UNIT.read_text().splitlines() if not ln.startswith(dropped)]
    assert exposure(local_copy(tmp_path, "\n".join(lines) + "\n")) > EXPOSURE_MAX


def test_unit_carries_the_service_contract() -> None:
    d = directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    assert one["Service.Type"] == "notify"
    assert one["Service.NotifyAccess"] == "main"
    assert one["Service.ExecStart"].split()[:4] == [INSTALLED_EXEC, "run", "--backend", "kernel"]
    assert "--policy /etc/wghybrid/policy.toml" in one["Service.ExecStart"]
    assert one["Service.ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.RestartPreventExitStatus"] == "2"  # `wghybrid run`: bad configuration
    assert one["Service.WatchdogSec"] == "30s"
    # The API's connection caps are an eighth of the descriptor limit per listener
    # (wghybrid/_conns.py): the unit sets a limit that leaves them at their maximum.
    from wghybrid._conns import MAX_CONNECTIONS, limits_for

    assert limits_for(2, int(one["Service.LimitNOFILE"]))[0] == MAX_CONNECTIONS
    assert one["Service.RuntimeDirectory"] == "wghybrid"
    assert one["Service.RuntimeDirectoryMode"] == "0750"
    assert one["Service.StateDirectory"] == "wghybrid"
    assert one["Service.ConfigurationDirectory"] == "wghybrid"
    assert one["Service.CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.ProtectKernelTunables"] == "yes"
    # Exactly the writable paths the operations need (RuntimeDirectory= and
    # StateDirectory= are writable by themselves under ProtectSystem=strict).
    assert d["Service.ReadWritePaths"] == ["/sys/devices/virtual/net"]
    assert set(one["Service.RestrictAddressFamilies"].split()) == {
        "AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6",
    }
    assert d["Service.SystemCallFilter"][0] == "@system-service"
    for key in (
        "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelModules",
        "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectHostname",
        "RestrictNamespaces", "LockPersonality", "MemoryDenyWriteExecute", "RestrictRealtime",
        "RestrictSUIDSGID",
    ):
        assert one[f"Service.{key}"] == "yes", key
    assert one["Service.SystemCallArchitectures"] == "native"
    assert one["Service.UMask"] == "0027"
    assert one["Install.WantedBy"] == "multi-user.target"


def test_sysusers_declares_the_group_the_unit_uses() -> None:
    group = directives(UNIT.read_text())["Service.Group"][-1]
    sysusers = (ROOT / "systemd" / "wghybrid.sysusers").read_text().splitlines()
    entries = [ln.split() for ln in sysusers if ln.strip() and not ln.startswith("#")]
    assert ["g", group, "-"] in entries


# MemoryDenyWriteExecute=yes refuses writable+executable mappings. The kernel offers the
# same rule to any process (prctl PR_SET_MDWE, Linux >= 6.3): the daemon's whole stack is
# run under it here, and the child first proves the rule is in force.
_MDWE_CHILD = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print("unsupported", ctypes.get_errno()); sys.exit(3)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        print("W+X mapping allowed: MDWE not in force"); sys.exit(4)

    import asyncio, os, tempfile
    import numpy as np, aiohttp, prometheus_client, pyroute2, systemd.journal
    from aiohttp import web
    import wghybrid.cli, wghybrid.cli.client, wghybrid._log
    try:
        import wghybrid.daemon, wghybrid.sim  # noqa: F401  (once they exist)
    except ImportError:
        pass
    a = np.random.default_rng(1).random((300, 300))
    assert float((a @ a).sum()) > 0
    prometheus_client.generate_latest()

    async def main():
        app = web.Application()
        app.router.add_get("/", lambda r: web.json_response({"ok": True}))
        runner = web.AppRunner(app)
        await runner.setup()
        path = os.path.join(tempfile.mkdtemp(), "s")
        await web.UnixSite(runner, path).start()
        async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as s:
            async with s.get("http://wghybrid/") as resp:
                assert await resp.json() == {"ok": True}
        await runner.cleanup()
    asyncio.run(main())
    print("ok")
    """
)


def test_python_stack_runs_with_memory_deny_write_execute() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _MDWE_CHILD], capture_output=True, text=True, timeout=120,
        check=False,
    )
    if proc.returncode == 3:
        pytest.skip(f"kernel has no PR_SET_MDWE: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")
