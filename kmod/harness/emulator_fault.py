#!/usr/bin/env python3
"""Recognise, in a guest's console, a guest that died of the emulator rather than of the
module: the two faults of qemu's TCG seen here (kmod/README.md, "The lockup that was
the emulator" and "The crash in text patching").

1. A CPU trapping on an int3 its memory no longer holds. A stack in the console whose
   innermost frame is `asm_exc_int3` is an int3 trap; the frame it interrupted is the
   next `RIP:` line, and that frame's `Code:` bytes were read by the kernel from memory,
   with the byte at RIP in <angle brackets>. After an int3 the saved RIP is one past it,
   so the byte just before the bracketed one is where the int3 was. If that byte is not
   0xcc, the CPU executed an int3 that memory does not hold. Once, right after another
   CPU removed it, that is a race the kernel expects (kprobe_int3_handler() backs the
   CPU up to retry the instruction). A CPU that stays stuck there (a soft lockup or RCU
   stall at the same place) is fetching stale code: x86 hardware cannot, qemu's TCG
   has been seen to.
2. An oops inside the kernel's own text patching (a `text_poke*` frame in the call
   trace) with no frame of the module and no WireGuard symbol anywhere in the report:
   seen once (2026-12-07, 6.12) as a jump to address 0 from text_poke_bp_batch() while
   ftrace removed a kprobe, in code no module touches.

run.sh prints what this finds under the console excerpt of a scenario that did not
finish, and (`--fault`) asks it whether to boot a second time for the scenarios the
first boot never finished: exit 0 with one line naming the fault, 1 when the console
shows neither. Stdlib only, as it runs before any venv exists.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

_PREFIX = r"^(?:\[\s*\d+\.\d+\]\s*)?"
_RIP = re.compile(_PREFIX + r"RIP: \w+:(?P<sym>\S+?)\+0x(?P<off>[0-9a-f]+)/0x[0-9a-f]+")
_CODE = re.compile(_PREFIX + r"Code: (?P<bytes>.*)$")
_CPU = re.compile(_PREFIX + r"NMI backtrace for cpu (?P<cpu>\d+)")


@dataclass(frozen=True)
class StaleInt3:
    cpu: int | None  # from the "NMI backtrace for cpu N" header, when there is one
    symbol: str
    offset: int  # of the int3 byte in `symbol` (the trap's RIP minus one)
    byte: str  # what memory holds there, two hex digits

    def __str__(self) -> str:
        who = f"CPU {self.cpu}" if self.cpu is not None else "a CPU"
        return (f"{who} was taking an int3 at {self.symbol}+{self.offset:#x}, where memory "
                f"holds {self.byte}, not cc: it ran code its memory no longer holds (stale "
                f"translation under qemu TCG if it stayed there; kmod/README.md, \"The "
                f"lockup that was the emulator\")")


def byte_before_rip(code: str) -> str | None:
    """The byte before the bracketed one in an oops `Code:` line, or None if absent."""
    tokens = code.split()
    for i, tok in enumerate(tokens):
        if tok.startswith("<") and tok.endswith(">"):
            return tokens[i - 1].lower() if i > 0 else None
    return None


def find(lines: list[str]) -> list[StaleInt3]:
    """Every int3 trap in the console whose interrupted frame's memory has no int3."""
    found: list[StaleInt3] = []
    cpu: int | None = None
    in_int3 = False  # saw `RIP: asm_exc_int3`; the next RIP is the interrupted frame
    for i, line in enumerate(lines):
        if m := _CPU.match(line):
            cpu, in_int3 = int(m["cpu"]), False
            continue
        m = _RIP.match(line)
        if not m:
            continue
        if m["sym"] == "asm_exc_int3":
            in_int3 = True
            continue
        if not in_int3:
            continue
        in_int3 = False
        code = next((c["bytes"] for c in map(_CODE.match, lines[i + 1:i + 3]) if c), None)
        byte = byte_before_rip(code) if code else None
        if byte is not None and byte != "cc":
            found.append(StaleInt3(cpu, m["sym"], int(m["off"], 16) - 1, byte))
    return found


_REPORT = re.compile(_PREFIX + r"(?:BUG: |Oops: |general protection fault|kernel BUG at"
                     r"|watchdog: BUG: soft lockup|rcu: INFO: )")
_LOCKUP = re.compile(r"soft lockup|rcu: INFO: ")
_END = re.compile(_PREFIX + r"(?:---\[ end trace|Kernel panic)")
_FRAME = re.compile(_PREFIX + r"\s+(?P<unreliable>\? )?(?P<sym>[A-Za-z_][\w.]*)"
                    r"\+0x[0-9a-f]+/0x[0-9a-f]+(?: \[(?P<mod>\w+)\])?")
_MODULE = re.compile(r"\[wireguard\]|\bwgh?_\w+\+0x")


@dataclass(frozen=True)
class PatchingOops:
    report: str  # the report's first line, without its timestamp
    frame: str  # the text-patching function in the call trace

    def __str__(self) -> str:
        return (f"the kernel oopsed inside its own text patching ({self.frame}: "
                f"\"{self.report}\"), no frame of the module in the report: the crash "
                f"qemu's TCG has shown while code was patched (kmod/README.md, \"The "
                f"crash in text patching\")")


def first_report(lines: list[str]) -> list[str]:
    """The console from the kernel's first report (oops, BUG, lockup, stall) to its end
    marker or panic, at most 200 lines; [] when there is none."""
    start = next((i for i, line in enumerate(lines) if _REPORT.match(line)), None)
    if start is None:
        return []
    out = [lines[start]]
    for line in lines[start + 1:start + 200]:
        out.append(line)
        if _END.match(line):
            break
    return out


def patching_oops(lines: list[str]) -> PatchingOops | None:
    """The first report, if it is an oops (not a lockup) whose call trace runs through
    a text_poke* function, with no module frame or WireGuard symbol anywhere in it."""
    report = first_report(lines)
    if not report or _LOCKUP.search(report[0]):
        return None
    if any(_MODULE.search(line) for line in report):
        return None
    for line in report:
        m = _FRAME.match(line)
        if m and not m["unreliable"] and m["sym"].startswith(("text_poke", "smp_text_poke")):
            return PatchingOops(re.sub(_PREFIX, "", report[0]).strip(), m["sym"])
    return None


def emulator_fault(lines: list[str]) -> str | None:
    """Why the guest died of the emulator, or None: a stale int3 under a lockup or
    stall that is the console's first report, or an oops in text patching."""
    report = first_report(lines)
    if report and _LOCKUP.search(report[0]):
        hits = find(lines)
        return str(hits[0]) if hits else None
    oops = patching_oops(lines)
    return str(oops) if oops else None


def main(argv: list[str]) -> int:
    fault_mode = len(argv) == 3 and argv[1] == "--fault"
    if len(argv) != 2 and not fault_mode:
        print("usage: emulator_fault.py [--fault] CONSOLE_LOG", file=sys.stderr)
        return 2
    try:
        text = Path(argv[-1]).read_text(errors="replace")
    except OSError as e:
        print(f"emulator_fault.py: cannot read {argv[-1]}: {e.strerror}", file=sys.stderr)
        return 2
    lines = text.splitlines()
    if fault_mode:
        why = emulator_fault(lines)
        if why is None:
            return 1
        print(why)
        return 0
    for hit in dict.fromkeys(find(lines)):
        print(f"diagnosis: {hit}")
    oops = patching_oops(lines)
    if oops:
        print(f"diagnosis: {oops}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
