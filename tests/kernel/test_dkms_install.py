"""kmod/dkms-install.sh on a gateway: what it refuses, with what message, before any
DKMS call; and that the series applies to the WireGuard of the real linux-source .deb
of the target's kernel (--check: everything but dkms). The install itself, DKMS
against the booted kernel, is the `dkms` scenario in qemu (test_kmod.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_kmod import _unmet

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "kmod" / "dkms-install.sh"


def install(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, check=False, stdin=subprocess.DEVNULL)


def fake_tree(tmp_path: Path, version: str, junk: bool = False) -> Path:
    """A linux source tree of VERSION (x.y.z) with a WireGuard that is not the real one."""
    v, p, s = version.split(".")
    tree = tmp_path / "linux"
    wg = tree / "drivers" / "net" / "wireguard"
    wg.mkdir(parents=True)
    (tree / "Makefile").write_text(f"VERSION = {v}\nPATCHLEVEL = {p}\nSUBLEVEL = {s}\n")
    for name in ("main.c", "peer.c", "peer.h", "queueing.h", "send.c", "receive.c", "device.c"):
        (wg / name).write_text("/* not WireGuard */\n" if junk else "")
    return tree


def test_a_line_without_a_series_is_refused() -> None:
    r = install("--kernel", "6.6.0-1-amd64", "--kernel-version", "6.6.15-2", "--check")
    assert r.returncode == 3
    assert "linux 6.6 (kernel 6.6.0-1-amd64, Debian 6.6.15-2) has no wghybrid series" in r.stderr
    assert "6.1" in r.stderr and "6.12" in r.stderr


def test_an_rt_kernel_is_refused() -> None:
    r = install("--kernel", "6.12.118+deb13-rt-amd64", "--kernel-version", "6.12.118-1", "--check")
    assert r.returncode == 3
    assert "PREEMPT_RT" in r.stderr


@pytest.mark.parametrize("args", [("--kernel", "../../etc"), ("--kernel-version", "6.12"),
                                  ("--bogus",)])
def test_bad_arguments_are_named(args: tuple[str, ...]) -> None:
    r = install("--kernel", "6.12.118+deb13-amd64", *args, "--check")
    assert r.returncode == 2
    assert r.stderr.startswith("dkms-install: ") and r.stderr[-1] == "\n"
    assert args[-1] in r.stderr or args[0] in r.stderr


def test_a_kernel_of_another_line_than_its_version_is_refused() -> None:
    r = install("--kernel", "6.1.0-57-amd64", "--kernel-version", "6.12.118-1", "--check")
    assert r.returncode == 3
    assert "is not of linux 6.12" in r.stderr


def test_a_source_of_another_version_is_refused(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, "6.12.117")
    r = install("--kernel", "6.12.118+deb13-amd64", "--kernel-version", "6.12.118-1",
                "--source-dir", str(tree), "--check")
    assert r.returncode == 5
    assert "is linux 6.12.117, but kernel 6.12.118+deb13-amd64 is 6.12.118" in r.stderr


def test_a_series_that_does_not_apply_names_the_patch_and_hunk(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path, "6.12.118", junk=True)
    r = install("--kernel", "6.12.118+deb13-amd64", "--kernel-version", "6.12.118-1",
                "--source-dir", str(tree), "--check")
    assert r.returncode == 4, r.stderr
    assert "kmod/patches/6.12/0001-" in r.stderr and "does not apply" in r.stderr
    assert "Hunk #1 FAILED" in r.stderr


def test_missing_headers_are_named() -> None:
    r = install("--kernel", "6.12.999+deb13-amd64", "--kernel-version", "6.12.999-1")
    assert r.returncode == 5
    assert "apt-get install linux-headers-6.12.999+deb13-amd64" in r.stderr


@pytest.fixture(scope="module")
def trixie_kernel() -> dict[str, str]:
    why = _unmet()
    if why is not None:
        if os.environ.get("WGHYBRID_KERNEL_TESTS") == "1":
            pytest.fail(f"WGHYBRID_KERNEL_TESTS=1 but {why}")
        pytest.skip(why)
    top = subprocess.run([str(ROOT / "kmod" / "fetch.sh")], capture_output=True, text=True,
                         check=True, timeout=1800, stdin=subprocess.DEVNULL,
                         env={**os.environ, "WGHYBRID_KMOD_TARGET": "trixie"},
                         ).stdout.splitlines()[-1]
    env = dict(line.split("=", 1) for line in (Path(top) / "target.env").read_text().splitlines())
    deb = next(Path(env["DEBS"]).glob("linux-source-*.deb"))
    return {"V": env["V"], "REL": env["REL"], "DEB": str(deb)}


def test_the_series_applies_to_the_real_source_deb(trixie_kernel: dict[str, str]) -> None:
    k = trixie_kernel
    r = install("--kernel", k["REL"], "--kernel-version", k["V"], "--source-deb", k["DEB"],
                "--check")
    assert r.returncode == 0, r.stderr
    assert f"applies to the WireGuard of {k['REL']} ({k['V']})" in r.stdout


def test_a_source_deb_of_another_version_is_refused(trixie_kernel: dict[str, str]) -> None:
    k = trixie_kernel
    r = install("--kernel", k["REL"], "--kernel-version", k["V"] + "9", "--source-deb", k["DEB"],
                "--check")
    assert r.returncode == 5
    assert f"is linux-source-6.12 {k['V']}, but kernel" in r.stderr
