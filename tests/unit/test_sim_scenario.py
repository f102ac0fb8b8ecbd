"""Scenario files: the shipped ones, the format's semantics and its error messages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wghybrid.model import Mode
from wghybrid.sim import ScenarioError, list_scenarios, load_scenario, parse_scenario

pytestmark = pytest.mark.unit

SHIPPED = ["bursty-thresholds", "diurnal", "elephants-churn", "few-elephants", "mixed",
           "steady-mice"]


def test_list_scenarios() -> None:
    assert list_scenarios() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_scenarios_are_sane_and_deterministic(name: str) -> None:
    a, b = load_scenario(name), load_scenario(name)
    assert a.name == name and a.description
    assert a.cores == 32 and 300 <= a.duration <= 600
    assert a.interfaces == ("wg0",)
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
    ],
)
def test_bad_files_name_the_file_and_key(text: str, key: str) -> None:
    with pytest.raises(ScenarioError, match=rf"^bad\.toml: .*{key}"):
        parse_scenario(text, source="bad.toml")
