"""The kernel backend's system knobs on this machine's real networking: a veth pair in a
network namespace of our own (sysfs there is the namespace's, through `ip netns exec`),
RPS, threaded NAPI, NIC steering (off unless the policy turns it on; its probe; its
preflight against a really read-only /proc/irq, in a mount namespace of its own),
pyroute2's link and route look-ups, /proc/stat.

Needs root (namespaces); the host has no WireGuard, so the genl family itself is tested
in qemu (tests/kernel, kmod/harness/scenarios/daemon_*.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wghybrid.dataplane import _sysfs

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"wghtest-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["link", "add", "va", "type", "veth", "peer", "name", "vb"],
            ["addr", "add", "10.77.0.1/24", "dev", "va"],
            ["link", "set", "va", "up"],
            ["link", "set", "vb", "up"],
            ["link", "set", "lo", "up"],
        ):
            subprocess.run(["ip", "-n", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def run_in(ns: str, code: str, *, own_mounts: bool = False) -> object:
    """Run Python `code` in the namespace (its own /sys); it prints one JSON value.
    `own_mounts`: in a private mount namespace too, so that what it mounts stays there."""
    prefix = ["unshare", "--mount", "--propagation", "private"] if own_mounts else []
    out = subprocess.run(
        ["ip", "netns", "exec", ns, *prefix, sys.executable, "-c", textwrap.dedent(code)],
        check=True, capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rps_write_on_veth(ns: str) -> None:
    got = run_in(ns, """
        import json
        from wghybrid.dataplane import _sysfs
        qs = _sysfs.rx_queues("va")
        _sysfs.write_rps("va", qs[0], frozenset({0}))
        first = open(f"/sys/class/net/va/queues/{qs[0]}/rps_cpus").read()
        _sysfs.write_rps("va", qs[0], frozenset())
        second = open(f"/sys/class/net/va/queues/{qs[0]}/rps_cpus").read()
        print(json.dumps([qs, first, second]))
    """)
    queues, first, second = got  # type: ignore[misc]
    assert queues and queues[0] == "rx-0"
    assert int(first.strip().replace(",", ""), 16) == 1
    assert int(second.strip().replace(",", ""), 16) == 0


def test_threaded_napi_refused_without_napi_is_permanent(ns: str) -> None:
    # A veth without GRO/XDP has no NAPI instance: the kernel answers EOPNOTSUPP, which
    # the backend reports as a permanent "not supported", naming the device.
    got = run_in(ns, """
        import asyncio, json
        from wghybrid.dataplane import kernel, _sysfs
        from wghybrid.model import SetThreadedNapi
        from wghybrid.dataplane import PermanentError
        plane = kernel.KernelDataPlane(None, steer=False)
        try:
            asyncio.run(plane.apply(SetThreadedNapi("va", True)))
            print(json.dumps(["applied", _sysfs.read_threaded("va")]))
        except PermanentError as exc:
            print(json.dumps(["permanent", str(exc)]))
    """)
    assert got[0] == "permanent", got  # type: ignore[index]
    assert "dev va: threaded NAPI is not supported" in got[1]  # type: ignore[index]


def test_no_such_device_is_permanent(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid.dataplane import kernel
        from wghybrid.model import SetThreadedNapi
        from wghybrid.dataplane import PermanentError
        try:
            asyncio.run(kernel.KernelDataPlane(None, steer=False).apply(
                SetThreadedNapi("wg7", True)))
            print(json.dumps("applied"))
        except PermanentError as exc:
            print(json.dumps(str(exc)))
    """)
    assert got == "no WireGuard device 'wg7'"


def test_default_policy_touches_no_nic_setting(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid.dataplane import kernel
        from wghybrid.dataplane import configure_nic_steering
        from wghybrid.model import SetPeerCore
        from wghybrid.policy.load import load_policy, shipped_policy_path
        class Genl:
            async def set_peer(self, *args, **kw):
                calls.append(args)
        calls, lines = [], []
        path = "/sys/class/net/va/queues/rx-0/rps_cpus"
        before = open(path).read()
        async def main():
            plane = kernel.KernelDataPlane(Genl(), change_log=lines.append)
            policy = load_policy(shipped_policy_path("default"))
            await configure_nic_steering(plane, policy.placement.nic_steering)
            await plane.apply(SetPeerCore("wg0", b"k" * 32, 1))
            return plane.steering is None
        off = asyncio.run(main())
        print(json.dumps([off, len(calls), lines, before == open(path).read()]))
    """)
    assert got == [True, 1, [], True]


def test_steering_on_veth_falls_back_to_rps(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid.dataplane import kernel
        from wghybrid.dataplane import configure_nic_steering
        from wghybrid.policy.load import parse_policy
        lines = []
        async def main():
            plane = kernel.KernelDataPlane(None, change_log=lines.append)
            policy = parse_policy("[placement]\\nnic_steering = true\\n", "on.toml")
            await configure_nic_steering(plane, policy.placement.nic_steering)
            s = plane.steering
            await s.steer(b"k" * 32, "va", "10.77.0.2", 40000, 51820, 1)
            sup = s.support["va"]
            return sup.ntuple, sup.rps, s.unsupported
        ntuple, rps, unsupported = asyncio.run(main())
        mask = open("/sys/class/net/va/queues/rx-0/rps_cpus").read().strip()
        print(json.dumps([ntuple, rps, unsupported, lines, mask]))
    """)
    ntuple, rps, unsupported, lines, mask = got  # type: ignore[misc]
    assert ntuple is not None  # veth has no ntuple filters (or no ethtool here)
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: cannot steer to core 1")
    assert rps is None and unsupported == {}
    assert int(mask.replace(",", ""), 16) == 2
    assert lines == ["[#] echo 2 > /sys/class/net/va/queues/rx-0/rps_cpus"]


