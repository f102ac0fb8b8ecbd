#!/usr/bin/env python3
"""Recognise, in a guest's console, a CPU trapping on an int3 its memory no longer holds.

A stack in the console whose innermost frame is `asm_exc_int3` is an int3 trap; the
frame it interrupted is the next `RIP:` line, and that frame's `Code:` bytes were read
by the kernel from memory, with the byte at RIP in <angle brackets>. After an int3 the
saved RIP is one past it, so the byte just before the bracketed one is where the int3
was. If that byte is not 0xcc, the CPU executed an int3 that memory does not hold.

Once, right after another CPU removed it, that is a race the kernel expects
(kprobe_int3_handler() backs the CPU up to retry the instruction). A CPU that stays
stuck there (a soft lockup or RCU stall at the same place) is fetching stale code:
real x86 hardware cannot, qemu's TCG has been seen to (kmod/README.md, "The lockup
that was the emulator"). run.sh prints what this finds under the console excerpt of
a scenario that did not finish; stdlib only, as it runs before any venv exists.
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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: stale_int3.py CONSOLE_LOG", file=sys.stderr)
        return 2
    try:
        text = Path(argv[1]).read_text(errors="replace")
    except OSError as e:
        print(f"stale_int3.py: cannot read {argv[1]}: {e.strerror}", file=sys.stderr)
        return 2
    for hit in dict.fromkeys(find(text.splitlines())):
        print(f"diagnosis: {hit}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
