"""bench/kmod_ab.py's mechanics on the guest's output (kmod/harness/scenarios/ab_stock.sh):
parsing, the medians and ratios, the table, the JSON and the exit status (the figures
themselves are the bench's to measure, in a qemu guest, never a test's)."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from scripts import load_script

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "kmod_ab.py"
# A real run (trixie, 6.12.118, 6 rounds, -smp 2), as the guest wrote it (its dmesg cut).
CAPTURED = Path(__file__).resolve().parent / "kmod_ab" / "ab_stock.log"


def load() -> ModuleType:
    return load_script(BENCH, "wghybrid_bench_kmod_ab")


def trial_line(n: int, rnd: int, mode: str, mbytes: float, busy: int) -> str:
    """One trial as ab_stock.sh prints it: 10 s window, 2 CPUs, HZ 100."""
    return (f"AB trial={n} round={rnd} pos=1 mode={mode} bytes={int(mbytes * 1e6)} "
            f"wg_bytes={int(mbytes * 0.97e6)} elapsed_ns=10000000000 iperf_bytes=1 retrans=0 "
            f"busy={busy} user=10 system={busy - 310} irq=0 softirq=300 steal=0 "
            f"idle={2000 - busy} hz=100 srcversion={'S' if mode == 'stock' else 'P'}")


def synthetic(vanilla_factor: float, rounds: int = 3, done: bool = True,
              modes: tuple[str, ...] = ("stock", "vanilla", "inline")) -> str:
    """A log where vanilla delivers `vanilla_factor` of stock's bytes for the same busy
    time (so vanilla/stock per CPU-second is exactly that), inline 1.5x on less CPU."""
    lines = ["guest noise", "AB config rounds=3 seconds=10 kernel=6.12.0-test cpus=2 hz=100"]
    n = 0
    for r in range(1, rounds + 1):
        drift = 1 + 0.01 * r  # the host drifts; each round's own ratio stays the same
        for mode in modes:
            n += 1
            mb = {"stock": 100.0, "vanilla": 100.0 * vanilla_factor, "inline": 150.0}[mode]
            busy = {"stock": 1600, "vanilla": 1600, "inline": 1200}[mode]
            lines.append(trial_line(n, r, mode, mb * drift, busy))
            lines.append("== some step")
    if done:
        lines.append(f"AB done trials={n}")
    return "\n".join(lines) + "\n"


def run(tmp_path: Path, text: str) -> tuple[int, dict]:
    ab = load()
    log = tmp_path / "ab_stock.log"
    log.write_text(text)
    out = tmp_path / "ab.json"
    rc = ab.main(["--target", "trixie", "--log", str(log), "--out", str(out)])
    return rc, json.loads(out.read_text())


@pytest.mark.parametrize(("factor", "rc"), [(0.97, 1), (0.979, 1), (0.98, 0), (0.99, 0),
                                            (1.05, 0)])
def test_vanilla_below_98_percent_of_stock_per_cpu_second_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: float, rc: int,
) -> None:
    got, report = run(tmp_path, synthetic(factor))
    out = capsys.readouterr().out
    assert got == rc
    r = report["ratios"]["vanilla/stock"]
    assert r["mbit_per_cpu_s"] == pytest.approx(factor, rel=1e-6)
    assert r["mbit_per_s"] == pytest.approx(factor, rel=1e-6)  # same window, same busy
    assert r["mbit_per_cpu_s_per_round"]["min"] == pytest.approx(factor, rel=1e-6)
    assert report["ratios"]["inline/stock"]["mbit_per_cpu_s"] == pytest.approx(1.5 * 1600 / 1200)
    assert ("MISSED: vanilla/stock" in out) == bool(rc)
    assert (len(report["misses"]) == 1) == bool(rc)
    assert ("met: vanilla/stock" in out) == (not rc)


def test_an_unfinished_run_or_a_missing_mode_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    rc, report = run(tmp_path, synthetic(1.0, done=False))
    assert rc == 1 and report["misses"] == [
        "the guest's scenario did not finish (no 'AB done' line)"]
    rc, report = run(tmp_path, synthetic(1.0, modes=("stock", "inline")))
    assert rc == 1 and report["misses"] == ["no trials of vanilla"]
    assert "vanilla/stock" not in report["ratios"]
    rc, report = run(tmp_path, "qemu died\n")
    assert rc == 1 and len(report["misses"]) == 4


def test_the_captured_guest_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ab = load()
    config, trials, done = ab.parse_log(CAPTURED.read_text())
    assert done and config["cpus"] == 2 and config["hz"] == 100
    assert len(trials) == 18
    # Each mode in each position of a round twice: host drift cancels.
    for mode in ("stock", "vanilla", "inline"):
        assert sorted(t["pos"] for t in trials if t["mode"] == mode) == [1, 1, 2, 2, 3, 3]
    first = trials[0]
    # Mbit per CPU-second: the window's veth bytes over its busy ticks.
    assert first["mbit_per_cpu_s"] == pytest.approx(
        first["bytes"] * 8 / 1e6 / (first["busy"] / 100))
    assert first["mbit_per_s"] == pytest.approx(first["bytes"] * 8e3 / first["elapsed_ns"])
    s = ab.summarize(trials)
    for mode in ("stock", "vanilla", "inline"):
        assert s["modes"][mode]["trials"] == 6
    per_cpu = {m: sorted(t["mbit_per_cpu_s"] for t in trials if t["mode"] == m)
               for m in ("stock", "vanilla")}
    medians = {m: (v[2] + v[3]) / 2 for m, v in per_cpu.items()}  # six trials each
    ratio = s["ratios"]["vanilla/stock"]["mbit_per_cpu_s"]
    assert ratio == pytest.approx(medians["vanilla"] / medians["stock"])
    assert s["modes"]["stock"]["mbit_per_cpu_s"]["min"] == per_cpu["stock"][0]
    assert s["modes"]["stock"]["mbit_per_cpu_s"]["max"] == per_cpu["stock"][-1]
    rc = ab.main(["--log", str(CAPTURED), "--out", str(tmp_path / "ab.json")])
    out = capsys.readouterr().out
    assert "vanilla/stock" in out and "inline/stock" in out
    assert rc == (0 if ratio >= 0.98 else 1)
    assert ("MISSED: vanilla/stock" in out) == (ratio < 0.98)


@pytest.mark.parametrize("icount", [None, 2])
def test_icount_reaches_the_harness_and_names_the_results(
        icount: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--icount N boots run.sh with WGHYBRID_KMOD_ICOUNT=N (and without it, none is passed
    on from the caller's environment); the JSON says so and its name carries _icountN."""
    bench = load()
    seen: dict[str, str] = {}

    def fake_run(cmd: list[str], env: dict[str, str], check: bool) -> None:
        seen.update(env)
        log = Path(env["WGHYBRID_KMOD_RESULTS"]) / "ab_stock.log"
        log.parent.mkdir(parents=True)
        log.write_text(synthetic(1.0))

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "results")
    monkeypatch.setenv("WGHYBRID_KMOD_ICOUNT", "7")
    argv = ["--target", "bookworm"] + ([] if icount is None else ["--icount", str(icount)])
    assert bench.main(argv) == 0
    assert seen.get("WGHYBRID_KMOD_ICOUNT") == (None if icount is None else str(icount))
    name = "kmod_ab_bookworm_smp2" + ("" if icount is None else f"_icount{icount}") + ".json"
    assert json.loads((tmp_path / "results" / name).read_text())["icount"] == icount
