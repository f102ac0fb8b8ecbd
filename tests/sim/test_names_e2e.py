"""Names imported from wg-quick and networkd configs, through the real daemon on the
simulated gateway and the installed CLI (issue 13): the names show in status, `policy
show` says where each came from, a bad file is a warning naming file and line (the daemon
runs on), and a reload reads the files again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wghybrid.model import encode_key
from wghybrid.policy.load import DATA_PLANE
from wghybrid.sim import load_scenario

pytestmark = pytest.mark.sim

WGHYBRID = str(Path(sys.executable).parent / "wghybrid")


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="wgh-names-", dir="/tmp"))  # short socket path
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_imported_names_reach_status_and_policy_show(root: Path) -> None:
    keys = {t.name: encode_key(t.public_key) for t in load_scenario("mixed").tunnels}
    wgq, nd = root / "wireguard", root / "network"
    wgq.mkdir()
    nd.mkdir()
    (wgq / "wg0.conf").write_text(
        f"[Interface]\nPrivateKey = {keys['mouse-001']}\n\n"
        f"# Name = branch-7\n[Peer]\nPublicKey = {keys['mouse-007']}\n\n"
        f"[Peer]\n# Name = branch-8\nPublicKey = {keys['mouse-008']}\n")
    (nd / "wg0.netdev").write_text(
        f"[WireGuardPeer]\n# Name = branch-8-networkd\nPublicKey={keys['mouse-008']}\n")
    (wgq / "broken.conf").write_bytes(b"[Peer]\n# Name = ok\n\xff\n")
    policy = root / "policy.toml"
    policy.write_text(f'name = "names"\n[name_import]\nwg_quick = ["{wgq}"]\n'
                      f'networkd = ["{nd}"]\n')
    sock = root / "api.sock"
    env = {k: v for k, v in os.environ.items()
           if k not in ("WGHYBRID_URL", "WGHYBRID_TOKEN_FILE", "NOTIFY_SOCKET")}
    env["WGHYBRID_SOCKET"] = str(sock)
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [WGHYBRID, "run", "--backend", "sim", "--scenario", "mixed", "--policy", str(policy),
         "--state-dir", str(root / "state")], stdout=log, stderr=subprocess.STDOUT, env=env)

    def cli(*args: str) -> str:
        done = subprocess.run([WGHYBRID, *args], capture_output=True, text=True, env=env,
                              timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = subprocess.run([WGHYBRID, "status", "all", "names"], capture_output=True,
                                  text=True, env=env, timeout=30, check=False)
            if done.returncode == 0 and done.stdout:
                break
            time.sleep(0.2)
        names = dict(line.split("\t")[1:] for line in cli("status", "all", "names").splitlines())
        assert names[keys["mouse-007"]] == "branch-7"  # wg-quick over the simulator's name
        assert names[keys["mouse-008"]] == "branch-8-networkd"  # networkd over wg-quick
        assert names[keys["mouse-009"]] == "mouse-009"
        assert any(ln.startswith("  branch-7 ") for ln in cli("status", "--top", "300")
                   .splitlines())
        shown = json.loads(cli("policy", "show", "--json"))["policy"]
        sources = shown["name_sources"]
        assert sources[keys["mouse-007"]] == {"name": "branch-7",
                                              "from": f"wg-quick {wgq}/wg0.conf:4"}
        assert sources[keys["mouse-008"]]["from"] == f"networkd {nd}/wg0.netdev:2"
        assert sources[keys["mouse-009"]]["from"] == DATA_PLANE
        assert shown["name_warnings"] == [f"{wgq}/broken.conf:3: not UTF-8 text; skipped"]
        text = cli("policy", "show")
        assert f"# warning: names: {wgq}/broken.conf:3: not UTF-8 text; skipped" in text
        assert f"# from wg-quick {wgq}/wg0.conf:4" in text
        # a new name, and a file that cannot be read: the reload takes the one, warns on
        # the other, and the daemon runs on
        (wgq / "wg0.conf").write_text(
            f"[Peer]\n# Name = branch-seven\nPublicKey = {keys['mouse-007']}\n")
        (wgq / "big.conf").write_bytes(b"#" * (17 << 20))
        assert cli("policy", "reload").startswith("[#] policy reloaded: names from ")
        deadline = time.monotonic() + 30  # the names of the next tick's snapshot
        while time.monotonic() < deadline:
            names = dict(line.split("\t") for line in cli("status", "wg0", "names").splitlines())
            if names[keys["mouse-007"]] == "branch-seven":
                break
            time.sleep(0.2)
        assert names[keys["mouse-007"]] == "branch-seven"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    assert code == 0
    lines = (root / "daemon.log").read_text().splitlines()
    warnings = [ln for ln in lines if "wghybrid.policy: names:" in ln]
    assert any(f"{wgq}/broken.conf:3: not UTF-8 text; skipped" in ln for ln in warnings)
    assert any(f"{wgq}/big.conf: {17 << 20} bytes, more than" in ln for ln in warnings)
    assert all(" WARNING " in ln for ln in warnings)
    assert not any("Traceback" in ln for ln in lines)
