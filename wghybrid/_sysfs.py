"""System knobs around the data plane: /proc/stat, threaded NAPI, RPS, IRQ affinity, and
ethtool ntuple rules (pyroute2 has no ntuple or RSS API, so the `ethtool` command).

Every function that writes takes the root folders as arguments so that tests can point
them at a temporary tree; `Steering` probes each NIC once and remembers what it lacks.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wghybrid.model import U64, format_cores

SYS = Path("/sys")
PROC = Path("/proc")

_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
"""user nice system irq softirq steal (of user nice system idle iowait irq softirq steal
...); guest time is already inside user."""


def parse_proc_stat(text: str, clk_tck: int) -> U64:
    """Per-core cumulative busy ns from /proc/stat, indexed by core number (offline
    cores, which have no line, read 0)."""
    ticks: dict[int, int] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        try:
            core = int(name[3:])
            nums = [int(v) for v in values]
        except ValueError:
            continue
        ticks[core] = sum(nums[i] for i in _BUSY_FIELDS if i < len(nums))
    out = np.zeros(max(ticks, default=-1) + 1, dtype=np.uint64)
    for core, t in ticks.items():
        out[core] = t * 1_000_000_000 // clk_tck
    return out


def read_core_busy(proc: Path = PROC) -> U64:
    return parse_proc_stat((proc / "stat").read_text(), os.sysconf("SC_CLK_TCK"))


def read_threaded(dev: str, sys: Path = SYS) -> bool:
    """/sys/class/net/DEV/threaded (False where the kernel has no such file)."""
    try:
        return (sys / "class/net" / dev / "threaded").read_text().strip() not in ("", "0")
    except OSError:
        return False


def write_threaded(dev: str, enabled: bool, sys: Path = SYS) -> None:
    (sys / "class/net" / dev / "threaded").write_text("1" if enabled else "0")


def cpumask_hex(cores: frozenset[int]) -> str:
    """The kernel's hex cpumask notation ("f", "1,00000000" for CPU 32)."""
    value = sum(1 << c for c in cores)
    digits = f"{value:x}"
    groups = [digits[max(0, i - 8) : i] for i in range(len(digits), 0, -8)]
    return ",".join(reversed(groups))


def rx_queues(dev: str, sys: Path = SYS) -> list[str]:
    try:
        names = os.listdir(sys / "class/net" / dev / "queues")
    except OSError:
        return []
    return sorted((n for n in names if n.startswith("rx-")), key=lambda n: int(n[3:]))


def write_rps(dev: str, queue: str, cores: frozenset[int], sys: Path = SYS) -> Path:
    path = sys / "class/net" / dev / "queues" / queue / "rps_cpus"
    path.write_text(cpumask_hex(cores))
    return path


def parse_interrupts(text: str, dev: str) -> dict[int, int]:
    """IRQs of a NIC's queues from /proc/interrupts: queue number -> IRQ. Queue names
    follow the drivers' "<dev>-TxRx-3", "<dev>-rx-3", "virtio0-input.3" habits; only
    those naming `dev` are taken."""
    out: dict[int, int] = {}
    pat = re.compile(rf"^{re.escape(dev)}[-_](?:txrx|rx|fp|queue)?[-_]?(\d+)$", re.IGNORECASE)
    for line in text.splitlines():
        head, sep, rest = line.partition(":")
        if not sep or not head.strip().isdigit():
            continue
        name = rest.split()[-1] if rest.split() else ""
        m = pat.match(name)
        if m:
            out.setdefault(int(m.group(1)), int(head))
    return out


def write_irq_affinity(irq: int, cores: frozenset[int], proc: Path = PROC) -> Path:
    path = proc / "irq" / str(irq) / "smp_affinity_list"
    path.write_text(format_cores(cores))
    return path


Runner = Callable[[list[str]], Awaitable[tuple[int, str]]]


