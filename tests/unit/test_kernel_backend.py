"""KernelDataPlane against a fake genl client and a fake /sys and /proc: samples as
devices come and go, interrupted dumps, module reloads, errno -> transient/permanent,
threaded NAPI, and steering decisions with a fake ethtool: off unless the policy turns it
on (then nothing NIC-level is touched), its preflight (nothing switched before every file
the step needs is writable and irqbalance is not running), and putting things back."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wghybrid.daemon.service import Daemon
from wghybrid.daemon.state import StateStore
from wghybrid.dataplane import (
    DataPlane,
    NicSteering,
    PermanentError,
    TransientError,
    _genl,
    _sysfs,
    configure_nic_steering,
    kernel,
)
from wghybrid.model import Mode, SetCryptCores, SetPeerCore, SetPeerMode, SetThreadedNapi
from wghybrid.policy import Policy
from wghybrid.policy.load import load_policy, parse_policy, shipped_policy_dir
from wghybrid.sim import SimDataPlane, parse_scenario

pytestmark = pytest.mark.unit

RECORD = struct.Struct("<32s8QiBB2x")


def key(i: int) -> bytes:
    return bytes([i]) * 32


def records(*peers: tuple[int, int, int]) -> np.ndarray:
    """(key number, rx_bytes, mode) -> parsed records."""
    blob = b"".join(RECORD.pack(key(k), rx, 0, 0, 0, 0, 0, 0, 7, -1, m, 0) for k, rx, m in peers)
    return _genl.parse_records([blob], _genl.RECORD_SIZE)


class FakeGenl:
    def __init__(self) -> None:
        self.devices: dict[str, tuple[frozenset[int], np.ndarray]] = {}
        self.interrupted = 0
        self.family_id = 20
        self.kernel_family_id = 20
        self.missing = False
        self.reopens = 0
        self.errors: list[int] = []
        self.calls: list[tuple[object, ...]] = []

    def close(self) -> None:
        self.calls.append(("close",))

    async def family_changed(self) -> bool:
        if self.missing:
            raise _genl.FamilyMissing()
        return self.kernel_family_id != self.family_id

    async def reopen(self) -> None:
        self.reopens += 1
        self.family_id = self.kernel_family_id

    def _fail(self, name: str) -> None:
        if self.missing or self.family_id != self.kernel_family_id:
            raise _genl.GenlError(errno.ENOENT, "stale family")
        if self.errors:
            code = self.errors.pop(0)
            raise _genl.GenlError(code, f"dev {name}: {errno.errorcode[code]}")
        if name not in self.devices:
            raise _genl.GenlError(errno.ENODEV, f"dev {name}: no such device")

    async def get_device(self, name: str) -> _genl.Device:
        self._fail(name)
        cpus, recs = self.devices[name]
        return _genl.Device(1, name, cpus, len(recs), 0)

    async def stats(self, name: str) -> np.ndarray:
        self._fail(name)
        if self.interrupted:
            self.interrupted -= 1
            raise _genl.DumpInterrupted(name)
        return self.devices[name][1]

    async def set_peer(self, name: str, k: bytes, mode: int | None = None,
                       core: int | None = None) -> None:
        self._fail(name)
        self.calls.append(("set_peer", name, k, mode, core))

    async def set_device(self, name: str, cpus: frozenset[int]) -> None:
        self._fail(name)
        self.calls.append(("set_device", name, cpus))


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    sys, proc = tmp_path / "sys", tmp_path / "proc"
    for dev, threaded in (("wg0", "0"), ("wg1", "1")):
        (sys / "class/net" / dev).mkdir(parents=True)
        (sys / "class/net" / dev / "threaded").write_text(threaded + "\n")
    proc.mkdir()
    (proc / "stat").write_text("cpu 1 1 1 1\ncpu0 100 0 0 9\ncpu1 200 0 0 9\n")
    return sys, proc


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeGenl:
    g = FakeGenl()
    g.devices["wg0"] = (frozenset({0, 1, 2, 3}), records((1, 100, 0), (2, 200, 1)))
    g.devices["wg1"] = (frozenset({1}), records((3, 300, 1)))

    async def links() -> list[tuple[int, str]]:
        return [(i + 5, name) for i, name in enumerate(g.links)]

    g.links = ["wg0", "wg1"]  # type: ignore[attr-defined]
    monkeypatch.setattr(_genl, "wireguard_links", links)
    return g


def plane(fake: FakeGenl, roots: tuple[Path, Path]) -> kernel.KernelDataPlane:
    lines: list[str] = []
    p = kernel.KernelDataPlane(fake, steer=False, change_log=lines.append,  # type: ignore[arg-type]
                               sys=roots[0], proc=roots[1])
    p.lines = lines  # type: ignore[attr-defined]
    return p


async def test_is_a_dataplane(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    assert isinstance(plane(fake, roots), DataPlane)


async def test_sample_columns(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    s = await plane(fake, roots).sample()
    assert s.cores == 2
    assert s.core_busy_ns.tolist() == [10**9, 2 * 10**9]  # CLK_TCK 100 on Linux
    assert [i.name for i in s.interfaces] == ["wg0", "wg1"]
    assert s.interfaces[0].crypt_cores == frozenset({0, 1})  # only online cores
    assert [i.threaded_napi for i in s.interfaces] == [False, True]
    assert s.peers.iface.tolist() == [0, 0, 1]
    assert s.peers.rx_bytes.tolist() == [100, 200, 300]
    assert s.peers.mode.tolist() == [0, 1, 1]
    assert s.peers.core.tolist() == [-1, -1, -1]
    assert s.peers.epoch.tolist() == [7, 7, 7]
    assert [bytes(k) for k in s.peers.key] == [key(1), key(2), key(3)]


async def test_device_vanishing_between_link_dump_and_stats(
    fake: FakeGenl, roots: tuple[Path, Path]
) -> None:
    del fake.devices["wg0"]
    s = await plane(fake, roots).sample()
    assert [i.name for i in s.interfaces] == ["wg1"]
    assert s.peers.iface.tolist() == [0]


async def test_no_device_is_an_empty_sample(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    fake.links = []  # type: ignore[attr-defined]
    s = await plane(fake, roots).sample()
    assert s.interfaces == () and len(s.peers) == 0


async def test_interrupted_dump_is_taken_again(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    p = plane(fake, roots)
    fake.interrupted = kernel.DUMP_RETRIES - 1
    s = await p.sample()
    assert len(s.peers) == 3 and p.dump_retries == kernel.DUMP_RETRIES - 1
    fake.interrupted = kernel.DUMP_RETRIES
    with pytest.raises(TransientError, match="changed during 5 dumps"):
        await p.sample()


async def test_module_reloaded_reopens(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    p = plane(fake, roots)
    fake.kernel_family_id = 21
    assert len((await p.sample()).peers) == 3
    assert fake.reopens == 1 == p.reopened


async def test_apply_after_reload_retries_once(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    p = plane(fake, roots)
    fake.kernel_family_id = 22
    await p.apply(SetPeerMode("wg0", key(1), Mode.INLINE))
    assert fake.reopens == 1
    assert ("set_peer", "wg0", key(1), 1, None) in fake.calls


async def test_module_unloaded_is_transient(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    fake.missing = True
    with pytest.raises(TransientError, match="genl family is not registered: load the patched"):
        await plane(fake, roots).sample()
    with pytest.raises(TransientError, match="not registered"):
        await plane(fake, roots).apply(SetPeerMode("wg0", key(1), Mode.INLINE))


@pytest.mark.parametrize(
    ("code", "kind", "message"),
    [
        (errno.ENOENT, PermanentError, "no peer AQEBAQEB on wg0"),
        (errno.ENODEV, PermanentError, "no WireGuard device 'wg0'"),
        (errno.EPERM, PermanentError, "needs CAP_NET_ADMIN"),
        (errno.EINVAL, PermanentError, "EINVAL"),
        (errno.ERANGE, PermanentError, "ERANGE"),
        (errno.EOPNOTSUPP, PermanentError, "not a WireGuard device"),
        (errno.EBUSY, TransientError, "EBUSY"),
        (errno.EAGAIN, TransientError, "EAGAIN"),
        (errno.ENOBUFS, TransientError, "ENOBUFS"),
        (errno.ETIMEDOUT, TransientError, "ETIMEDOUT"),
    ],
)
async def test_apply_errors_are_sorted(
    fake: FakeGenl, roots: tuple[Path, Path], code: int, kind: type, message: str
) -> None:
    fake.errors = [code]
    with pytest.raises(kind, match=message) as info:
        await plane(fake, roots).apply(SetPeerMode("wg0", key(1), Mode.INLINE))
    assert "peer wg0/AQEBAQEB" in str(info.value) or code in (errno.ENOENT, errno.ENODEV)


async def test_device_ops(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    p = plane(fake, roots)
    await p.apply(SetCryptCores("wg0", frozenset({1})))
    await p.apply(SetPeerCore("wg1", key(3), 1))
    await p.apply(SetThreadedNapi("wg0", True))
    assert ("set_device", "wg0", frozenset({1})) in fake.calls
    assert ("set_peer", "wg1", key(3), None, 1) in fake.calls
    assert (roots[0] / "class/net/wg0/threaded").read_text() == "1"
    with pytest.raises(PermanentError, match="no WireGuard device 'wg9'"):
        await p.apply(SetCryptCores("wg9", frozenset({1})))
    with pytest.raises(PermanentError, match="no WireGuard device 'wg9'"):
        await p.apply(SetThreadedNapi("wg9", True))
    (roots[0] / "class/net/wg1/threaded").unlink()
    with pytest.raises(PermanentError, match="no threaded NAPI"):
        await p.apply(SetThreadedNapi("wg1", False))


async def test_closed_plane_refuses(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    p = plane(fake, roots)
    await p.close()
    assert ("close",) in fake.calls
    with pytest.raises(PermanentError, match="closed"):
        await p.sample()


async def test_open_without_the_family(monkeypatch: pytest.MonkeyPatch) -> None:
    async def missing(self: _genl.Genl) -> None:
        raise _genl.FamilyMissing()

    monkeypatch.setattr(_genl.Genl, "open", missing)
    with pytest.raises(PermanentError, match=r"load the patched wireguard.ko \(kmod/\)"):
        await kernel.open_dataplane()


# -- steering -------------------------------------------------------------------------


class FakeEthtool:
    def __init__(self, ntuple: str) -> None:
        self.ntuple = ntuple
        self.argv: list[list[str]] = []
        self.next_id = 1023

    async def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.argv.append(argv)
        if argv[1] == "-k":
            return 0, f"Features for {argv[2]}:\nntuple-filters: {self.ntuple}\n"
        if argv[1] == "-N" and "delete" in argv:
            return 0, ""
        if argv[1] == "-N":
            self.next_id -= 1
            return 0, f"Added rule with ID {self.next_id + 1}\n"
        if argv[1] == "-K" and argv[3:] in (["ntuple", "on"], ["ntuple", "off"]):
            self.ntuple = argv[4]
            return 0, ""
        return 1, "unexpected"

    def switched(self) -> list[list[str]]:
        """The feature switches asked for (ethtool -K)."""
        return [a for a in self.argv if a[1] == "-K"]


def nic_tree(tmp_path: Path, queues: int, irqs: bool) -> tuple[Path, Path]:
    sys, proc = tmp_path / "sys", tmp_path / "proc"
    for q in range(queues):
        d = sys / "class/net/eth0/queues" / f"rx-{q}"
        d.mkdir(parents=True)
        (d / "rps_cpus").write_text("0\n")
    proc.mkdir()
    lines = ["   CPU0 CPU1"]
    if irqs:
        for q in range(queues):
            lines.append(f" {40 + q}: 0 0 PCI-MSI edge eth0-TxRx-{q}")
            (proc / "irq" / str(40 + q)).mkdir(parents=True)
            (proc / "irq" / str(40 + q) / "smp_affinity_list").write_text("0-1\n")
    (proc / "interrupts").write_text("\n".join(lines) + "\n")
    return sys, proc


def steering(tmp_path: Path, lines: list[str], eth: FakeEthtool,
             **kw: object) -> _sysfs.Steering:
    """A Steering on the fake trees; irqbalance's socket is looked for in tmp_path/run,
    not in this machine's /run."""
    sys, proc = tmp_path / "sys", tmp_path / "proc"
    return _sysfs.Steering(lines.append, sys=sys, proc=proc, run_dir=tmp_path / "run",
                           run=eth, **kw)  # type: ignore[arg-type]


