"""Explaining one peer: what the controller measured, estimated and compared for it, what it
did or why it did nothing, in words an operator reads and as data.

`explain_peer` reads, never changes: the last status snapshot (mode, class, core, rates),
the controller's last decision (`Controller.decision`: demand estimates, the assignment it
chose against the current one, the learned costs), its per-peer clocks
(`Controller.peer_view`: the dwell, the wanted mode and since when, the situation of its
last change) and the peer's last events. Everything is as of the last tick.
`GET /v1/peers/{iface}/{peer}/explain` answers its dict; `wghybrid explain` prints its
`text`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from wghybrid.core.controller import Controller
from wghybrid.core.estimate import Cap
from wghybrid.core.status import PeerColumns
from wghybrid.daemon.events import Event, event_json, line
from wghybrid.daemon.state import override_to_dict
from wghybrid.model import Mode, Override, PeerClass, encode_key

LAST_EVENTS = 10
"""How many of the peer's last events an explanation shows."""


def _gb(x: float) -> str:
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _secs(x: float) -> str:
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def explain_peer(
    controller: Controller,
    cols: PeerColumns,
    row: int,
    override: Override | None,
    events: Sequence[Event],
    last_tick: float | None,
) -> dict[str, Any]:
    """The explanation of row `row` of `cols` (components/schemas/Explain)."""
    pol = controller.policy
    cl = pol.classify
    key = cols.raw_keys()[row]
    name = cols.name_at(row)
    mode = Mode(int(cols.mode[row]))
    pclass = PeerClass(int(cols.pclass[row]))
    unmanaged = cols.unmanaged_reasons()[row]
    label = f"{cols.interface}/{name or encode_key(key)[:8]}"
    peer = {
        "interface": cols.interface,
        "public_key": encode_key(key),
        "name": name,
        "mode": str(mode),
        "class": str(pclass),
        "core": int(cols.core[row]),
        "rx_bps": _num(float(cols.rx_bps[row])),
        "tx_bps": _num(float(cols.tx_bps[row])),
        "cpu": _num(float(cols.cpu[row])),
        "time_in_mode": _num(float(cols.time_in_mode[row])),
        "pinned": override is not None,
        "override": override_to_dict(override) if override is not None else None,
        "unmanaged": unmanaged,
    }
    text = [
        f"{label} ({encode_key(key)}) runs {mode}"
        + (f" on core {int(cols.core[row])}" if int(cols.core[row]) >= 0 else
           " on the data plane's default core")
        + f", for {_secs(float(cols.time_in_mode[row]))}; class {pclass}."
    ]
    costs = controller.costs
    cost_json = {
        "inline_cores_per_gbps": costs.inline,
        "vanilla_cores_per_gbps": costs.vanilla,
        "vanilla_measured_at_gbps": costs.vanilla_at,
        "inline_tunnel_gbps": costs.inline_tunnel_gbps,
        "vanilla_tunnel_gbps": costs.vanilla_tunnel_gbps,
    }
    view = controller.peer_view(cols.interface, key)
    decision = controller.decision
    sample = controller.sample
    state: dict[str, Any] = {
        "measured": False, "measured_gbps": None, "demand_gbps": None, "envelope_gbps": None,
        "censored": None, "capped_by": None, "wanted_mode": None, "wanted_for": None,
        "latent_heat": cl.latent_heat, "latent_heat_left": None, "min_dwell": cl.min_dwell,
        "dwell_left": None, "may_change_back": None, "core_settles_in": None,
        "gateway_cpu_bound": None, "assignment": None,
    }
    verdict: list[str] = []
    if view is None or decision is None or sample is None:
        verdict.append("The controller has not decided anything for it yet (no tick has "
                       "seen it).")
    else:
        r = int(view["row"])
        now = sample.now
        d = decision.demand
        measured = bool(view["valid"])
        m, est, peak = float(d.measured[r]), float(d.gbps[r]), float(d.peak[r])
        cause = int(d.cause[r])
        censored = bool(d.censored[r])
        state.update(measured=measured, measured_gbps=_num(m), demand_gbps=_num(est),
                     envelope_gbps=_num(peak), censored=censored,
                     capped_by=Cap.NAMES[cause] if censored and cause < len(Cap.NAMES)
                     else None, gateway_cpu_bound=bool(view["bound"]))
        cpu = float(cols.cpu[row])
        if measured:
            text.append(f"Measured (last tick): {_gb(m)} Gbps on {cpu:.2f} cores (smoothed: "
                        f"rx {_gb(float(cols.rx_bps[row]) / 1e9)}, tx "
                        f"{_gb(float(cols.tx_bps[row]) / 1e9)} Gbps).")
        else:
            text.append("Measured: nothing yet (a baseline reading, or its counters "
                        "restarted).")
        if censored:
            text.append(f"Estimated demand: at least {_gb(est)} Gbps (envelope "
                        f"{_gb(peak)}): the reading was capped ({Cap.NAMES[cause]}), so it "
                        f"is a lower bound, read as more than it got.")
        else:
            text.append(f"Estimated demand: {_gb(est)} Gbps (envelope {_gb(peak)}, what "
                        "placement keeps room for); the reading was not capped.")
        text.append(
            f"Costs learned here: inline {costs.inline:.3f} cores per Gbps (one inline core "
            f"carries {_gb(costs.inline_tunnel_gbps)} Gbps), vanilla {costs.vanilla:.3f} at "
            f"{_gb(costs.vanilla_at)} Gbps of vanilla traffic (one vanilla tunnel carries "
            f"at most {_gb(costs.vanilla_tunnel_gbps)} Gbps). The gateway is "
            + ("CPU-bound." if view["bound"] else "not CPU-bound."))
        a = decision.assignment
        wants: Mode | None = None
        if a is not None and r < a.vanilla.shape[0]:
            wants = Mode.VANILLA if bool(a.vanilla[r]) else Mode.INLINE
            state["assignment"] = {
                "wants": str(wants), "rule": a.rule, "pool_cores": int(a.pool),
                "gateway_gbps_now": a.current.gbps, "gateway_gbps_chosen": a.chosen.gbps,
                "gateway_cores_now": a.current.cpu, "gateway_cores_chosen": a.chosen.cpu,
                "candidates": int(a.candidates),
            }
            rule = {"kept": "kept: no other delivers enough more (min_gain)",
                    "throughput": "more throughput", "cpu": "as much on less CPU",
                    "pool": "a better pool size", "floor": "below the demote level"}
            text.append(
                f"Compared, for the whole gateway ({a.candidates} candidates): the chosen "
                f"assignment delivers {_gb(a.chosen.gbps)} Gbps on {_gb(a.chosen.cpu)} "
                f"cores, the current one {_gb(a.current.gbps)} Gbps on "
                f"{_gb(a.current.cpu)} ({rule.get(a.rule, a.rule)}); it puts {label} "
                f"{wants}.")
        dwell_left = max(0.0, cl.min_dwell - (now - view["changed_at"]))
        settle = max(0.0, cl.min_dwell - (now - view["moved_at"]))
        may_back = view["key"] != view["key_at_change"]
        state.update(dwell_left=dwell_left, may_change_back=may_back,
                     core_settles_in=settle if math.isfinite(settle) else 0.0)
        want_since = view["want_since"]
        if not math.isnan(want_since) and int(view["want_mode"]) != int(mode):
            wanted_for = max(0.0, now - want_since)
            state.update(wanted_mode=str(Mode(int(view["want_mode"]))), wanted_for=wanted_for,
                         latent_heat_left=max(0.0, cl.latent_heat - wanted_for))
        verdict.extend(_verdict(label, mode, wants, override, unmanaged, measured, dwell_left,
                                may_back, state, cl.min_dwell))
    text.extend(verdict)
    mine = list(events)[-LAST_EVENTS:]
    if mine:
        text.append("Last events:")
        text.extend(f"  #{e.seq} {_clock(e.time)} {line(e)}" for e in mine)
    else:
        text.append("No event about it in the daemon's log (nothing was changed or "
                    "refused for it since the daemon started).")
    return _json_safe({"peer": peer, "controller": state, "costs": cost_json,
                       "events": [event_json(e) for e in mine], "as_of": last_tick,
                       "text": text})