def test_read_only_proc_irq_refuses_before_ntuple_is_switched_on(ns: str) -> None:
    # /proc/irq made read-only as systemd's ProtectKernelTunables=yes makes it, in a
    # mount namespace of the test's own: the real /proc/irq and a copy of it with one
    # IRQ for the veth's queue (a veth has none). A fake ethtool on PATH offers ntuple
    # filters (veth has none) and logs every call.
    got = run_in(ns, """
        import asyncio, json, os, pathlib, shutil, subprocess, tempfile
        from wghybrid.dataplane import _sysfs, kernel
        from wghybrid.dataplane import configure_nic_steering
        from wghybrid.policy.load import parse_policy
        tmp = pathlib.Path(tempfile.mkdtemp())
        calls = tmp / "ethtool.log"
        (tmp / "bin").mkdir()
        fake = tmp / "bin/ethtool"
        fake.write_text("#!/bin/sh\\n"
                        f"echo \\"$*\\" >> {calls}\\n"
                        "[ \\"$1\\" = -k ] && echo \\"ntuple-filters: off\\"\\n"
                        "exit 0\\n")
        fake.chmod(0o755)
        os.environ["PATH"] = f"{tmp / 'bin'}:{os.environ['PATH']}"
        proc = tmp / "proc"
        (proc / "irq/60").mkdir(parents=True)
        (proc / "irq/60/smp_affinity_list").write_text("0\\n")
        (proc / "interrupts").write_text("      CPU0\\n  60:  0  PCI-MSI  va-rx-0\\n")
        real = next(p / "smp_affinity_list" for p in sorted(pathlib.Path("/proc/irq").iterdir())
                    if (p / "smp_affinity_list").exists())
        real_before = _sysfs.write_error(real)
        for d in (proc / "irq", pathlib.Path("/proc/irq")):
            subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
            subprocess.run(["mount", "-o", "remount,bind,ro", str(d)], check=True)
        real_after = _sysfs.write_error(real)
        lines = []
        async def main():
            plane = kernel.KernelDataPlane(None, change_log=lines.append, proc=proc)
            policy = parse_policy("[placement]\\nnic_steering = true\\n", "on.toml")
            await configure_nic_steering(plane, policy.placement.nic_steering)
            plane.steering.run_dir = tmp / "run"
            for core in (0, 0):
                await plane.steering.steer(b"k" * 32, "va", "10.77.0.2", 40000, 51820, core)
        asyncio.run(main())
        mask = open("/sys/class/net/va/queues/rx-0/rps_cpus").read().strip()
        print(json.dumps([real_before, real_after, calls.read_text().splitlines(), lines,
                          (proc / "irq/60/smp_affinity_list").read_text(), mask, str(proc)]))
        subprocess.run(["umount", str(proc / "irq")], check=True)
        shutil.rmtree(tmp)
    """, own_mounts=True)
    real_before, real_after, calls, lines, affinity, mask, proc = got  # type: ignore[misc]
    assert real_before is None and real_after == "Read-only file system"
    assert calls == ["-k va"]  # asked, never switched (no -K), no rule (no -N)
    assert affinity == "0\n"
    assert lines == [
        f"[!] steering on va: no ntuple rules: {proc}/irq/60/smp_affinity_list is not "
        "writable (Read-only file system); under systemd ProtectKernelTunables= mounts it "
        "read-only: see the drop-in in systemd/wghybrid.service (ntuple filters left off, "
        "no IRQ affinity changed): RPS instead",
        "[#] echo 1 > /sys/class/net/va/queues/rx-0/rps_cpus",
    ]
    assert int(mask.replace(",", ""), 16) == 1


def test_pyroute2_lookups(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid.dataplane import _genl
        async def main():
            return await _genl.wireguard_links(), await _genl.route_device("10.77.0.9")
        print(json.dumps(asyncio.run(main())))
    """)
    assert got == [[], "va"]


def test_proc_stat_moves() -> None:
    before = _sysfs.read_core_busy()
    assert len(before) >= (os.cpu_count() or 1)
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
    after = _sysfs.read_core_busy()
    assert (after >= before).all()
    assert int(after.sum() - before.sum()) >= 100_000_000  # 0.3 s busy, in ticks of 10 ms
