"""kmod/debug/kernel.config (the debug kernel of kmod/debugkernel.sh) against its
model, upstream WireGuard's tools/testing/selftests/wireguard/qemu/debug.config from
the trixie target's linux-source (unpacked by kmod/fetch.sh, as the other kernel
tests do): every debug option upstream's selftests turn on is on here too, with the
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
OURS = ROOT / "kmod" / "debug" / "kernel.config"

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
    "CONFIG_UBSAN_SANITIZE_ALL": "gone since 6.9: sanitizing all is the default",
}


def config_lines(text: str) -> dict[str, str]:
    """NAME -> value of each `CONFIG_NAME=value` line."""
    return dict(re.findall(r"^(CONFIG_[A-Z0-9_]+)=(.*)$", text, re.M))


@pytest.fixture(scope="module")
def upstream() -> dict[str, str]:
    top = fetched_top("trixie")
    path = (top / "src" / "linux-source-6.12" / "tools" / "testing" / "selftests" / "wireguard"
            / "qemu" / "debug.config")
    return config_lines(path.read_text())


def test_every_upstream_debug_option_is_on(upstream: dict[str, str]) -> None:
    ours = config_lines(OURS.read_text())
    differ = {name: (value, ours.get(name)) for name, value in upstream.items()
              if name not in LEFT_OUT and ours.get(name) != value}
    assert not differ, f"upstream's debug.config (value, ours): {differ}"


def test_every_exception_is_upstreams_and_documented(upstream: dict[str, str]) -> None:
    stale = sorted(set(LEFT_OUT) - set(upstream))
    assert not stale, f"LEFT_OUT names what upstream's debug.config does not set: {stale}"
    comment = OURS.read_text()
    undocumented = [n for n in LEFT_OUT if n not in ("CONFIG_LOCALVERSION",)
                    and n.removeprefix("CONFIG_") not in comment]
    assert not undocumented, f"not explained in kmod/debug/kernel.config: {undocumented}"
