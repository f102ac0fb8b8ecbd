"""The patched WireGuard module, built from Debian's packages and booted in qemu, once
per target (kmod/targets/: trixie with linux 6.12, bookworm with 6.1).

One run of kmod/harness/run.sh per target (each resolves the target's kernel from the
archive, builds the module in the target's tree with its kernel's compiler and boots
it), then one test per named scenario of the target's CI_SCENARIOS. With
WGHYBRID_KERNEL_TESTS=1 (CI) a missing tool, a failed build or a failed boot is a
failure; without it, a machine without qemu (or not root) skips them with the reason,
and WGHYBRID_KERNEL_TESTS=0 skips them on purpose. WGHYBRID_KMOD_TARGETS="trixie"
runs one target only; WGHYBRID_KMOD_SCENARIOS="a b" boots only those scenarios (a
quick look, never CI). The harness' stage times and resolved kernels are printed in
pytest's summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "kmod" / "harness" / "run.sh"
# Every scenario but the by-hand measurements (a "# by-hand:" line, e.g. ab_stock:
# bench/kmod_ab.py runs it), as run.sh's default and "all" in CI_SCENARIOS.
SCENARIOS = sorted(p.stem for p in (ROOT / "kmod" / "harness" / "scenarios").glob("*.sh")
                   if not re.search(r"^# by-hand:", p.read_text(), re.M))
ALL_TARGETS = ("trixie", "bookworm")
TOOLS = ("qemu-system-x86_64", "debootstrap", "cpio", "patch", "depmod", "apt-get", "dpkg",
         "unshare", "xz")
TIMEOUT_S = 4800  # the guest has 4200 (run.sh), plus fetch, tree and build

Results = dict[str, tuple[str, str]]
LOG_KEY = pytest.StashKey[list[str]]()


def ci_scenarios(target: str) -> list[str]:
    """The target's CI_SCENARIOS from kmod/targets/TARGET.conf ("all": every one)."""
    text = (ROOT / "kmod" / "targets" / f"{target}.conf").read_text()
    m = re.search(r'^CI_SCENARIOS="?([^"\n]*)"?$', text, re.M)
    assert m, f"kmod/targets/{target}.conf has no CI_SCENARIOS"
    names = m.group(1).split()
    chosen = os.environ.get("WGHYBRID_KMOD_SCENARIOS", "").split()
    if chosen:
        names = [n for n in chosen if names == ["all"] or n in names]
    return SCENARIOS if names == ["all"] else names


def targets() -> list[str]:
    chosen = os.environ.get("WGHYBRID_KMOD_TARGETS", " ".join(ALL_TARGETS)).split()
    return [t for t in ALL_TARGETS if t in chosen]


def _unmet() -> str | None:
    if os.environ.get("WGHYBRID_KERNEL_TESTS") == "0":
        return "WGHYBRID_KERNEL_TESTS=0"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return "kernel tests need " + ", ".join(missing) + " (see kmod/README.md)"
    if os.geteuid() != 0:
        return "kernel tests need root (apt-get download, debootstrap, chroot, 9p passthrough)"
    return None


def fetched_top(target: str) -> Path:
    """kmod/fetch.sh's folder of the target's kernel (its packages downloaded and
    unpacked), for the tests that read its sources; skips (fails under
    WGHYBRID_KERNEL_TESTS=1) where the kernel tests cannot run."""
    why = _unmet()
    if why is not None:
        if os.environ.get("WGHYBRID_KERNEL_TESTS") == "1":
            pytest.fail(f"WGHYBRID_KERNEL_TESTS=1 but {why}")
        pytest.skip(why)
    return Path(subprocess.run([str(ROOT / "kmod" / "fetch.sh")], capture_output=True,
                               text=True, check=True, timeout=1800, stdin=subprocess.DEVNULL,
                               env={**os.environ, "WGHYBRID_KMOD_TARGET": target},
                               ).stdout.splitlines()[-1])


def parse(stdout: str) -> Results:
    """`PASS name (N s)` / `FAIL name (N s)` lines, each FAIL followed by its indented
    excerpt."""
    results: Results = {}
    current = None
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASS", "FAIL") and rest.strip() and not line.startswith(" "):
            current = rest.split()[0]
            results[current] = (word, "")
        elif current and line.startswith("    "):
            status, excerpt = results[current]
            results[current] = (status, excerpt + line[4:] + "\n")
    return results


@pytest.fixture(scope="session")
def harness(request: pytest.FixtureRequest) -> Callable[[str], Results]:
    """Runs the harness for a target once (the first test of that target asks) and
    keeps its results for the others."""
    why = _unmet()
    if why is not None:
        if os.environ.get("WGHYBRID_KERNEL_TESTS") == "1":
            pytest.fail(f"WGHYBRID_KERNEL_TESTS=1 but {why}")
        pytest.skip(why)
    done: dict[str, Results] = {}
    log = request.config.stash.setdefault(LOG_KEY, [])

    def run(target: str) -> Results:
        if target in done:
            return done[target]
        proc = subprocess.run(
            [str(HARNESS), *ci_scenarios(target)],
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
            stdin=subprocess.DEVNULL, env={**os.environ, "WGHYBRID_KMOD_TARGET": target},
        )
        log.extend(f"{target}: {line}" for line in proc.stderr.splitlines()
                   if line.startswith(("[kmod/harness]", "[kmod/fetch.sh]")))
        log.extend(f"{target}: {line}" for line in proc.stdout.splitlines()
                   if line.startswith(("PASS ", "FAIL ")) or line.endswith(" failed"))
        done[target] = parse(proc.stdout)
        if not done[target]:
            pytest.fail(
                f"{target}: kmod/harness/run.sh exited {proc.returncode} without results "
                f"(build or boot failed):\n{proc.stderr[-3000:]}"
            )
        return done[target]

    return run


@pytest.mark.parametrize(
    ("target", "scenario"),
    [(t, s) for t in targets() for s in ci_scenarios(t)],
    ids=lambda v: str(v),
)
def test_scenario(harness: Callable[[str], Results], target: str, scenario: str) -> None:
    missing = ("MISSING", "the harness printed no line for it")
    status, excerpt = harness(target).get(scenario, missing)
    assert status == "PASS", f"{target}: {scenario}: {status}\n{excerpt}"


def test_parse_reads_pass_fail_and_excerpts() -> None:
    out = ("PASS a (3 s)\nFAIL b (12 s)\n    line 1\n    line 2\nPASS c\nSKIP netns part\n"
           "3 passed, 1 failed\n")
    assert parse(out) == {"a": ("PASS", ""), "b": ("FAIL", "line 1\nline 2\n"), "c": ("PASS", "")}


def test_every_ci_scenario_exists() -> None:
    for t in ALL_TARGETS:
        for s in ci_scenarios(t):
            assert s in SCENARIOS, f"kmod/targets/{t}.conf names no scenario '{s}'"
