"""Scenario files: the shipped ones, the format's semantics and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wghybrid.model import Mode
from wghybrid.sim import ScenarioError, list_scenarios, load_scenario, parse_scenario

pytestmark = pytest.mark.unit

SHIPPED = ["bursty-thresholds", "crowd-pairs", "crowded-cores", "datamining-sites", "diurnal",
           "elephants-churn", "elephants-to-mice", "few-elephants", "flash-crowd",
           "lone-elephant", "medium-crowd", "mixed", "out-of-phase", "overload",
           "quarter-swings", "ramp-into-overload", "slow-ramp", "slow-swings", "steady-mice",
           "steady-noisy", "steady-noisy-bulk", "steady-noisy-dense", "tiny-plus-medium",
           "two-devices", "websearch-sites"]
MIXED = {"crowd-pairs", "datamining-sites", "diurnal", "elephants-churn", "elephants-to-mice",
         "flash-crowd", "medium-crowd", "mixed", "out-of-phase", "quarter-swings", "slow-ramp",
         "slow-swings", "steady-noisy", "steady-noisy-bulk", "two-devices", "websearch-sites"}
STEADY = {"crowded-cores", "lone-elephant", "mixed", "overload", "steady-mice", "steady-noisy",
          "steady-noisy-bulk", "steady-noisy-dense", "tiny-plus-medium", "two-devices"}
FOLDER = Path(__file__).resolve().parents[2] / "wghybrid" / "sim" / "scenarios"


def test_list_scenarios() -> None:
    assert list_scenarios() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_are_sane_and_deterministic(name: str) -> None:
    a, b = load_scenario(name), load_scenario(name)
    assert a.name == name and a.description
    assert a.cores == 32 and 180 <= a.duration <= 600
    assert a.interfaces == (("wg0", "wg1") if name == "two-devices" else ("wg0",))
    assert (a.mixed, a.steady) == (name in MIXED, name in STEADY)
    assert (a.trace is not None) == name.endswith("-sites")
    keys = [t.public_key for t in a.tunnels]
    assert len(set(keys)) == len(keys) and all(len(k) == 32 for k in keys)
    for t in np.linspace(0, a.duration, 37):
        oa = a.offered(float(t))
        assert oa.shape == (len(a.tunnels),) and np.all(oa >= 0) and np.all(np.isfinite(oa))
        assert np.array_equal(oa, b.offered(float(t)))


def test_load_by_path(tmp_path: Path) -> None:
    f = tmp_path / "x.toml"
    f.write_text('name = "x"\nduration = 60\n[[group]]\nname = "g"\ncount = 2\ngbps = 1\n')
    s = load_scenario(f)
    assert s.source == str(f) and [t.name for t in s.tunnels] == ["g-0", "g-1"]
    assert np.allclose(s.offered(10.0), 1.0)


def test_unknown_scenario_lists_known() -> None:
    with pytest.raises(ScenarioError, match="mixed"):
        load_scenario("no-such-thing")


BASE = 'name = "t"\nduration = 100\n'


def test_windows_and_stagger() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 3
        gbps = 2.0
        active = [[10, 20], [50, 60]]
        stagger = 5
        initial_mode = "inline"
    """)
    assert all(t.initial_mode == Mode.INLINE for t in s.tunnels)
    assert s.offered(12.0).tolist() == [2.0, 0.0, 0.0]
    assert s.offered(21.0).tolist() == [0.0, 2.0, 2.0]
    assert s.offered(62.0).tolist() == [0.0, 2.0, 2.0]
    assert s.offered(66.0).tolist() == [0.0, 0.0, 2.0]
    assert s.offered(71.0).tolist() == [0.0, 0.0, 0.0]


