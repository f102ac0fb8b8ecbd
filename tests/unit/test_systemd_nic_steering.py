"""The NIC-steering drop-in that systemd/wghybrid.service documents: systemd accepts it,
it adds exactly the paths enabled steering writes (the queue IRQs' directories below
/proc/irq, the NIC's RX queues below /sys/devices) and nothing else, and the shipped
unit stays without them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "wghybrid.service"
BEGIN = "# --- NIC steering drop-in: "
END = "# --- end of the drop-in"


def drop_in() -> tuple[str, str]:
    """(file name, text) of the drop-in in the unit's comments."""
    lines = UNIT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(BEGIN))
    stop = lines.index(END, start)
    name = lines[start][len(BEGIN):].strip()
    body = [line.removeprefix("#").removeprefix(" ") for line in lines[start + 1 : stop]]
    return name, "\n".join(body) + "\n"


def settings(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith(("#", "["))]


def test_the_drop_in_adds_exactly_the_steering_paths() -> None:
    name, text = drop_in()
    assert name == "/etc/systemd/system/wghybrid.service.d/nic-steering.conf"
    assert text.startswith("[Service]\n")
    paths = [p for ln in settings(text) for p in ln.removeprefix("ReadWritePaths=").split()]
    assert all(ln.startswith("ReadWritePaths=") for ln in settings(text))
    assert paths == ["-/proc/irq/40", "-/proc/irq/41",
                     "-/sys/devices/pci0000:00/0000:00:03.0/net/eth0/queues"]
    # Not /proc/irq itself: ProtectKernelTunables='s read-only /proc/irq would win.
    assert "-/proc/irq" not in paths and "/proc/irq" not in paths
    # The shipped unit allows none of it.
    unit = settings(UNIT.read_text())
    assert [ln for ln in unit if ln.startswith("ReadWritePaths=")] == [
        "ReadWritePaths=/sys/devices/virtual/net"
    ]
    assert "ProtectKernelTunables=yes" in unit and "CapabilityBoundingSet=CAP_NET_ADMIN" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit_with_the_drop_in(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "wghybrid"
    assert exe.is_file(), f"{exe} missing: pip install -e . into this venv"
    unit = tmp_path / "wghybrid.service"
    unit.write_text(UNIT.read_text().replace("/usr/bin/wghybrid", str(exe)))
    (tmp_path / "wghybrid.service.d").mkdir()
    name, text = drop_in()
    (tmp_path / "wghybrid.service.d" / Path(name).name).write_text(text)
    (tmp_path / "wghybrid.service.d" / "probe.conf").write_text("[Service]\nReadWritePathz=/x\n")
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # The drop-ins beside the copy are read (the probe's misspelt key is reported), and
    # the documented one draws no warning.
    warnings = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(warnings) == 1 and "ReadWritePathz" in warnings[0], warnings
