"""Classification: elephant or mouse, with hysteresis (pure, vectorised).

Stage three of a tick: sample -> rates -> **classify** -> plan -> apply.

A tunnel's *pressure* says how far it is from its class boundary:
- a mouse (running inline) is pushed towards elephant by its rate relative to
  `promote_gbps`, or by the saturation of the one core it runs on: an inline tunnel's
  rate is capped by that core, so a core near `inline_saturation` means it wants more
  than inline can give, whatever its rate;
- an elephant (running vanilla) is pulled back towards mouse when its own rate falls
  under `demote_gbps`: it no longer needs parallel workers.

Hysteresis, three layers of it:
1. separate promote and demote levels (demote < promote, enforced by the policy loader);
2. latent heat (after Papagiannaki et al., "A pragmatic definition of elephants in
   internet backbone traffic"): excess over a threshold accumulates over time, capped at
   one unit per second, and drains when the tunnel is back on its side; the class flips
   only when `latent_heat` seconds' worth has built up, so a burst does not flip it;
3. a minimum dwell time in a mode, enforced by the planner (a class may change while the
   mode waits for its dwell to run out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wghybrid.model import F64, U8, Mode, PeerClass
from wghybrid.policy import Classify


@dataclass(frozen=True, slots=True, eq=False)
class Classes:
    pclass: U8
    heat: F64
    """Accumulated excess (seconds) towards the other class; reset when the class flips."""


def pressure(
    pclass: U8, gbps: F64, cpu: F64, inline: np.ndarray, params: Classify
) -> F64:
    """Signed excess over the relevant threshold, as a fraction of it.

    Positive means "move towards the other class"; negative means "settled".
    """
    mouse = pclass == PeerClass.MOUSE
    up = gbps / params.promote_gbps - 1.0
    if params.inline_saturation > 0:
        # A saturated core is certain evidence of demand beyond inline's reach (its rate
        # is what the core allowed, not what was offered): full pressure. Below
        # saturation, the core's headroom pulls the other way.
        sat = cpu / params.inline_saturation
        saturated = np.where(sat >= 1.0, 1.0, sat - 1.0)
        up = np.where(inline, np.maximum(up, saturated), up)
    down = 1.0 - gbps / params.demote_gbps if params.demote_gbps > 0 else np.full_like(gbps, -1.0)
    return np.asarray(np.where(mouse, up, down), dtype=np.float64)


def update_classes(
    prev: Classes, gbps: F64, cpu: F64, inline: np.ndarray, valid: np.ndarray, dt: float,
    params: Classify,
) -> Classes:
    """Accumulate latent heat over `dt` seconds and flip classes whose heat is spent.

    Rows whose rates are not valid yet (a new peer's first reading) keep their class.
    """
    if dt <= 0:
        return prev
    p = np.clip(pressure(prev.pclass, gbps, cpu, inline, params), -1.0, 1.0)
    heat = np.maximum(prev.heat + p * dt, 0.0)
    heat = np.where(valid, heat, prev.heat)
    flip = heat >= max(params.latent_heat, 1e-9)
    pclass = np.where(flip, 1 - prev.pclass, prev.pclass).astype(np.uint8)
    heat = np.where(flip, 0.0, heat)
    return Classes(pclass, heat)


def adopt_classes(mode: U8) -> Classes:
    """The class that matches the mode a peer was found in: adopting changes nothing."""
    pclass = np.where(mode == Mode.VANILLA, PeerClass.ELEPHANT, PeerClass.MOUSE).astype(np.uint8)
    return Classes(pclass, np.zeros(mode.shape[0], dtype=np.float64))