def test_diurnal_peak_and_trough() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 1
        gbps = 1.0
        diurnal = { period = 100, amplitude = 0.5 }
    """)
    assert s.offered(25.0)[0] == pytest.approx(1.5)
    assert s.offered(75.0)[0] == pytest.approx(0.5)


def test_noise_is_multiplicative_and_seeded() -> None:
    text = BASE + """
        [[group]]
        name = "g"
        count = 200
        gbps = 1.0
        noise = { sigma = 0.3, tau = 1 }
    """
    a = parse_scenario(text + "")
    b = parse_scenario(text.replace('duration = 100', 'duration = 100\nseed = 9'))
    x = a.offered(3.0)
    assert 0.2 < float(x.std()) < 0.4 and abs(float(x.mean()) - 1.0) < 0.1
    assert not np.array_equal(x, b.offered(3.0))


def test_bursts_add_load() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 50
        gbps = 1.0
        bursts = { every = 20, length = 5, gbps = 3 }
    """)
    x = np.stack([s.offered(float(t)) for t in range(100)])
    assert set(np.round(np.unique(x), 6).tolist()) == {1.0, 4.0}
    assert 0.1 < float((x > 1).mean()) < 0.4  # about length/every of the time


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE + 'colour = 1\n[[group]]\nname = "g"\ncount = 1\ngbps = 1\n', "colour"),
        (BASE, "group"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = 1\nfoo = 2\n', r"group\[0\]\.foo"),
        (BASE + '[[group]]\nname = "g"\ncount = "1"\ngbps = 1\n', r"group\[0\]\.count"),
        (BASE + '[[group]]\nname = "g"\ncount = 0\ngbps = 1\n', r"group\[0\]\.count"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\n', r"group\[0\]\.gbps"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = true\n', r"group\[0\]\.gbps"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = 1\ninitial_mode = "fast"\n',
         "initial_mode"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = 1\nactive = [[5, 1]]\n', "active"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = 1\nnoise = { tau = 1 }\n',
         r"noise\.sigma"),
        (BASE + '[[group]]\nname = "g"\ncount = 1\ngbps = 1\n'
                '[[group]]\nname = "g"\ncount = 1\ngbps = 1\n', r"group\[1\]\.name"),
        ("name = [", "not valid TOML"),
        (BASE + 'mixed = 1\n[[group]]\nname = "g"\ncount = 1\ngbps = 1\n', "mixed"),
        (BASE + 'steady = "yes"\n[[group]]\nname = "g"\ncount = 1\ngbps = 1\n', "steady"),
        (BASE + 'duration = nan\n', "not valid TOML"),
        ('name = "t"\nduration = nan\n[[group]]\nname = "g"\ncount = 1\ngbps = 1\n',
         "duration: nan is not a finite"),
    ],
)
def test_bad_files_name_the_file_and_key(text: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^bad\.toml: .*{key}"):
        parse_scenario(text, source="bad.toml")


def test_shipped_headers_document_every_key() -> None:
    """Every key the loader accepts is in mixed.toml's reference header; every shipped file
    says what it models in a comment header before its first key."""
    from wghybrid.sim.scenario import _GROUP_KEYS, _OSC_KEYS, _RAMP_KEYS, _TOP_KEYS

    ref = (FOLDER / "mixed.toml").read_text()
    header = ref[:ref.index("\nname = ")]
    for key in _TOP_KEYS | _GROUP_KEYS | _OSC_KEYS | _RAMP_KEYS:
        assert key in header, key
    for name in SHIPPED:
        text = (FOLDER / f"{name}.toml").read_text()
        assert text.startswith("# wghybrid traffic scenario"), name
        assert f"# {name}: " in text, name


def test_shipped_kinds_do_what_their_headers_say() -> None:
    """A few checks that the held-out kinds are what they claim, so an edit that breaks one
    (a ramp that never ramps, an oscillation in phase) fails here."""
    flash = load_scenario("flash-crowd")
    crowd = [i for i, t in enumerate(flash.tunnels) if t.name.startswith("crowd")]
    assert len(crowd) == 5
    assert np.all(flash.offered(100.0)[crowd] < 0.5)
    assert np.all(flash.offered(200.0)[crowd] > 2.8)   # above one inline core
    assert np.all(flash.offered(400.0)[crowd] < 0.5)

    osc = load_scenario("out-of-phase")
    swing = [i for i, t in enumerate(osc.tunnels) if t.name.startswith("swing")]
    x = np.stack([osc.offered(float(t))[swing] for t in range(0, 480, 4)])
    high = x > 2.5
    assert np.all(high[:, 0::2] != high[:, 1::2])     # neighbours in anti-phase
    assert 0.35 < float(high.mean()) < 0.65

    ramp = load_scenario("slow-ramp")
    names = [t.name for t in ramp.tunnels]
    rising = [i for i, n in enumerate(names) if n.startswith("rising")]
    falling = names.index("falling-0")
    assert np.all(ramp.offered(30.0)[rising] < 1.0) and np.all(ramp.offered(530.0)[rising] > 2.8)
    assert ramp.offered(30.0)[falling] > 4.5 and ramp.offered(500.0)[falling] < 1.0

    over = load_scenario("overload")
    assert len(over.tunnels) > over.cores
    assert float(over.offered(100.0).sum()) > 2 * 2.8 * over.cores

    crowded = load_scenario("crowded-cores")
    assert crowded.cores < len(crowded.tunnels) < 2 * crowded.cores


# --- ramps ---------------------------------------------------------------------------


def test_ramp_is_linear_and_holds() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 1
        gbps = 1.0
        ramp = { start = 10, end = 30, to = 5 }
    """)
    got = [float(s.offered(t)[0]) for t in (0.0, 10.0, 15.0, 20.0, 30.0, 80.0)]
    assert got == pytest.approx([1.0, 1.0, 2.0, 3.0, 5.0, 5.0])


def test_ramp_list_stagger_and_spread() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 3
        gbps = 0.0
        spread = 0.5
        ramp = [{ start = 10, end = 20, to = 4 }, { start = 50, end = 60, to = 1 }]
        ramp_stagger = 5
    """)
    g = s._groups[0]
    f = g.factor  # type: ignore[attr-defined]
    assert np.all((f >= 0.5) & (f <= 1.5)) and len(set(f.tolist())) == 3
    assert s.offered(5.0).tolist() == [0.0, 0.0, 0.0]
    # t = 15: tunnel 0 is half way up, tunnel 1 just starting, tunnel 2 not yet.
    assert s.offered(15.0) == pytest.approx(f * [2.0, 0.0, 0.0])
    assert s.offered(40.0) == pytest.approx(f * 4.0)
    assert s.offered(60.0) == pytest.approx(f * [1.0, 2.5, 4.0])
    assert s.offered(99.0) == pytest.approx(f * 1.0)


