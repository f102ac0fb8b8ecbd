"""kmod/harness/emulator_fault.py: the harness's diagnosis of a guest that died of the
emulator, on the consoles of the 2026-11-25 lockup (a CPU trapping on an int3 that
memory no longer holds) and the 2026-12-07 crash (a jump to 0 inside text patching),
and on made-up variants of them that must not pass for it (an int3 still in memory, no
int3 frame, a frame without Code:, a module frame or symbol in the oops, a lockup
without a stale int3, an oops elsewhere)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "kmod" / "harness" / "emulator_fault.py"
CONSOLE = Path(__file__).parent / "consoles" / "inline_churn-2026-11-25.txt"
POKE = Path(__file__).parent / "consoles" / "dkms-text_poke-2026-12-07.txt"

_spec = importlib.util.spec_from_file_location("emulator_fault", SCRIPT)
assert _spec is not None and _spec.loader is not None
emulator_fault = importlib.util.module_from_spec(_spec)
sys.modules["emulator_fault"] = emulator_fault  # dataclasses look their module up by name
_spec.loader.exec_module(emulator_fault)

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
    hits = emulator_fault.find(CONSOLE.read_text().splitlines())
    assert hits == [emulator_fault.StaleInt3(0, "netif_receive_skb_list_internal", 0x58, "0f")]
    assert "netif_receive_skb_list_internal+0x58" in str(hits[0])
    assert "holds 0f, not cc" in str(hits[0])


def test_an_int3_still_in_memory_is_not_reported() -> None:
    # A breakpoint or a patch in progress: memory holds the int3, nothing is stale.
    text = INT3_FRAME.format(cpu=1, off=0x59, before="cc")
    assert emulator_fault.find(text.splitlines()) == []


def test_the_offset_and_cpu_come_from_the_interrupted_frame() -> None:
    text = INT3_FRAME.format(cpu=3, off=0x100, before="e9")
    assert emulator_fault.find(text.splitlines()) == [
        emulator_fault.StaleInt3(3, "some_function", 0xFF, "e9")]


def test_lockups_without_an_int3_frame_give_nothing() -> None:
    lines = [line for line in CONSOLE.read_text().splitlines() if "asm_exc_int3" not in line]
    assert emulator_fault.find(lines) == []


@pytest.mark.parametrize("code", [
    "",  # no Code: line after the frame (the unwinder could not read it)
    "[  1.0] Code: Unable to access opcode bytes at 0xffffffffc0001000.\n",
    "[  1.0] Code: <0f> 1f 44 00 00\n",  # RIP at the first byte: nothing before it
])
def test_a_frame_whose_bytes_are_missing_gives_nothing(code: str) -> None:
    text = ("[  1.0] RIP: 0010:asm_exc_int3+0x0/0x40\n"
            "[  1.0] RIP: 0010:f+0x59/0x300\n" + code + "[  1.0] RSP: 0018:0\n")
    assert emulator_fault.find(text.splitlines()) == []


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


def fault(text: str) -> str | None:
    why: str | None = emulator_fault.emulator_fault(text.splitlines())
    return why


def test_the_captured_text_poke_crash_is_an_emulator_fault() -> None:
    why = fault(POKE.read_text())
    assert why is not None and "text_poke_bp_batch" in why and "NULL pointer" in why


def test_the_captured_lockup_is_an_emulator_fault() -> None:
    why = fault(CONSOLE.read_text())
    assert why is not None and "netif_receive_skb_list_internal+0x58" in why


@pytest.mark.parametrize(("old", "new"), [
    # a frame of the module anywhere in the trace
    (" ? kprobe_dispatcher+0x45/0x60", " ? wg_packet_rx_poll+0x45/0x60 [wireguard]"),
    # a WireGuard symbol without its module tag (a module linked in)
    (" ? kprobe_dispatcher+0x45/0x60", " ? wgh_tx_drain+0x45/0x60"),
])
def test_an_oops_naming_the_module_is_not_the_emulator(old: str, new: str) -> None:
    text = POKE.read_text()
    assert old in text
    assert fault(text.replace(old, new, 1)) is None


def test_an_oops_that_only_passes_near_text_patching_is_not_the_emulator() -> None:
    # text_poke only as an unreliable ("? ") frame: a stale stack word, not the path
    text = POKE.read_text().replace(" text_poke_bp_batch+", " ? text_poke_bp_batch+")
    text = text.replace(" text_poke_bp+", " ? text_poke_bp+")
    assert fault(text) is None


def test_an_oops_elsewhere_and_a_plain_lockup_are_not_the_emulator() -> None:
    oops = POKE.read_text().replace("text_poke_bp_batch", "skb_release_data").replace(
        "text_poke_bp", "kfree_skb_reason")
    assert fault(oops) is None
    lockup = "\n".join(line for line in CONSOLE.read_text().splitlines()
                       if "asm_exc_int3" not in line)
    assert fault(lockup) is None
    assert fault("[  1.0] random: crng init done\n") is None


def test_only_the_first_report_counts() -> None:
    # a real warning first (a module frame), the text-patching crash after it
    first = ("[  5.0] BUG: unable to handle page fault for address: 0000000000001000\n"
             "[  5.0] RIP: 0010:wg_packet_send_staged_packets+0x10/0x200 [wireguard]\n"
             "[  5.0] Call Trace:\n"
             "[  5.0]  wg_xmit+0x1/0x20 [wireguard]\n"
             "[  5.0] ---[ end trace 0000000000000000 ]---\n")
    assert fault(first + POKE.read_text()) is None


def test_fault_mode_exit_codes(tmp_path: Path) -> None:
    def run(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(SCRIPT), "--fault", str(path)],
                              capture_output=True, text=True, check=False)
    yes = run(POKE)
    assert yes.returncode == 0 and "text_poke_bp_batch" in yes.stdout
    plain = tmp_path / "console.log"
    plain.write_text("[  1.0] random: crng init done\n")
    no = run(plain)
    assert no.returncode == 1 and no.stdout == ""
    assert run(tmp_path / "nope").returncode == 2
