"""System knobs around the data plane: /proc/stat, threaded NAPI, RPS, IRQ affinity, and
ethtool ntuple rules (pyroute2 has no ntuple or RSS API, so the `ethtool` command).

Every function that writes takes the root folders as arguments so that tests can point
them at a temporary tree; `Steering` probes each NIC once and remembers what it lacks.
`Steering` is the only code that touches a physical NIC (ethtool, /proc/irq,
rps_cpus), and the kernel backend creates it only when the policy's
`placement.nic_steering` is true (off by default: docs/install.md, "NIC steering").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wghybrid.model import U64, format_cores

SYS = Path("/sys")
PROC = Path("/proc")
RUN = Path("/run")

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


def write_error(path: Path) -> str | None:
    """Why `path` cannot be written, or None: it is opened for writing and closed, nothing
    written (a read-only mount, as systemd's ProtectKernelTunables= makes /proc/irq and
    /sys, says EROFS here, whatever the file's mode bits)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return None


def _unwritable(paths: list[Path], check: Callable[[Path], str | None]) -> str | None:
    """The first of `paths` that cannot be written, as a sentence, or None."""
    bad = [(p, why) for p in paths if (why := check(p)) is not None]
    if not bad:
        return None
    path, why = bad[0]
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    text = f"{path} is not writable ({why}){more}"
    if why == os.strerror(errno.EROFS):
        text += ("; under systemd ProtectKernelTunables= mounts it read-only: see the "
                 "drop-in in systemd/wghybrid.service")
    return text


def irqbalance_running(proc: Path = PROC, run: Path = RUN) -> str | None:
    """Evidence that irqbalance is running, or None. Two ways, neither needing systemd: a
    process whose /proc/PID/comm is "irqbalance" (the unit's ProtectProc=invisible may
    hide it from the daemon: it holds capabilities the daemon lacks), or irqbalance's
    control socket (RUN/irqbalance/irqbalance<PID>.sock, the one irqbalance-ui talks to)
    accepting a connection (a stale one, left by a crash, refuses it). Nothing is sent."""
    try:
        pids = [n for n in os.listdir(proc) if n.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            comm = (proc / pid / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "irqbalance":
            return f"process {pid} is irqbalance"
    try:
        names = sorted(os.listdir(run / "irqbalance"))
    except OSError:
        names = []
    for name in names:
        if not (name.startswith("irqbalance") and name.endswith(".sock")):
            continue
        path = run / "irqbalance" / name
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(os.fspath(path))
            except OSError:
                continue
        return f"{path} accepts connections"
    return None


IRQBALANCE_RECHECK = 30.0
"""Seconds: how often steering looks for irqbalance again before pinning an IRQ (it may
have been started since the NIC was probed)."""

IRQBALANCE_HINT = (
    "it would move the IRQs that ntuple steering pins, so the daemon does not pin them "
    "(banning them in irqbalance with --banirq is not detected): stop and disable "
    "irqbalance for ntuple steering"
)


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
    those cores by hash, not one by one); otherwise nothing, said once per NIC.

    Nothing is switched before everything its step needs has been checked: ntuple
    filters are switched on (`ethtool -K NIC ntuple on`) only once the NIC's queue IRQs
    are known, irqbalance is found not running (it would move the IRQs pinned here) and
    every /proc/irq/N/smp_affinity_list is writable; RPS is used only when every RX
    queue's rps_cpus is writable. A refusal is logged once per NIC and says what was
    left unchanged. `undo` puts back everything changed (the policy turned steering off).
    """

    log: Callable[[str], None]
    sys: Path = SYS
    proc: Path = PROC
    run_dir: Path = RUN
    """Where irqbalance's socket is looked for (RUN/irqbalance)."""
    run: Runner = run_command
    writable: Callable[[Path], str | None] = write_error
    """Why a file cannot be written, or None (`write_error`; tests give their own)."""
    clock: Callable[[], float] = time.monotonic
    support: dict[str, NicSupport] = field(default_factory=dict)
    unsupported: dict[str, str] = field(default_factory=dict)
    """NIC -> what could not be done there (reported once, shown by the backend)."""
    _rules: dict[bytes, _Rule] = field(default_factory=dict)
    _rps_cores: dict[str, dict[bytes, int]] = field(default_factory=dict)
    _saved: dict[Path, str] = field(default_factory=dict)
    """Every file written, with what it held before the first write (for `undo`)."""
    _switched_on: set[str] = field(default_factory=set)
    """NICs whose ntuple filters were switched on here (for `undo`)."""
    _irqbalance_seen: float = -1e9
    """When irqbalance was last looked for and not found (`clock`)."""

    async def probe(self, nic: str) -> NicSupport:
        known = self.support.get(nic)
        if known is not None:
            return known
        queues = rx_queues(nic, self.sys)
        try:
            irqs = parse_interrupts((self.proc / "interrupts").read_text(), nic)
        except OSError:
            irqs = {}
        rps = self._rps_preflight(nic, queues)
        ntuple = await self._ntuple_preflight(nic, irqs, rps)
        sup = NicSupport(nic, queues, irqs, ntuple, rps)
        self.support[nic] = sup
        return sup

    def _rps_preflight(self, nic: str, queues: list[str]) -> str | None:
        if not queues:
            return "no RX queues in sysfs"
        paths = [self.sys / "class/net" / nic / "queues" / q / "rps_cpus" for q in queues]
        if not paths[0].exists():
            return "no rps_cpus (kernel without CONFIG_RPS)"
        why = _unwritable(paths, self.writable)
        return None if why is None else f"{why} (no rps_cpus changed)"

    async def _ntuple_preflight(self, nic: str, irqs: dict[int, int],
                                rps: str | None) -> str | None:
        """None when ntuple rules can be used (switched on here if they were off, after
        every check of the IRQ step has passed), else why not."""
        if shutil.which("ethtool") is None and self.run is run_command:
            return "no ethtool command"
        rc, out = await self.run(["ethtool", "-k", nic])
        m = re.search(r"^ntuple-filters:\s*(\S+)(.*)$", out, re.MULTILINE)
        if rc != 0 or m is None:
            return f"ethtool -k {nic} failed: {out.strip()[:120]}"
        on = m.group(1) == "on"
        if not on and "fixed" in m.group(2):
            return "no ntuple filters (ntuple-filters: off [fixed])"
        why = self._irq_preflight(nic, irqs)
        if why is not None:
            left = "no ntuple rule added" if on else "ntuple filters left off"
            why = f"{why} ({left}, no IRQ affinity changed)"
            if rps is None:  # else said with RPS's reason by _unsupported, once
                self.log(f"[!] steering on {nic}: no ntuple rules: {why}: RPS instead")
            return why
        if not on:
            rc, out = await self.run(["ethtool", "-K", nic, "ntuple", "on"])
            if rc != 0:
                return f"ethtool -K {nic} ntuple on: {out.strip()[:120]}"
            self._switched_on.add(nic)
            self.log(f"[#] ethtool -K {nic} ntuple on")
        return None

    def _irq_preflight(self, nic: str, irqs: dict[int, int]) -> str | None:
        """Why the IRQs of `nic`'s queues cannot be pinned, or None."""
        if not irqs:
            return f"no per-queue IRQs of {nic} in {self.proc / 'interrupts'}"
        why = self._irqbalance()
        if why is not None:
            return why
        paths = [self.proc / "irq" / str(irq) / "smp_affinity_list"
                 for irq in sorted(set(irqs.values()))]
        return _unwritable(paths, self.writable)

    def _irqbalance(self) -> str | None:
        running = irqbalance_running(self.proc, self.run_dir)
        if running is not None:
            return f"irqbalance is running ({running}): {IRQBALANCE_HINT}"
        self._irqbalance_seen = self.clock()
        return None

    async def steer(self, key: bytes, nic: str, src: str, sport: int, dport: int,
                    core: int) -> None:
        """Steer the outer UDP flow src:sport -> :dport arriving on `nic` to `core`
        (-1: stop steering it). Never raises for what the NIC lacks: says it once."""
        sup = await self.probe(nic)
        if sup.ntuple is None and await self._steer_ntuple(key, sup, src, sport, dport, core):
            return
        if sup.rps is None:
            self._steer_rps(key, sup, core)
            return
        self._unsupported(nic, f"{sup.ntuple}; RPS: {sup.rps}")

    def _unsupported(self, nic: str, why: str) -> None:
        if nic not in self.unsupported:
            self.unsupported[nic] = why
            self.log(f"[!] steering on {nic}: {why}: outer UDP flows are not steered there")

    def _remember(self, path: Path) -> None:
        """Keep what `path` holds before its first write, for `undo`."""
        if path not in self._saved:
            with contextlib.suppress(OSError):
                self._saved[path] = path.read_text().strip()

    async def _steer_ntuple(self, key: bytes, sup: NicSupport, src: str, sport: int,
                            dport: int, core: int) -> bool:
        """Steer by an ntuple rule; False when ntuple steering was given up on this NIC
        just now (the caller falls back to RPS)."""
        old = self._rules.pop(key, None)
        if old is not None:
            rc, out = await self.run(["ethtool", "-N", old.nic, "delete", str(old.location)])
            if rc == 0:
                self.log(f"[#] ethtool -N {old.nic} delete {old.location}")
        if core < 0:
            return True
        queues = sorted(sup.irqs)
        queue = queues[core % len(queues)]
        irq = sup.irqs[queue]
        path = self.proc / "irq" / str(irq) / "smp_affinity_list"
        if self.clock() - self._irqbalance_seen > IRQBALANCE_RECHECK:
            why = self._irqbalance()  # started since the probe?
            if why is not None:
                await self._give_up_ntuple(sup, why)
                return False
        self._remember(path)
        try:
            write_irq_affinity(irq, frozenset({core}), self.proc)
        except OSError as exc:  # writable at the probe, refused now (a managed IRQ: EIO)
            await self._give_up_ntuple(sup, f"{path}: {exc.strerror}")
            return False
        self.log(f"[#] echo {core} > {path}")
        flow = "udp6" if ":" in src else "udp4"
        argv = ["ethtool", "-N", sup.nic, "flow-type", flow, "src-ip", src, "src-port",
                str(sport), "dst-port", str(dport), "action", str(queue)]
        rc, out = await self.run(argv)
        if rc != 0:
            await self._give_up_ntuple(sup, f"ethtool -N refused a rule: {out.strip()[:120]}")
            return False
        m = re.search(r"ID (\d+)", out)
        if m:
            self._rules[key] = _Rule(sup.nic, int(m.group(1)))
        self.log("[#] " + " ".join(argv))
        return True

    async def _give_up_ntuple(self, sup: NicSupport, why: str) -> None:
        """No more ntuple rules on this NIC; its filters are switched off again when they
        were switched on here and no rule of ours is left there."""
        sup.ntuple = why
        if sup.rps is not None:
            self._unsupported(sup.nic, f"{why}; RPS: {sup.rps}")
        else:
            self.log(f"[!] steering on {sup.nic}: no ntuple rules: {why}: RPS instead")
        if sup.nic in self._switched_on and all(r.nic != sup.nic for r in self._rules.values()):
            await self._ntuple_off(sup.nic)

    async def _ntuple_off(self, nic: str) -> None:
        self._switched_on.discard(nic)
        rc, out = await self.run(["ethtool", "-K", nic, "ntuple", "off"])
        if rc == 0:
            self.log(f"[#] ethtool -K {nic} ntuple off")
        else:
            self.log(f"[!] ethtool -K {nic} ntuple off: {out.strip()[:120]}")

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
            self._remember(self.sys / "class/net" / sup.nic / "queues" / q / "rps_cpus")
            try:
                path = write_rps(sup.nic, q, cores, self.sys)
            except OSError as exc:
                sup.rps = f"rps_cpus not writable ({exc.strerror})"
                self._unsupported(sup.nic, sup.rps)
                return
            self.log(f"[#] echo {cpumask_hex(cores) or '0'} > {path}")

    async def undo(self) -> None:
        """Put back what steering changed: its ntuple rules deleted, every file it wrote
        given the value it held before, ntuple filters switched off where they were
        switched on here. Best effort: each step is logged, a failure does not stop the
        others. Afterwards nothing is known: a new `steer` probes again."""
        for rule in self._rules.values():
            rc, out = await self.run(["ethtool", "-N", rule.nic, "delete", str(rule.location)])
            if rc == 0:
                self.log(f"[#] ethtool -N {rule.nic} delete {rule.location}")
            else:
                self.log(f"[!] ethtool -N {rule.nic} delete {rule.location}: "
                         f"{out.strip()[:120]}")
        for path, text in self._saved.items():
            try:
                path.write_text(text)
            except OSError as exc:
                self.log(f"[!] cannot put back {path} ({exc.strerror})")
            else:
                self.log(f"[#] echo {text} > {path}")
        for nic in sorted(self._switched_on):
            await self._ntuple_off(nic)
        self._rules.clear()
        self._saved.clear()
        self._switched_on.clear()
        self._rps_cores.clear()
        self.support.clear()
        self.unsupported.clear()
