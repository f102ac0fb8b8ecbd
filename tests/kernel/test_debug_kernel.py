"""kmod/debug/kernel.config + kmod/debug/LINE.config (the debug kernel of
kmod/debugkernel.sh) against its model, upstream WireGuard's
tools/testing/selftests/wireguard/qemu/debug.config from each target's linux-source
(unpacked by kmod/fetch.sh, as the other kernel tests do): every debug option
upstream's selftests of that line turn on is on here too, with the
same value, but for the few left out on purpose, each with its reason below (and in
the configuration's own comment). Whether each line took in the built kernel is
checked by debugkernel.sh itself, against the .config Kconfig makes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_kmod import fetched_top

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
DEBUG = ROOT / "kmod" / "debug"
LINES = {"trixie": "6.12", "bookworm": "6.1"}

# Upstream's lines this configuration does not carry, and why.
LEFT_OUT = {
    "CONFIG_LOCALVERSION": "ours is -wghdebug",
    "CONFIG_DEBUG_INFO": "splats are symbolised by kallsyms; DWARF would double the build",
    "CONFIG_DEBUG_INFO_DWARF4": "the same",
    "CONFIG_DEBUG_PAGEALLOC_ENABLE_DEFAULT": "KASAN finds the same; debug_pagealloc=on",
    "CONFIG_DEBUG_STACKOVERFLOW": "32-bit only on x86; VMAP_STACK's guard page instead",
    "CONFIG_HAVE_DEBUG_STACKOVERFLOW": "selected by the architecture, not set",
    "CONFIG_HAVE_ARCH_KASAN": "selected by the architecture, not set",
    "CONFIG_USER_STACKTRACE_SUPPORT": "selected by the architecture, not set",
}
# ... and on 6.12 only (6.1.config sets it on 6.1).
LEFT_OUT_612 = {"CONFIG_UBSAN_SANITIZE_ALL": "gone since 6.9: sanitizing all is the default"}


def left_out(line: str) -> dict[str, str]:
    return {**LEFT_OUT, **(LEFT_OUT_612 if line == "6.12" else {})}


def ours(line: str) -> str:
    return (DEBUG / "kernel.config").read_text() + (DEBUG / f"{line}.config").read_text()


def config_lines(text: str) -> dict[str, str]:
    """NAME -> value of each `CONFIG_NAME=value` line."""
    return dict(re.findall(r"^(CONFIG_[A-Z0-9_]+)=(.*)$", text, re.M))


@pytest.fixture(scope="module", params=sorted(LINES))
def upstream(request: pytest.FixtureRequest) -> tuple[str, dict[str, str]]:
    """(LINE, upstream's debug.config of that line's linux-source)."""
    line = LINES[request.param]
    path = (fetched_top(request.param) / "src" / f"linux-source-{line}" / "tools" / "testing"
            / "selftests" / "wireguard" / "qemu" / "debug.config")
    return line, config_lines(path.read_text())


def test_every_upstream_debug_option_is_on(upstream: tuple[str, dict[str, str]]) -> None:
    line, theirs = upstream
    mine = config_lines(ours(line))
    differ = {name: (value, mine.get(name)) for name, value in theirs.items()
              if name not in left_out(line) and mine.get(name) != value}
    assert not differ, f"{line}: upstream's debug.config (value, ours): {differ}"


def test_every_exception_is_upstreams_and_documented(
        upstream: tuple[str, dict[str, str]]) -> None:
    line, theirs = upstream
    stale = sorted(set(left_out(line)) - set(theirs))
    assert not stale, f"{line}: LEFT_OUT names what upstream's debug.config does not set: {stale}"
    comment = ours(line)
    undocumented = [n for n in left_out(line) if n not in ("CONFIG_LOCALVERSION",)
                    and n.removeprefix("CONFIG_") not in comment]
    assert not undocumented, f"not explained in kmod/debug/kernel.config: {undocumented}"