def _json_safe(data: Any) -> Any:
    """`data` with every float that JSON cannot carry (nan, inf) as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _json_safe(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_json_safe(v) for v in data]
    return data


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def _verdict(
    label: str, mode: Mode, wants: Mode | None, override: Override | None,
    unmanaged: str | None, measured: bool, dwell_left: float, may_back: bool,
    state: dict[str, Any], min_dwell: float,
) -> list[str]:
    """What was done, or why nothing was: the first reason that holds, in the order the
    controller applies them."""
    if unmanaged is not None:
        return [f"Unmanaged: the data plane refused an operation on it for good "
                f"({unmanaged}); the controller leaves it alone."]
    if override is not None and override.mode is not None:
        out = f"Pinned by an override (mode {override.mode}"
        out += f", core {override.core}" if override.core is not None else ""
        return [out + "): the controller carries it out and does not decide for it."]
    if not measured:
        return ["Nothing decided: it was not measured by the last tick."]
    if state["wanted_mode"] is not None:
        left = state["latent_heat_left"] or 0.0
        if left > 0:
            return [f"Wants {state['wanted_mode']} for {_secs(state['wanted_for'])}: it "
                    f"changes once wanted for the latent heat ({_secs(state['latent_heat'])}"
                    f"), {_secs(left)} more."]
        return [f"Wants {state['wanted_mode']}, and has for the whole latent heat: the change "
                f"is planned (at most max_moves a tick, the most valuable first)."]
    if dwell_left > 0:
        return [f"It dwells in {mode} {_secs(dwell_left)} more (min_dwell {_secs(min_dwell)}, "
                f"or the settling of a peer the daemon adopted): until then the assignment "
                f"does not consider changing it."]
    if not may_back:
        return ["The controller changed it for the situation it is still in (its demand "
                "class and the gateway's CPU state): it does not change back until one of "
                "them changes."]
    if wants is None or wants == mode:
        return [f"Nothing to do: the assignment keeps {label} {mode}."]
    return [f"The assignment wants it {wants}; the change is waiting to be planned."]
