"""Trace scenarios (CSV of t_s,tunnel,gbps): parsing, errors, interpolation, the TOML
wrapper, and the trace builder (wghybrid/sim/tracegen.py) that made the shipped traces."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest

from wghybrid.sim import ScenarioError, load_scenario, parse_scenario, tracegen
from wghybrid.sim.scenario import parse_trace

pytestmark = pytest.mark.unit

FOLDER = Path(__file__).resolve().parents[2] / "wghybrid" / "sim" / "scenarios"
SHIPPED_TRACES = ["websearch-sites", "datamining-sites"]

CSV = """# a comment
t_s,tunnel,gbps
0,a,1.0
0,b,4.0
10,a,3.0
10,b,0.0

20,a,3.0
"""


def test_linear_interpolation_and_hold() -> None:
    tr = parse_trace(CSV, source="x.csv")
    assert tr.tunnels == ("a", "b") and tr.end == 20.0 and tr.rows == 5
    assert tr.offered(0.0).tolist() == [1.0, 4.0]
    assert tr.offered(2.5) == pytest.approx([1.5, 3.0])
    assert tr.offered(10.0).tolist() == [3.0, 0.0]
    # b's last row is at 10: it holds 0 after; a holds 3 after its last row too.
    assert tr.offered(15.0).tolist() == [3.0, 0.0]
    assert tr.offered(1000.0).tolist() == [3.0, 0.0]


def test_hold_before_first_row_steps_and_column_order() -> None:
    tr = parse_trace("gbps,tunnel,t_s\n2,late,30\n6,late,40\n1,step,0\n1,step,10\n"
                     "5,step,10\n5,step,20\n", source="y.csv")
    assert tr.tunnels == ("late", "step")
    assert tr.offered(0.0).tolist() == [2.0, 1.0]     # before late's first row: held
    assert tr.offered(35.0)[0] == pytest.approx(4.0)
    # Two rows at t = 10 make a step: the left limit is 1, from 10 on it is 5.
    assert tr.offered(9.999)[1] == pytest.approx(1.0)
    assert tr.offered(10.0)[1] == 5.0
    assert tr.offered(15.0)[1] == 5.0


def test_many_rows_at_one_time_keep_first_and_last() -> None:
    tr = parse_trace("t_s,tunnel,gbps\n0,a,0\n5,a,1\n5,a,9\n5,a,2\n10,a,2\n")
    assert tr.offered(2.5)[0] == pytest.approx(0.5)
    assert tr.offered(5.0)[0] == 2.0 and tr.offered(7.0)[0] == 2.0


def test_matches_numpy_interp_for_many_tunnels() -> None:
    rng = np.random.default_rng(5)
    n, rows = 300, 40
    lines = ["t_s,tunnel,gbps"]
    truth = []
    for k in range(n):
        t = np.sort(rng.uniform(0, 200, rows)).round(3)
        v = rng.uniform(0, 6, rows).round(4)
        truth.append((t, v))
        lines += [f"{a},tun{k},{b}" for a, b in zip(t, v, strict=True)]
    # Rows of all tunnels interleaved by time, as a measurement log has them.
    body = sorted(lines[1:], key=lambda s: float(s.split(",")[0]))
    tr = parse_trace("\n".join([lines[0], *body]))
    order = [int(name[3:]) for name in tr.tunnels]
    for t in (0.0, 0.7, 55.5, 123.4567, 199.9, 250.0):
        want = np.array([np.interp(t, truth[k][0], truth[k][1]) for k in order])
        assert tr.offered(t) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no header line"),
        ("# only a comment\n", "no header line"),
        ("t_s,tunnel,gbps\n", "no data rows"),
        ("t_s,tunnel\n0,a\n", r"line 1: header: column 'gbps' missing"),
        ("t_s,tunnel,gbps,colour\n", r"line 1: header: unknown column 'colour'"),
        ("t_s,tunnel,gbps,gbps\n", r"line 1: header: (unknown column|column 'gbps' repeated)"),
        ("0,a,1\n", r"line 1: header: unknown column '0'"),
        ("t_s,tunnel,gbps\n0,a,1\n1,a\n", r"line 3: expected 3 fields, got 2"),
        ("t_s,tunnel,gbps\n0,a,1,2\n", r"line 2: expected 3 fields, got 4"),
        ("t_s,tunnel,gbps\n0,a,\n", r"line 2: gbps: missing value"),
        ("t_s,tunnel,gbps\n,a,1\n", r"line 2: t_s: missing value"),
        ("t_s,tunnel,gbps\n0,,1\n", r"line 2: tunnel: missing value"),
        ("t_s,tunnel,gbps\n0,a,fast\n", r"line 2: gbps: 'fast' is not a number"),
        ("t_s,tunnel,gbps\n0,a,nan\n", r"line 2: gbps: nan is not a finite number"),
        ("t_s,tunnel,gbps\n0,a,inf\n", r"line 2: gbps: inf is not a finite number"),
        ("t_s,tunnel,gbps\n0,a,-0.5\n", r"line 2: gbps: -0.5 is negative"),
        ("t_s,tunnel,gbps\n-1,a,1\n", r"line 2: t_s: -1 is negative"),
        ("t_s,tunnel,gbps\n1e9,a,1\n", r"line 2: t_s: 1e9 is above the maximum"),
        ("t_s,tunnel,gbps\n0,\"a\",1\n", r"line 2: tunnel: .* is not a tunnel name"),
        ("t_s,tunnel,gbps\n5,a,1\n6,b,1\n4,a,1\n",
         r"line 4: t_s: 4 is before 5, tunnel 'a''s previous time \(line 2\)"),
    ],
)
def test_bad_traces_name_the_file_line_and_problem(text: str, error: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^bad\.csv: {error}"):
        parse_trace(text, source="bad.csv")


def test_not_utf8() -> None:
    with pytest.raises(ScenarioError, match=r"^bad\.csv: not UTF-8"):
        parse_trace(b"t_s,tunnel,gbps\n0,\xff,1\n", source="bad.csv")


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from wghybrid.sim import scenario as sc

    monkeypatch.setattr(sc, "TRACE_MAX_ROWS", 3)
    with pytest.raises(ScenarioError, match=r"^b\.csv: line 5: more than 3 rows"):
        parse_trace("t_s,tunnel,gbps\n0,a,1\n1,a,1\n2,a,1\n3,a,1\n", source="b.csv")
    monkeypatch.setattr(sc, "TRACE_MAX_TUNNELS", 2)
    with pytest.raises(ScenarioError, match=r"^b\.csv: line 4: tunnel: 'c' is one more than"):
        parse_trace("t_s,tunnel,gbps\n0,a,1\n0,b,1\n0,c,1\n", source="b.csv")
    monkeypatch.setattr(sc, "TRACE_MAX_BYTES", 10)
    with pytest.raises(ScenarioError, match=r"^b\.csv: \d+ bytes, more than the limit"):
        parse_trace("t_s,tunnel,gbps\n0,a,1\n", source="b.csv")


def test_big_file_refused_before_reading(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from wghybrid.sim import scenario as sc

    f = tmp_path / "big.csv"
    f.write_text("t_s,tunnel,gbps\n" + "0,a,1\n" * 100)
    monkeypatch.setattr(sc, "TRACE_MAX_BYTES", 100)
    with pytest.raises(ScenarioError, match=r"big\.csv: \d+ bytes, more than the limit"):
        load_scenario(f)


def test_load_csv_directly(tmp_path: Path) -> None:
    f = tmp_path / "office-day.csv"
    f.write_text(CSV)
    s = load_scenario(f)
    assert s.name == "office-day" and s.cores == 32 and s.duration == 20.0
    assert [t.name for t in s.tunnels] == ["a", "b"] and s.interfaces == ("wg0",)
    assert s.trace == str(f) and s.source == str(f)
    assert s.offered(5.0) == pytest.approx([2.0, 2.0])
    assert s.offered(500.0).tolist() == [3.0, 0.0]  # clamped to duration, then held
    keys = {t.public_key for t in s.tunnels}
    assert len(keys) == 2 and all(len(k) == 32 and k[-1] != 0 for k in keys)


def test_toml_refers_to_trace_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "load.csv").write_text(CSV)
    f = tmp_path / "replay.toml"
    f.write_text('name = "replay"\ncores = 16\nduration = 60\ninterface = "wg3"\n'
                 'mixed = true\ntrace = { file = "data/load.csv", scale = 2.0 }\n')
    s = load_scenario(f)
    assert (s.name, s.cores, s.duration, s.mixed, s.steady) == ("replay", 16, 60.0, True, False)
    assert s.interfaces == ("wg3",) and s.trace == "data/load.csv"
    assert s.offered(5.0) == pytest.approx([4.0, 4.0])
    g = tmp_path / "plain.toml"
    g.write_text('name = "plain"\ntrace = "data/load.csv"\n')
    assert load_scenario(g).duration == 20.0  # the trace's last t_s


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('name = "t"\ntrace = 3\n', r"trace: expected a file name or a table"),
        ('name = "t"\ntrace = "load.txt"\n', r"trace: 'load.txt' is not a \.csv"),
        ('name = "t"\ntrace = "missing.csv"\n', r"trace: .*missing\.csv: no such file"),
        ('name = "t"\ntrace = { file = "ok.csv", speed = 2 }\n', r"trace\.speed: unknown key"),
        ('name = "t"\ntrace = { scale = 2 }\n', r"trace\.file: missing"),
        ('name = "t"\ntrace = { file = "ok.csv", scale = -1 }\n', r"trace\.scale"),
        ('name = "t"\ntrace = "ok.csv"\n[[group]]\nname = "g"\ncount = 1\ngbps = 1\n',
         r"group: not with trace"),
        ('name = "t"\ntrace = "ok.csv"\nduration = 0\n', r"duration"),
    ],
)
def test_bad_trace_references(tmp_path: Path, toml: str, error: str) -> None:
    (tmp_path / "ok.csv").write_text(CSV)
    with pytest.raises(ScenarioError, match=rf"^bad\.toml: {error}"):
        parse_scenario(toml, source="bad.toml", base=tmp_path)


def test_errors_inside_a_referenced_trace_name_its_line(tmp_path: Path) -> None:
    (tmp_path / "broken.csv").write_text("t_s,tunnel,gbps\n0,a,1\n1,a,oops\n")
    with pytest.raises(ScenarioError, match=r"broken\.csv: line 3: gbps: 'oops'"):
        parse_scenario('name = "t"\ntrace = "broken.csv"\n', source="x.toml", base=tmp_path)


def test_offered_is_fast_for_hundreds_of_tunnels() -> None:
    import time

    n, steps = 300, 301
    t = np.arange(steps, dtype=float)
    lines = ["t_s,tunnel,gbps"] + [f"{a:g},t{k},{(k + a) % 7}" for a in t for k in range(n)]
    tr = parse_trace("\n".join(lines))
    t0 = time.perf_counter()
    for x in np.arange(0.0, 300.0, 0.15):
        tr.offered(float(x))
    per_call = (time.perf_counter() - t0) / 2000
    assert per_call < 2e-3  # ~0.1 ms here; called ~10 times per simulated second


# --- the shipped traces and their builder ---------------------------------------------


def _regenerate_args(csv: Path) -> list[str]:
    for line in csv.read_text().splitlines():
        if line.startswith("# Regenerate: "):
            cmd = shlex.split(line[len("# Regenerate: "):])
            assert cmd[:3] == ["python", "-m", "wghybrid.sim.tracegen"]
            return cmd[3:]
    raise AssertionError(f"{csv}: no '# Regenerate:' line")


@pytest.mark.parametrize("name", SHIPPED_TRACES)
def test_shipped_trace_is_what_its_header_regenerates(name: str, tmp_path: Path) -> None:
    csv = FOLDER / f"{name}.csv"
    args = _regenerate_args(csv)
    assert args[-2:] == ["-o", f"wghybrid/sim/scenarios/{name}.csv"]
    out = tmp_path / "again.csv"
    p, _ = tracegen.parse_args(args[:-2] + ["-o", str(out)])
    assert tracegen.render(p, f"wghybrid/sim/scenarios/{name}.csv") == csv.read_text()
    assert csv.stat().st_size < 2 * 1024 * 1024


@pytest.mark.parametrize("name", SHIPPED_TRACES)
def test_shipped_trace_cites_its_source(name: str) -> None:
    head = (FOLDER / f"{name}.csv").read_text()[:2000]
    toml = (FOLDER / f"{name}.toml").read_text()
    for text in (head, toml):
        assert "SIGCOMM" in text and "snkas/networkload" in text
        assert "MIT" in text and "Apache" in text
    s = load_scenario(name)
    assert s.trace == f"{name}.csv" and len(s.tunnels) >= 48


def test_tracegen_main_writes_a_loadable_deterministic_trace(tmp_path: Path) -> None:
    args = ["--tunnels", "6", "--heavy", "1", "--duration", "30", "--seed", "3"]
    a = tmp_path / "a.csv"
    assert tracegen.main([*args, "-o", str(a)]) == 0
    first = a.read_text()
    tracegen.main([*args, "-o", str(a)])
    assert a.read_text() == first
    tracegen.main([*args[:-1], "4", "-o", str(a)])
    assert a.read_text() != first
    tracegen.main([*args, "-o", str(a)])
    s = load_scenario(a)
    assert [t.name for t in s.tunnels] == ["hub-0", "site-0", "site-1", "site-2", "site-3",
                                           "site-4"]
    assert s.duration == 30.0
    rows = [ln for ln in a.read_text().splitlines() if ln and not ln.startswith("#")]
    assert len(rows) == 1 + 6 * 31  # header + one row per tunnel per step


def test_tracegen_mean_load_matches_the_target() -> None:
    p = tracegen.TraceParams(tunnels=4, heavy=2, heavy_gbps=(4.0, 4.0), light_gbps=(0.5, 0.5),
                             duration=2000.0, seed=11)
    names, loads = tracegen.build(p)
    assert names == ["hub-0", "hub-1", "site-0", "site-1"]
    assert loads.shape == (2001, 4) and np.all(loads >= 0)
    assert loads.mean(axis=0) == pytest.approx([4.0, 4.0, 0.5, 0.5], rel=0.08)


def test_tracegen_conserves_bytes() -> None:
    """Bin integration: the Gbit in the rows equal the flows' bits sent inside the window
    (a flow sends at flow_gbps from its start until its size is out)."""
    rng = np.random.default_rng(1)
    starts = np.sort(rng.uniform(0, 10, 50))
    ends = np.sort(starts + rng.uniform(0, 3, 50))
    edges = np.arange(-1.0, 16.0)
    sent = tracegen._ramp_sum(starts, edges) - tracegen._ramp_sum(ends, edges)
    total = float(np.sum(ends - starts))
    assert sent[-1] == pytest.approx(total) and np.all(np.diff(sent) >= -1e-12)


@pytest.mark.parametrize("name", sorted(tracegen.CDFS))
def test_cdfs_are_well_formed(name: str) -> None:
    cdf = tracegen.CDFS[name]
    assert cdf.cdf[0] == 0.0 and cdf.cdf[-1] == 1.0
    assert all(np.diff(cdf.sizes) > 0) and all(np.diff(cdf.cdf) > 0)
    x = cdf.draw(np.random.default_rng(0), 200_000)
    assert float(x.mean()) == pytest.approx(cdf.mean_bytes(), rel=0.05)


def test_websearch_mean_is_the_published_one() -> None:
    # Piecewise-linear mean of the DCTCP web-search CDF (4000-byte origin): 1.71 MB.
    assert tracegen.CDFS["websearch"].mean_bytes() == pytest.approx(1_711_550)


@pytest.mark.parametrize(
    "args",
    [["--tunnels", "0"], ["--heavy", "70"], ["--light-gbps", "2"], ["--light-gbps", "3:1"],
     ["--flow-gbps", "0"], ["--cdf", "nope"], ["--tunnels", "100000", "--duration", "600"]],
)
def test_tracegen_rejects_bad_arguments(args: list[str]) -> None:
    with pytest.raises(SystemExit):
        tracegen.parse_args(args)
