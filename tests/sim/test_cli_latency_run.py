"""bench/cli_latency.py end to end on the simulated daemon: it runs, times every command
and writes its JSON (the numbers are not asserted: no timed assertions in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.sim

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cli_latency.py"


def test_the_benchmark_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "2", "--out", str(out), "--target-ms", "1e9",
         "--command", "version", "--command", "status wg0 modes"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["ok"] and [c["command"] for c in data["commands"]] == [
        "wghybrid version", "wghybrid status wg0 modes"]
    assert all(len(c["times_ms"]) == 2 and c["median_ms"] > 0 for c in data["commands"])
    assert "target: median <= 1e+09 ms: ok" in done.stdout
    # a target no process can meet: exit 1, every command named
    done = subprocess.run(
        [sys.executable, str(BENCH), "--runs", "1", "--out", str(out), "--target-ms", "0.001",
         "--no-pyc", "--command", "version"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    assert done.returncode == 1 and "MISSED wghybrid version" in done.stdout
    assert "no bytecode cache" in done.stdout
    assert json.loads(out.read_text())["bytecode_cache"] is False
