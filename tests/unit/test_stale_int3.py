"""kmod/harness/stale_int3.py: the harness's diagnosis of a CPU trapping on an int3 that
memory no longer holds, on the console the 2026-11-25 lockup printed and on made-up
variants of it (an int3 still in memory, no int3 frame, a frame without Code:)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "kmod" / "harness" / "stale_int3.py"
CONSOLE = Path(__file__).parent / "consoles" / "inline_churn-2026-11-25.txt"

_spec = importlib.util.spec_from_file_location("stale_int3", SCRIPT)
assert _spec is not None and _spec.loader is not None
stale_int3 = importlib.util.module_from_spec(_spec)
sys.modules["stale_int3"] = stale_int3  # dataclasses look their module up by name
_spec.loader.exec_module(stale_int3)

INT3_FRAME = """\
[  136.111649] NMI backtrace for cpu {cpu}
[  136.112948] RIP: 0010:asm_exc_int3+0x0/0x40
[  136.112948] Code: 00 66 0f 1f 84 00 00 00 00 00 <0f> 01 ca fc 6a ff f6 44 24 10
[  136.112948] Call Trace:
[  136.112948]  <TASK>
[  136.112948] RIP: 0010:some_function+0x{off:x}/0x300
[  136.112948] Code: 49 39 dd 74 6d 49 89 c5 {before} <1f> 44 00 00 4c 89 e7
[  136.112948] RSP: 0018:ff6d70ed8007bc90 EFLAGS: 00000206
"""


def test_the_captured_lockup_is_recognised_at_the_netstamp_site() -> None:
    hits = stale_int3.find(CONSOLE.read_text().splitlines())
    assert hits == [stale_int3.StaleInt3(0, "netif_receive_skb_list_internal", 0x58, "0f")]
    assert "netif_receive_skb_list_internal+0x58" in str(hits[0])
    assert "holds 0f, not cc" in str(hits[0])


def test_an_int3_still_in_memory_is_not_reported() -> None:
    # A breakpoint or a patch in progress: memory holds the int3, nothing is stale.
    text = INT3_FRAME.format(cpu=1, off=0x59, before="cc")
    assert stale_int3.find(text.splitlines()) == []


def test_the_offset_and_cpu_come_from_the_interrupted_frame() -> None:
    text = INT3_FRAME.format(cpu=3, off=0x100, before="e9")
    assert stale_int3.find(text.splitlines()) == [
        stale_int3.StaleInt3(3, "some_function", 0xFF, "e9")]


def test_lockups_without_an_int3_frame_give_nothing() -> None:
    lines = [line for line in CONSOLE.read_text().splitlines() if "asm_exc_int3" not in line]
    assert stale_int3.find(lines) == []


@pytest.mark.parametrize("code", [
    "",  # no Code: line after the frame (the unwinder could not read it)
    "[  1.0] Code: Unable to access opcode bytes at 0xffffffffc0001000.\n",
    "[  1.0] Code: <0f> 1f 44 00 00\n",  # RIP at the first byte: nothing before it
])
def test_a_frame_whose_bytes_are_missing_gives_nothing(code: str) -> None:
    text = ("[  1.0] RIP: 0010:asm_exc_int3+0x0/0x40\n"
            "[  1.0] RIP: 0010:f+0x59/0x300\n" + code + "[  1.0] RSP: 0018:0\n")
    assert stale_int3.find(text.splitlines()) == []


def test_the_command_prints_one_diagnosis_per_site_and_names_an_unreadable_file(
        tmp_path: Path) -> None:
    doubled = tmp_path / "console.log"
    doubled.write_text(CONSOLE.read_text() * 2)
    out = subprocess.run([sys.executable, str(SCRIPT), str(doubled)], capture_output=True,
                         text=True, check=True).stdout
    assert out.count("diagnosis:") == 1, out
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope")],
                             capture_output=True, text=True, check=False)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "nope" in missing.stderr
