"""The kernel backend's system knobs on this machine's real networking: a veth pair in a
network namespace of our own (sysfs there is the namespace's, through `ip netns exec`),
RPS, threaded NAPI, steering's probe, pyroute2's link and route look-ups, /proc/stat.

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

from wghybrid import _sysfs

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


def run_in(ns: str, code: str) -> object:
    """Run Python `code` in the namespace (its own /sys); it prints one JSON value."""
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
        check=True, capture_output=True, text=True, cwd=REPO, timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_rps_write_on_veth(ns: str) -> None:
    got = run_in(ns, """
        import json
        from wghybrid import _sysfs
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
        from wghybrid import kernel, _sysfs
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
        from wghybrid import kernel
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


def test_steering_on_veth_falls_back_to_rps(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid import _sysfs
        lines = []
        async def main():
            s = _sysfs.Steering(lines.append)
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


def test_pyroute2_lookups(ns: str) -> None:
    got = run_in(ns, """
        import asyncio, json
        from wghybrid import _genl
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