async def test_steering_with_ntuple(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    lines: list[str] = []
    eth = FakeEthtool("on")
    s = steering(tmp_path, lines, eth)
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    assert eth.argv[-1] == ["ethtool", "-N", "eth0", "flow-type", "udp4", "src-ip", "10.0.0.2",
                            "src-port", "40000", "dst-port", "51820", "action", "1"]
    assert (proc / "irq/41/smp_affinity_list").read_text() == "1"
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 0)  # moved: old rule deleted
    assert ["ethtool", "-N", "eth0", "delete", "1023"] in eth.argv
    assert lines == [
        "[#] echo 1 > " + str(proc / "irq/41/smp_affinity_list"),
        "[#] " + " ".join(eth.argv[1]),
        "[#] ethtool -N eth0 delete 1023",
        "[#] echo 0 > " + str(proc / "irq/40/smp_affinity_list"),
        "[#] " + " ".join(eth.argv[-1]),
    ]
    assert s.unsupported == {}


async def test_steering_falls_back_to_rps(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 1, irqs=False)
    lines: list[str] = []
    s = _sysfs.Steering(lines.append, sys=sys, proc=proc, run=FakeEthtool("off [fixed]"))
    await s.steer(key(1), "eth0", "10.0.0.2", 1, 51820, 1)
    await s.steer(key(2), "eth0", "10.0.0.3", 1, 51820, 1)  # same core set: no write
    await s.steer(key(3), "eth0", "10.0.0.4", 1, 51820, 0)
    assert (sys / "class/net/eth0/queues/rx-0/rps_cpus").read_text() == "3"
    assert lines == [
        f"[#] echo 2 > {sys}/class/net/eth0/queues/rx-0/rps_cpus",
        f"[#] echo 3 > {sys}/class/net/eth0/queues/rx-0/rps_cpus",
    ]


