"""The patched WireGuard module, built from Debian's packages and booted in qemu.

One session-wide run of kmod/harness/run.sh (15-20 minutes under TCG from a warm
cache, see kmod/README.md), then one test per named scenario. With
WGHYBRID_KERNEL_TESTS=1 (CI) a missing tool, a failed build or a failed boot is a
failure; without it, a machine without qemu (or not root) skips them with the reason,
and WGHYBRID_KERNEL_TESTS=0 skips them on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "kmod" / "harness" / "run.sh"
SCENARIOS = sorted(p.stem for p in (ROOT / "kmod" / "harness" / "scenarios").glob("*.sh"))
TOOLS = ("qemu-system-x86_64", "debootstrap", "cpio", "patch", "make", "gcc", "depmod",
         "apt-get", "dpkg")
TIMEOUT_S = 3600

Results = dict[str, tuple[str, str]]


def _unmet() -> str | None:
    if os.environ.get("WGHYBRID_KERNEL_TESTS") == "0":
        return "WGHYBRID_KERNEL_TESTS=0"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return "kernel tests need " + ", ".join(missing) + " (see kmod/README.md)"
    if os.geteuid() != 0:
        return "kernel tests need root (apt-get download, debootstrap, 9p passthrough)"
    return None


def parse(stdout: str) -> Results:
    """`PASS name` / `FAIL name` lines, each FAIL followed by its indented excerpt."""
    results: Results = {}
    current = None
    for line in stdout.splitlines():
        word, _, name = line.partition(" ")
        if word in ("PASS", "FAIL") and name and not line.startswith(" "):
            current = name.strip()
            results[current] = (word, "")
        elif current and line.startswith("    "):
            status, excerpt = results[current]
            results[current] = (status, excerpt + line[4:] + "\n")
    return results


@pytest.fixture(scope="session")
def harness() -> Results:
    why = _unmet()
    if why is not None:
        if os.environ.get("WGHYBRID_KERNEL_TESTS") == "1":
            pytest.fail(f"WGHYBRID_KERNEL_TESTS=1 but {why}")
        pytest.skip(why)
    proc = subprocess.run(
        [str(HARNESS), *SCENARIOS],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        stdin=subprocess.DEVNULL,
    )
    results = parse(proc.stdout)
    if not results:
        pytest.fail(
            f"kmod/harness/run.sh exited {proc.returncode} without results (build or boot "
            f"failed):\n{proc.stderr[-3000:]}"
        )
    return results


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(harness: Results, scenario: str) -> None:
    status, excerpt = harness.get(scenario, ("MISSING", "the harness printed no line for it"))
    assert status == "PASS", f"{scenario}: {status}\n{excerpt}"


def test_parse_reads_pass_fail_and_excerpts() -> None:
    out = "PASS a\nFAIL b\n    line 1\n    line 2\nPASS c\nSKIP netns part\n3 passed, 1 failed\n"
    assert parse(out) == {"a": ("PASS", ""), "b": ("FAIL", "line 1\nline 2\n"), "c": ("PASS", "")}
