"""wghybrid.daemon.explain: the controller's view of one peer, in words and as data, read-only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from factory import Gateway, key
from test_controller import offered_to_delivered, policy

from wghybrid.core.controller import Controller
from wghybrid.core.status import columns
from wghybrid.daemon import events as ev
from wghybrid.daemon.explain import explain_peer
from wghybrid.model import Mode, Override

pytestmark = pytest.mark.unit


def explain(c: Controller, peer: int, override: Override | None = None,
            events: list[ev.Event] | None = None) -> dict[str, Any]:
    cols = columns(c.status([override] if override else [], 0.0)[0])
    row = int(cols.find([key(peer)])[0])
    return explain_peer(c, cols, row, override, events or [], 123.0)


def tick(c: Controller, gw: Gateway, offered: np.ndarray,
         overrides: tuple[Override, ...] = ()) -> None:
    gw.advance(1.0, offered_to_delivered(gw, offered))
    gw.apply(c.plan(gw.sample(), overrides, 0.0))


def test_it_says_what_was_measured_estimated_compared_and_why_it_waits() -> None:
    gw = Gateway(2, cores=8)
    c = Controller(policy(dwell=0.0, heat=3.0))
    offered = np.array([0.1, 8.0])
    tick(c, gw, offered)
    first = explain(c, 1)
    assert first["controller"]["measured"] is False
    assert "not measured" in " ".join(first["text"])
    tick(c, gw, offered)
    tick(c, gw, offered)
    e = explain(c, 1)
    view = e["controller"]
    assert e["peer"]["mode"] == "inline" and view["measured"] is True
    assert view["wanted_mode"] == "vanilla"
    assert view["wanted_for"] == pytest.approx(1.0)
    assert view["latent_heat"] == 3.0 and view["latent_heat_left"] == pytest.approx(2.0)
    assert view["assignment"]["wants"] == "vanilla"
    assert view["measured_gbps"] == pytest.approx(2.8, rel=0.05)
    assert view["demand_gbps"] > view["measured_gbps"]  # capped: read as more than it got
    assert e["costs"]["inline_tunnel_gbps"] > 2.0
    text = "\n".join(e["text"])
    assert "Measured (last tick): 2.8" in text
    assert "Estimated demand: at least" in text
    assert "Compared, for the whole gateway" in text
    assert "Wants vanilla for 1.0 s" in text and "2.0 s more" in text
    assert e["as_of"] == 123.0
    for _ in range(3):
        tick(c, gw, offered)
    done = explain(c, 1)
    assert done["peer"]["mode"] == "vanilla" and done["controller"]["wanted_mode"] is None
    assert done["controller"]["may_change_back"] is False
    assert "it does not change back until one of them changes" in "\n".join(done["text"])


def test_the_dwell_holds_a_wanted_change_back() -> None:
    gw = Gateway(2, cores=8)
    c = Controller(policy(dwell=600.0, heat=0.0))
    for _ in range(4):
        tick(c, gw, np.array([0.1, 8.0]))
    view = explain(c, 1)["controller"]
    # adopted 3 s ago: it may change after ADOPT_SETTLE (15 s), not the whole min_dwell
    assert view["dwell_left"] == pytest.approx(12.0) and view["min_dwell"] == 600.0
    text = "\n".join(explain(c, 1)["text"])
    assert "It dwells in inline 12.0 s more" in text


def test_a_pinned_peer_and_its_events() -> None:
    gw = Gateway(2, cores=8)
    c = Controller(policy(dwell=0.0, heat=0.0))
    pin = Override("wg0", key(0), Mode.VANILLA)
    for _ in range(3):
        tick(c, gw, np.array([0.1, 0.1]), (pin,))
    log = ev.EventLog()
    log.emit(ev.OVERRIDE_SET, ev.DONE, interface="wg0", public_key=key(0), name="a",
             value="mode vanilla", cause=ev.OPERATOR, by="uid 0 (root)")
    e = explain(c, 0, pin, log.last(10))
    assert e["peer"]["pinned"] is True and e["peer"]["override"]["mode"] == "vanilla"
    text = "\n".join(e["text"])
    assert "Pinned by an override (mode vanilla)" in text
    assert "Last events:" in text and "[#] override wg0/a mode vanilla by uid 0 (root)" in text
    assert e["events"][0]["op"] == "override-set"
    nothing = explain(c, 1)
    assert nothing["events"] == [] and "No event about it" in "\n".join(nothing["text"])


def test_explaining_changes_nothing() -> None:
    gw = Gateway(2, cores=8)
    c = Controller(policy(dwell=0.0, heat=3.0))
    for _ in range(3):
        tick(c, gw, np.array([0.1, 8.0]))
    before = explain(c, 1)
    for _ in range(5):
        again = explain(c, 1)
    assert again == before
    assert c.peer_view("wg0", bytes([9] * 32)) is None  # no such peer
    assert c.peer_view("wg9", key(1)) is None