async def run_command(argv: list[str]) -> tuple[int, str]:
    """Run a command; (exit status, stdout+stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")


@dataclass(slots=True)
class NicSupport:
    """What one NIC lets us steer with, probed once."""

    nic: str
    rx_queues: list[str]
    irqs: dict[int, int]
    ntuple: str | None
    """None when ntuple rules work, else why not."""
    rps: str | None
    """None when RPS can be written, else why not."""


@dataclass(slots=True)
class _Rule:
    nic: str
    location: int


@dataclass
class Steering:
    """Steers tunnels' outer UDP flows to their planned cores: an ethtool ntuple rule to
    an RX queue whose IRQ is on that core where the NIC has ntuple filters; otherwise RPS
    of the NIC's RX queues over the cores tunnels are placed on (the flows then land on
    those cores by hash, not one by one); otherwise nothing, said once per NIC."""

    log: Callable[[str], None]
    sys: Path = SYS
    proc: Path = PROC
    run: Runner = run_command
    support: dict[str, NicSupport] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    """NIC -> what could not be done there (reported once, shown by the backend)."""
    _rules: dict[bytes, _Rule] = field(default_factory=dict)
    _rps_cores: dict[str, dict[bytes, int]] = field(default_factory=dict)

    async def probe(self, nic: str) -> NicSupport:
        known = self.support.get(nic)
        if known is not None:
            return known
        queues = rx_queues(nic, self.sys)
        try:
            irqs = parse_interrupts((self.proc / "interrupts").read_text(), nic)
        except OSError:
            irqs = {}
        ntuple: str | None
        if shutil.which("ethtool") is None and self.run is run_command:
            ntuple = "no ethtool command"
        else:
            rc, out = await self.run(["ethtool", "-k", nic])
            m = re.search(r"^ntuple-filters:\s*(\S+)(.*)$", out, re.MULTILINE)
            if rc != 0 or m is None:
                ntuple = f"ethtool -k {nic} failed: {out.strip()[:120]}"
            elif m.group(1) == "on":
                ntuple = None
            elif "fixed" in m.group(2):
                ntuple = "no ntuple filters (ntuple-filters: off [fixed])"
            else:
                rc, out = await self.run(["ethtool", "-K", nic, "ntuple", "on"])
                ntuple = None if rc == 0 else f"ethtool -K {nic} ntuple on: {out.strip()[:120]}"
                if ntuple is None:
                    self.log(f"[#] ethtool -K {nic} ntuple on")
        if ntuple is None and not irqs:
            ntuple = "ntuple filters but no per-queue IRQs found in /proc/interrupts"
        rps: str | None = None
        if not queues:
            rps = "no RX queues in sysfs"
        elif not (self.sys / "class/net" / nic / "queues" / queues[0] / "rps_cpus").exists():
            rps = "no rps_cpus (kernel without CONFIG_RPS)"
        sup = NicSupport(nic, queues, irqs, ntuple, rps)
        self.support[nic] = sup
        return sup

    async def steer(self, key: bytes, nic: str, src: str, sport: int, dport: int,
                    core: int) -> None:
        """Steer the outer UDP flow src:sport -> :dport arriving on `nic` to `core`
        (-1: stop steering it). Never raises for what the NIC lacks: says it once."""
        sup = await self.probe(nic)
        if sup.ntuple is None:
            await self._steer_ntuple(key, sup, src, sport, dport, core)
            return
        if sup.rps is None:
            self._steer_rps(key, sup, core)
            return
        self._unsupported(nic, f"{sup.ntuple}; RPS: {sup.rps}")

    def _unsupported(self, nic: str, why: str) -> None:
        if nic not in self.unsupported:
            self.unsupported[nic] = why
            self.log(f"[!] steering on {nic}: {why}: outer UDP flows are not steered there")

    async def _steer_ntuple(self, key: bytes, sup: NicSupport, src: str, sport: int,
                            dport: int, core: int) -> None:
        old = self._rules.pop(key, None)
        if old is not None:
            rc, out = await self.run(["ethtool", "-N", old.nic, "delete", str(old.location)])
            if rc == 0:
                self.log(f"[#] ethtool -N {old.nic} delete {old.location}")
        if core < 0:
            return
        queues = sorted(sup.irqs)
        queue = queues[core % len(queues)]
        irq = sup.irqs[queue]
        try:
            path = write_irq_affinity(irq, frozenset({core}), self.proc)
            self.log(f"[#] echo {core} > {path}")
        except OSError as exc:
            self._unsupported(sup.nic, f"IRQ {irq} affinity not writable ({exc.strerror})")
            return
        flow = "udp6" if ":" in src else "udp4"
        argv = ["ethtool", "-N", sup.nic, "flow-type", flow, "src-ip", src, "src-port",
                str(sport), "dst-port", str(dport), "action", str(queue)]
        rc, out = await self.run(argv)
        if rc != 0:
            sup.ntuple = f"ethtool -N refused a rule: {out.strip()[:120]}"
            self._unsupported(sup.nic, sup.ntuple)
            return
        m = re.search(r"ID (\d+)", out)
        if m:
            self._rules[key] = _Rule(sup.nic, int(m.group(1)))
        self.log("[#] " + " ".join(argv))

    def _steer_rps(self, key: bytes, sup: NicSupport, core: int) -> None:
        placed = self._rps_cores.setdefault(sup.nic, {})
        before = frozenset(placed.values())
        if core < 0:
            placed.pop(key, None)
        else:
            placed[key] = core
        cores = frozenset(placed.values())
        if cores == before:
            return
        for q in sup.rx_queues:
            try:
                path = write_rps(sup.nic, q, cores, self.sys)
            except OSError as exc:
                sup.rps = f"rps_cpus not writable ({exc.strerror})"
                self._unsupported(sup.nic, sup.rps)
                return
            self.log(f"[#] echo {cpumask_hex(cores) or '0'} > {path}")
