"""bench/tick_cost.py's mechanics on a small gateway: the table, the JSON, the exit status
(the costs themselves are the bench's to measure, never a test's)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from scripts import load_script

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tick_cost.py"


def load() -> ModuleType:
    return load_script(BENCH, "wghybrid_bench_tick_cost")


@pytest.mark.parametrize(("target_ms", "rc"), [(0.0, 1), (1e9, 0)])
def test_a_missed_target_is_printed_written_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    target_ms: float, rc: int,
) -> None:
    tc = load()
    monkeypatch.setattr(tc, "TARGETS_MS", {300: target_ms})
    assert tc.main(["--peers", "300", "--ticks", "4", "--warmup", "2",
                    "--out", str(tmp_path)]) == rc
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "tick_cost.json").read_text())
    assert [(r["peers"], r["case"]) for r in report["results"]] == [
        (300, "steady"), (300, "churn"), (300, "reshuffle")]
    for case in ("steady", "churn", "reshuffle"):
        assert f"    300 {case}" in out
    for r in report["results"]:
        assert 0 < r["total"]["median_ms"] <= r["total"]["p99_ms"]
        assert 0 <= r["cpu"]["median_ms"] <= r["cpu"]["p99_ms"]
        assert len(r["load"]) == 2
    assert len(report["misses"]) == (6 if rc else 0)
    assert ("MISSED: 300 peers, churn: p99_ms" in out) == bool(rc)