# --- oscillations --------------------------------------------------------------------


def test_square_oscillation_phase_step_and_duty() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 2
        oscillation = { period = 40, low = 1, high = 4.5, phase_step = 0.5 }

        [[group]]
        name = "d"
        count = 1
        oscillation = { period = 40, low = 0, high = 2, duty = 0.25 }
    """)
    assert s.offered(5.0).tolist() == [4.5, 1.0, 2.0]
    assert s.offered(15.0).tolist() == [4.5, 1.0, 0.0]
    assert s.offered(25.0).tolist() == [1.0, 4.5, 0.0]
    assert s.offered(45.0).tolist() == [4.5, 1.0, 2.0]


def test_sine_oscillation() -> None:
    s = parse_scenario(BASE + """
        [[group]]
        name = "g"
        count = 1
        oscillation = { period = 40, low = 1, high = 3, shape = "sine", phase = 0.25 }
    """)
    # phase 0.25: starts at the top.
    assert [float(s.offered(t)[0]) for t in (0.0, 10.0, 20.0, 30.0)] == pytest.approx(
        [3.0, 2.0, 1.0, 2.0])


def test_oscillation_phase_spread_is_seeded() -> None:
    text = BASE + """
        [[group]]
        name = "g"
        count = 50
        oscillation = { period = 60, low = 1, high = 4, phase_spread = 1.0 }
    """
    a, b = parse_scenario(text), parse_scenario(text)
    x = a.offered(7.0)
    assert np.array_equal(x, b.offered(7.0))
    assert 10 < int((x == 4.0).sum()) < 40 and set(x.tolist()) == {1.0, 4.0}


GROUP = '[[group]]\nname = "g"\ncount = 1\n'


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('gbps = 1\nramp = { start = 10, end = 5, to = 2 }\n', r"group\[0\]\.ramp\.end"),
        ('gbps = 1\nramp = { start = 10, to = 2 }\n', r"group\[0\]\.ramp\.end: missing"),
        ('gbps = 1\nramp = { start = 1, end = 5, to = 2, speed = 1 }\n',
         r"group\[0\]\.ramp\.speed: unknown key"),
        ('gbps = 1\nramp = [{ start = 10, end = 20, to = 2 }, { start = 15, end = 30, to = 1 }]\n',
         r"group\[0\]\.ramp\[1\]\.start"),
        ('gbps = 1\nramp = { start = 1, end = 5, to = -2 }\n', r"group\[0\]\.ramp\.to"),
        ('gbps = 1\nramp = { start = 1, end = 5, to = "x" }\n', r"group\[0\]\.ramp\.to"),
        ('gbps = 1\nramp = 3\n', r"group\[0\]\.ramp: expected a table"),
        ('gbps = 1\nramp = []\n', r"group\[0\]\.ramp"),
        ('gbps = 1\nramp_stagger = 2\n', r"group\[0\]\.ramp_stagger: needs a ramp"),
        ('oscillation = { period = 10, low = 1 }\n', r"group\[0\]\.oscillation\.high: missing"),
        ('oscillation = { period = 10, low = 3, high = 1 }\n', r"group\[0\]\.oscillation\.high"),
        ('oscillation = { period = 0.5, low = 1, high = 2 }\n', r"group\[0\]\.oscillation\.period"),
        ('oscillation = { period = 10, low = 1, high = 2, shape = "saw" }\n',
         r"group\[0\]\.oscillation\.shape"),
        ('oscillation = { period = 10, low = 1, high = 2, duty = 1.0 }\n',
         r"group\[0\]\.oscillation\.duty"),
        ('oscillation = { period = 10, low = 1, high = 2, shape = "sine", duty = 0.3 }\n',
         r"group\[0\]\.oscillation\.duty"),
        ('oscillation = { period = 10, low = 1, high = 2, amplitude = 1 }\n',
         r"group\[0\]\.oscillation\.amplitude: unknown key"),
        ('gbps = 1\noscillation = { period = 10, low = 1, high = 2 }\n', r"group\[0\]\.gbps"),
        ('oscillation = { period = 10, low = 1, high = 2 }\n'
         'ramp = { start = 1, end = 2, to = 3 }\n',
         r"group\[0\]\.ramp"),
        ('oscillation = 5\n', r"group\[0\]\.oscillation: expected a table"),
    ],
)
def test_bad_ramps_and_oscillations_name_the_key(body: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^bad\.toml: {key}"):
        parse_scenario(BASE + GROUP + body, source="bad.toml")


def test_old_keys_keep_their_draws() -> None:
    """Ramps and oscillations draw after every older feature, so adding one to a group does
    not change its noise (files written before them keep their traffic)."""
    plain = BASE + GROUP + 'gbps = 1\nspread = 0.3\nnoise = { sigma = 0.3, tau = 1 }\n'
    ramped = plain + 'ramp = { start = 90, end = 95, to = 2 }\n'
    a, b = parse_scenario(plain), parse_scenario(ramped)
    for t in (1.0, 33.3, 80.0):
        assert np.array_equal(a.offered(t), b.offered(t))