async def test_steering_unsupported_is_said_once(tmp_path: Path) -> None:
    sys, proc = tmp_path / "sys", tmp_path / "proc"
    (sys / "class/net/eth0").mkdir(parents=True)
    proc.mkdir()
    lines: list[str] = []
    s = _sysfs.Steering(lines.append, sys=sys, proc=proc, run=FakeEthtool("off [fixed]"))
    for core in (0, 1, 0):
        await s.steer(key(1), "eth0", "10.0.0.2", 1, 51820, core)
    assert len(lines) == 1
    assert lines[0].startswith("[!] steering on eth0: no ntuple filters")
    assert "RPS: no RX queues" in s.unsupported["eth0"]


async def test_core_change_steers_with_cached_endpoints(
    fake: FakeGenl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys, proc = nic_tree(tmp_path, 1, irqs=False)
    reads: list[str] = []

    async def endpoints(ifname: str) -> dict[bytes, _genl.Endpoint]:
        reads.append(ifname)
        return {key(1): _genl.Endpoint("10.0.0.2", 40000, 51820),
                key(2): _genl.Endpoint("10.0.0.3", 40001, 51820)}

    async def route(address: str) -> str:
        return "eth0"

    monkeypatch.setattr(_genl, "wireguard_endpoints", endpoints)
    monkeypatch.setattr(_genl, "route_device", route)
    lines: list[str] = []
    p = kernel.KernelDataPlane(fake, change_log=lines.append,  # type: ignore[arg-type]
                               sys=sys, proc=proc)
    await p.set_nic_steering(True)
    assert p.steering is not None
    p.steering.run = FakeEthtool("off [fixed]")
    await p.apply(SetPeerCore("wg0", key(1), 1))
    await p.apply(SetPeerCore("wg0", key(2), 0))
    await p.apply(SetPeerCore("wg0", key(9), 0))  # unknown peer: asked again only later
    assert reads == ["wg0"]
    assert (sys / "class/net/eth0/queues/rx-0/rps_cpus").read_text() == "3"
    assert [line.split(" > ")[0] for line in lines] == ["[#] echo 2", "[#] echo 3"]


async def test_steering_failure_does_not_fail_the_core_change(
    fake: FakeGenl, roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ifname: str) -> dict[bytes, _genl.Endpoint]:
        raise RuntimeError("pyroute2 surprise")

    monkeypatch.setattr(_genl, "wireguard_endpoints", broken)
    p = kernel.KernelDataPlane(fake, steer=True,  # type: ignore[arg-type]
                               sys=roots[0], proc=roots[1])
    await p.apply(SetPeerCore("wg0", key(1), 1))
    assert ("set_peer", "wg0", key(1), None, 1) in fake.calls


async def test_failed_reading_is_transient(fake: FakeGenl, roots: tuple[Path, Path]) -> None:
    fake.errors = [errno.ENOENT]  # e.g. the module reloaded between family check and dump
    with pytest.raises(TransientError, match="reading counters: ENOENT"):
        await plane(fake, roots).sample()


# -- NIC steering: off by default, preflight, irqbalance, putting back ------------------


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` and what it holds."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


async def no_command(argv: list[str]) -> tuple[int, str]:
    raise AssertionError(f"ran {argv}")


def test_nic_steering_is_off_by_default() -> None:
    assert Policy().placement.nic_steering is False
    for path in sorted(shipped_policy_dir().glob("*.toml")):
        assert load_policy(path, online_cores=32).placement.nic_steering is False, path.name
    on = parse_policy("[placement]\nnic_steering = true\n", "p.toml", 4)
    assert on.placement.nic_steering is True
    with pytest.raises(ValueError, match=r"p.toml: placement.nic_steering: expected true or "
                                         r"false, got a string \(\"yes\"\)"):
        parse_policy('[placement]\nnic_steering = "yes"\n', "p.toml", 4)


async def test_with_steering_off_nothing_nic_level_is_touched(
    fake: FakeGenl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    before = snapshot(tmp_path)
    looked_up: list[str] = []

    async def endpoints(ifname: str) -> dict[bytes, _genl.Endpoint]:
        looked_up.append(ifname)
        return {key(1): _genl.Endpoint("10.0.0.2", 40000, 51820)}

    async def route(address: str) -> str:
        looked_up.append(address)
        return "eth0"

    async def no_exec(*argv: object, **kw: object) -> None:
        raise AssertionError(f"ran {argv}")

    monkeypatch.setattr(_genl, "wireguard_endpoints", endpoints)
    monkeypatch.setattr(_genl, "route_device", route)
    monkeypatch.setattr(_sysfs, "run_command", no_command)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_exec)
    lines: list[str] = []
    # As the daemon opens it (open_dataplane's default) and as the policy leaves it.
    p = kernel.KernelDataPlane(fake, change_log=lines.append,  # type: ignore[arg-type]
                               sys=sys, proc=proc)
    assert p.steering is None
    await configure_nic_steering(p, Policy().placement.nic_steering)
    for core in (1, 0, -1):
        await p.apply(SetPeerCore("wg0", key(1), core))
    assert [c for c in fake.calls if c[0] == "set_peer"] == [
        ("set_peer", "wg0", key(1), None, core) for core in (1, 0, -1)
    ]  # the module's per-peer core still applies
    assert p.steering is None and p.unsupported == {}
    assert looked_up == [] and lines == []
    assert snapshot(tmp_path) == before


async def test_open_dataplane_leaves_steering_off(monkeypatch: pytest.MonkeyPatch) -> None:
    async def opened(self: _genl.Genl) -> None:
        self.family_id = 30

    monkeypatch.setattr(_genl.Genl, "open", opened)
    plane = await kernel.open_dataplane()
    assert plane.steering is None
    assert isinstance(plane, NicSteering)


def read_only_irq(path: Path) -> str | None:
    """/proc/irq as systemd's ProtectKernelTunables=yes leaves it; the rest writable."""
    return os.strerror(errno.EROFS) if "irq" in path.parts else _sysfs.write_error(path)


async def test_preflight_refuses_before_ntuple_is_switched_on(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    lines: list[str] = []
    eth = FakeEthtool("off")  # ntuple filters the NIC has, not yet on
    s = steering(tmp_path, lines, eth, writable=read_only_irq)
    for k, core in ((1, 1), (2, 1), (3, 0)):
        await s.steer(key(k), "eth0", f"10.0.0.{k}", 40000, 51820, core)
    assert eth.switched() == [] and eth.ntuple == "off"  # never switched on
    assert not any(a[1] == "-N" for a in eth.argv)
    for irq in (40, 41):
        assert (proc / f"irq/{irq}/smp_affinity_list").read_text() == "0-1\n"
    # RPS instead, and the refusal said once, naming the file, why, and what was kept.
    assert (sys / "class/net/eth0/queues/rx-0/rps_cpus").read_text() == "3"
    refusal = [line for line in lines if line.startswith("[!]")]
    assert refusal == [
        f"[!] steering on eth0: no ntuple rules: {proc}/irq/40/smp_affinity_list is not "
        "writable (Read-only file system) (and 1 more); under systemd "
        "ProtectKernelTunables= mounts it read-only: see the drop-in in "
        "systemd/wghybrid.service (ntuple filters left off, no IRQ affinity changed): "
        "RPS instead"
    ]
    assert s.unsupported == {}


async def steering_on_eth0(
    fake: FakeGenl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[kernel.KernelDataPlane, FakeEthtool, list[str], Path, Path, dict[str, str]]:
    """Steering on, one peer (key 1) whose endpoint routes via eth0 (2 queues, IRQs),
    ethtool faked with ntuple off: the plane, the fake ethtool, the change log, the sys
    and proc roots, and a snapshot of the tree taken before the plane existed."""
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    before = snapshot(tmp_path)

    async def endpoints(ifname: str) -> dict[bytes, _genl.Endpoint]:
        return {key(1): _genl.Endpoint("10.0.0.2", 40000, 51820)}

    async def route(address: str) -> str:
        return "eth0"

    monkeypatch.setattr(_genl, "wireguard_endpoints", endpoints)
    monkeypatch.setattr(_genl, "route_device", route)
    lines: list[str] = []
    p = kernel.KernelDataPlane(fake, change_log=lines.append,  # type: ignore[arg-type]
                               sys=sys, proc=proc)
    await p.set_nic_steering(True)
    assert p.steering is not None
    eth = FakeEthtool("off")
    p.steering.run = eth
    p.steering.run_dir = tmp_path / "run"
    return p, eth, lines, sys, proc, before


async def test_preflight_refusing_everything_changes_nothing_and_says_it_once(
    fake: FakeGenl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, eth, lines, sys, proc, before = await steering_on_eth0(fake, tmp_path, monkeypatch)
    p.steering.writable = lambda path: os.strerror(errno.EROFS)  # /sys and /proc/irq
    for core in (1, 0, 1):
        await p.apply(SetPeerCore("wg0", key(1), core))  # the daemon goes on
    assert len([c for c in fake.calls if c[0] == "set_peer"]) == 3
    assert eth.switched() == []
    assert snapshot(tmp_path) == before
    assert len(lines) == 1
    assert lines[0].startswith("[!] steering on eth0: ")
    assert "ntuple filters left off, no IRQ affinity changed" in lines[0]
    assert "rps_cpus is not writable (Read-only file system)" in lines[0]
    assert "(no rps_cpus changed)" in lines[0]
    assert lines[0].endswith("outer UDP flows are not steered there")
    assert "eth0" in p.unsupported


async def test_ntuple_is_switched_on_only_after_the_preflight(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    lines: list[str] = []
    eth = FakeEthtool("off")
    s = steering(tmp_path, lines, eth)
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    assert [a[1] for a in eth.argv] == ["-k", "-K", "-N"]
    assert lines[0] == "[#] ethtool -K eth0 ntuple on"
    assert lines[1] == f"[#] echo 1 > {proc}/irq/41/smp_affinity_list"


async def test_no_queue_irqs_leaves_ntuple_off(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 1, irqs=False)
    lines: list[str] = []
    eth = FakeEthtool("off")
    s = steering(tmp_path, lines, eth)
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    assert eth.switched() == []
    assert lines[0].startswith("[!] steering on eth0: no ntuple rules: no per-queue IRQs")


async def test_irqbalance_running_refuses_irq_pinning(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    (proc / "4242").mkdir()
    (proc / "4242/comm").write_text("irqbalance\n")
    (proc / "17").mkdir()
    (proc / "17/comm").write_text("sshd\n")
    lines: list[str] = []
    eth = FakeEthtool("on")  # even with ntuple filters already on: no IRQ is pinned
    s = steering(tmp_path, lines, eth)
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    await s.steer(key(2), "eth0", "10.0.0.3", 40000, 51820, 0)
    for irq in (40, 41):
        assert (proc / f"irq/{irq}/smp_affinity_list").read_text() == "0-1\n"
    assert not any(a[1] in ("-N", "-K") for a in eth.argv)
    assert (sys / "class/net/eth0/queues/rx-1/rps_cpus").read_text() == "3"  # RPS instead
    assert lines[0] == (
        "[!] steering on eth0: no ntuple rules: irqbalance is running (process 4242 is "
        "irqbalance): it would move the IRQs that ntuple steering pins, so the daemon does "
        "not pin them (banning them in irqbalance with --banirq is not detected): stop and "
        "disable irqbalance for ntuple steering (no ntuple rule added, no IRQ affinity "
        "changed): RPS instead"
    )
    assert sum(line.startswith("[!]") for line in lines) == 1


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: a unix socket's path is at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="wgh", dir="/tmp") as d:
        yield Path(d)


def test_irqbalance_detected_by_its_socket(short_dir: Path) -> None:
    proc, run = short_dir / "proc", short_dir / "run"
    proc.mkdir()
    (run / "irqbalance").mkdir(parents=True)
    assert _sysfs.irqbalance_running(proc, run) is None
    path = run / "irqbalance/irqbalance4242.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(os.fspath(path))
        listener.listen(1)
        assert _sysfs.irqbalance_running(proc, run) == f"{path} accepts connections"
    # Left behind by a crash: the file is there, nobody accepts.
    assert path.exists()
    assert _sysfs.irqbalance_running(proc, run) is None


async def test_irq_write_refused_after_the_preflight_switches_ntuple_back_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)

    def managed(irq: int, cores: frozenset[int], proc: Path = proc) -> Path:
        raise OSError(errno.EIO, os.strerror(errno.EIO))  # a managed IRQ

    monkeypatch.setattr(_sysfs, "write_irq_affinity", managed)
    lines: list[str] = []
    eth = FakeEthtool("off")
    s = steering(tmp_path, lines, eth)
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    await s.steer(key(2), "eth0", "10.0.0.3", 40000, 51820, 0)
    assert eth.switched() == [["ethtool", "-K", "eth0", "ntuple", "on"],
                              ["ethtool", "-K", "eth0", "ntuple", "off"]]
    assert (sys / "class/net/eth0/queues/rx-0/rps_cpus").read_text() == "3"  # RPS instead
    assert lines[1] == (f"[!] steering on eth0: no ntuple rules: {proc}/irq/41/"
                        "smp_affinity_list: Input/output error: RPS instead")
    assert sum(line.startswith("[!]") for line in lines) == 1


async def test_turning_steering_off_puts_everything_back(
    fake: FakeGenl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p, eth, lines, sys, proc, before = await steering_on_eth0(fake, tmp_path, monkeypatch)
    await p.apply(SetPeerCore("wg0", key(1), 1))
    assert (proc / "irq/41/smp_affinity_list").read_text() == "1"
    await p.set_nic_steering(False)
    assert p.steering is None
    assert snapshot(tmp_path) == {**before, "proc/irq/41/smp_affinity_list": "0-1"}
    assert eth.argv[-2:] == [["ethtool", "-N", "eth0", "delete", "1023"],
                             ["ethtool", "-K", "eth0", "ntuple", "off"]]
    assert lines[-3:] == [
        "[#] ethtool -N eth0 delete 1023",
        f"[#] echo 0-1 > {proc}/irq/41/smp_affinity_list",
        "[#] ethtool -K eth0 ntuple off",
    ]
    n = len(eth.argv)
    await p.apply(SetPeerCore("wg0", key(1), 0))  # off again: nothing more is touched
    assert len(eth.argv) == n


class SteerableSim(SimDataPlane):
    """The simulated data plane plus the kernel backend's steering switch."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.steering_calls: list[bool] = []

    async def set_nic_steering(self, enabled: bool) -> None:
        self.steering_calls.append(enabled)


async def test_a_policy_reload_passes_nic_steering_to_the_data_plane(tmp_path: Path) -> None:
    scenario = parse_scenario('name = "s"\ncores = 2\nduration = 60\n[[group]]\n'
                              'name = "m"\ncount = 1\ngbps = 0.1\n')
    dp = SteerableSim(scenario)
    texts = ["[placement]\nnic_steering = true\n", "# every default\n"]
    d = Daemon(dataplane=dp, policy=Policy(),
               load_policy=lambda: parse_policy(texts.pop(0), "p.toml", 2),
               store=StateStore(tmp_path / "state"), backend="sim",
               notify=lambda _m: None)
    await d.reload_policy()
    await d.reload_policy()
    assert dp.steering_calls == [True, False]
    await configure_nic_steering(SimDataPlane(scenario), True)  # no NIC there: ignored


async def test_irqbalance_started_after_the_probe_stops_irq_pinning(tmp_path: Path) -> None:
    sys, proc = nic_tree(tmp_path, 2, irqs=True)
    now = [0.0]
    lines: list[str] = []
    eth = FakeEthtool("off")
    s = steering(tmp_path, lines, eth, clock=lambda: now[0])
    await s.steer(key(1), "eth0", "10.0.0.2", 40000, 51820, 1)
    assert (proc / "irq/41/smp_affinity_list").read_text() == "1"
    (proc / "99").mkdir()
    (proc / "99/comm").write_text("irqbalance\n")
    await s.steer(key(2), "eth0", "10.0.0.3", 40000, 51820, 0)  # not looked for yet
    assert (proc / "irq/40/smp_affinity_list").read_text() == "0"
    now[0] += _sysfs.IRQBALANCE_RECHECK + 1
    (proc / "irq/40/smp_affinity_list").write_text("0-1\n")  # irqbalance at work
    await s.steer(key(3), "eth0", "10.0.0.4", 40000, 51820, 0)
    assert (proc / "irq/40/smp_affinity_list").read_text() == "0-1\n"  # left to it
    assert (sys / "class/net/eth0/queues/rx-0/rps_cpus").read_text() == "1"  # RPS instead
    refusal = [line for line in lines if line.startswith("[!]")]
    assert len(refusal) == 1
    assert refusal[0].startswith("[!] steering on eth0: no ntuple rules: irqbalance is "
                                 "running (process 99 is irqbalance)")
    assert refusal[0].endswith(": RPS instead")
    assert ["ethtool", "-K", "eth0", "ntuple", "off"] not in eth.argv  # rules of ours remain


async def test_recreate_peer_gives_back_config_mode_and_core(
    fake: FakeGenl, roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 12, finding 8: the stall recovery's last step. The configuration is read
    through upstream's family, the peer replaced, then given its mode and core back."""
    steps: list[tuple[object, ...]] = []
    config = {"public_key": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
              "allowed_ips": ["10.0.0.2/32"], "endpoint_addr": "192.0.2.2",
              "endpoint_port": 51820}

    async def read(ifname: str, k: bytes) -> dict[str, object] | None:
        steps.append(("read", ifname, k))
        return dict(config) if k == key(2) else None

    async def replace(ifname: str, cfg: dict[str, object]) -> None:
        steps.append(("replace", ifname, cfg["public_key"]))

    monkeypatch.setattr(_genl, "wireguard_peer_config", read)
    monkeypatch.setattr(_genl, "replace_wireguard_peer", replace)
    p = plane(fake, roots)
    text = await p.recreate_peer("wg0", key(2))
    assert steps == [("read", "wg0", key(2)), ("replace", "wg0", config["public_key"])]
    assert fake.calls[-1] == ("set_peer", "wg0", key(2), 1, -1)  # its mode (inline), core
    assert "endpoint 192.0.2.2:51820" in text and "mode inline" in text
    with pytest.raises(PermanentError, match="no peer"):
        await p.recreate_peer("wg0", key(9))


async def test_recreate_peer_once_begun_is_never_cut_short(
    fake: FakeGenl, roots: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A timeout that fires between the removal and the re-adding must not leave the peer
    removed: the replacement runs to its end, mode and core included."""
    done: list[str] = []

    async def read(ifname: str, k: bytes) -> dict[str, object]:
        return {"public_key": "x", "allowed_ips": []}

    async def replace(ifname: str, cfg: dict[str, object]) -> None:
        done.append("removed")
        await asyncio.sleep(0.2)  # a slow kernel, between the two requests
        done.append("added")

    monkeypatch.setattr(_genl, "wireguard_peer_config", read)
    monkeypatch.setattr(_genl, "replace_wireguard_peer", replace)
    p = plane(fake, roots)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await p.recreate_peer("wg0", key(1))
    await asyncio.sleep(0.4)
    assert done == ["removed", "added"]
    assert fake.calls[-1] == ("set_peer", "wg0", key(1), 0, -1)


class FakeWireGuard:
    """pyroute2's AsyncWireGuard, as replace_wireguard_peer uses it: `fail_adds` adds
    fail with ENOMEM before one succeeds."""

    fail_adds = 0
    sets: list[dict[str, object]] = []

    async def setup_endpoint(self) -> None:
        pass

    async def set(self, ifname: str, peer: dict[str, object]) -> None:
        from pyroute2.netlink import NetlinkError

        FakeWireGuard.sets.append(dict(peer))
        if not peer.get("remove") and FakeWireGuard.fail_adds > 0:
            FakeWireGuard.fail_adds -= 1
            raise NetlinkError(errno.ENOMEM, "out of memory")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("fail_adds,ok", [(0, True), (2, True), (3, False)])
async def test_a_removed_peer_is_added_back_or_said_missing(
    monkeypatch: pytest.MonkeyPatch, fail_adds: int, ok: bool,
) -> None:
    import pyroute2.netlink.generic.wireguard as pwg

    monkeypatch.setattr(pwg, "AsyncWireGuard", FakeWireGuard)
    FakeWireGuard.fail_adds, FakeWireGuard.sets = fail_adds, []
    config = {"public_key": "k", "allowed_ips": ["10.0.0.2/32"]}
    if ok:
        await _genl.replace_wireguard_peer("wg0", config)
    else:
        with pytest.raises(_genl.GenlError, match="removed and could not be added back"):
            await _genl.replace_wireguard_peer("wg0", config)
    adds = [s for s in FakeWireGuard.sets if not s.get("remove")]
    assert FakeWireGuard.sets[0] == {"public_key": "k", "remove": True}
    assert len(adds) == min(fail_adds + 1, _genl.ADD_TRIES)
    assert all(a == config for a in adds)
