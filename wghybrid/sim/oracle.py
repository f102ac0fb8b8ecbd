"""The oracle: the best mode assignment and placement for a known offered load, by search.

It knows the true offered load (no measuring, no smoothing, no dwell time) and may rebuild
the whole configuration at every instant, so it bounds what any controller can reach.
The search (documented in docs/sim-model.md, "Oracle"):

* sort tunnels by offered load, largest first; for every k from 0 up to the number of
  tunnels that could use more than half an inline core (plus one), make the k largest
  vanilla and the rest inline;
* for each k, try a few splits of the cores: m cores for inline tunnels (the fewest that
  hold their demand, one more, and what the vanilla tunnels' estimated CPU need leaves,
  +-1), the other cores the crypt pool; inline tunnels go onto their m cores by
  largest-first onto the least-loaded core (LPT), vanilla tunnels' Reception stages
  round-robin over the pool cores; threaded NAPI on whenever a tunnel is vanilla;
* also both static modes: all vanilla (upstream defaults: round-robin placement, every
  core in the pool), all inline spread by LPT over every core;
* keep the candidate with the most delivered Gbps; among those within 0.1 % of it, the
  one using the fewest cores (by more than 0.1 %); the first candidate wins ties, and
  with `previous` the first candidate is the previous answer.

It is a heuristic search, not an exhaustive one (the exact problem is a bin-packing
variant), so a controller could in principle beat it by a hair.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from wghybrid.model import F64, I32, U8, Mode
from wghybrid.sim.pipeline import Evaluation, GatewayModel

TIE = 1e-3
"""Relative throughput difference under which the oracle prefers fewer cores."""


@dataclass(frozen=True, slots=True, eq=False)
class OracleResult:
    mode: U8
    core: I32
    crypt_cores: frozenset[int]
    threaded_napi: bool
    delivered_gbps_total: float
    cores_used: float
    evaluation: Evaluation


def _lpt(costs: F64, bins: list[int]) -> I32:
    """Place items (already sorted largest first) each on the least-loaded bin."""
    heap = [(0.0, i, c) for i, c in enumerate(bins)]
    out = np.empty(costs.shape[0], dtype=np.int32)
    for j, w in enumerate(costs.tolist()):
        load, i, c = heapq.heappop(heap)
        out[j] = c
        heapq.heappush(heap, (load + w, i, c))
    return out


def oracle(model: GatewayModel, offered: F64, *,
           cores: int | frozenset[int] | None = None,
           previous: OracleResult | None = None) -> OracleResult:
    """The best configuration found for `offered` on the given cores (default: all).

    With `previous` (the last answer, for the same tunnels), that configuration is the
    incumbent: it is kept unless another delivers more than 0.1 % more, or as much on
    0.1 % fewer cores. This stops the oracle reshuffling placement at every small change
    of load, which costs traffic on a model with `switch_cost_s`.
    """
    p = model.params
    if cores is None:
        managed = list(range(model.cores))
    elif isinstance(cores, int):
        managed = list(range(min(cores, model.cores)))
    else:
        managed = sorted(c for c in cores if 0 <= c < model.cores)
    if not managed:
        raise ValueError("oracle: no cores to place tunnels on")
    ncores = len(managed)
    offered = np.maximum(np.asarray(offered, dtype=np.float64), 0.0)
    n = offered.shape[0]
    order = np.argsort(-offered, kind="stable")
    sorted_o = offered[order]
    inline_cap = 1.0 / p.inline_cost
    vanilla_cap = 1.0 / p.rx_cost

    candidates: list[tuple[U8, I32, frozenset[int], bool]] = []
    if previous is not None and previous.mode.shape == (n,):
        candidates.append((previous.mode, previous.core, previous.crypt_cores,
                           previous.threaded_napi))
    # Static modes.
    round_robin = np.asarray(managed, dtype=np.int32)[np.arange(n) % ncores]
    candidates.append((np.full(n, Mode.VANILLA, np.uint8), round_robin, frozenset(managed),
                       True))
    all_in = np.empty(n, dtype=np.int32)
    all_in[order] = _lpt(sorted_o * p.inline_cost, managed)
    candidates.append((np.full(n, Mode.INLINE, np.uint8), all_in, frozenset(managed), True))

    k_max = min(n, int((sorted_o > 0.5 * inline_cap).sum()) + 1, ncores)
    for k in range(0, k_max + 1):
        inl_cost = sorted_o[k:] * p.inline_cost
        need_in = float(inl_cost.sum())
        r_v = float(np.minimum(sorted_o[:k], vanilla_cap).sum())
        need_v = r_v * (p.rx_cost + p.napi_cost + p.crypt_cost + p.crypt_contention * r_v)
        lo = 1 if k < n else 0
        hi = ncores - (1 if k > 0 else 0)
        m_fit = math.ceil(need_in - 1e-9)
        m_left = ncores - math.ceil(need_v - 1e-9)
        ms = {m_fit, m_fit + 1, m_left, m_left - 1, m_left + 1}
        for m in sorted({min(max(m, lo), hi) for m in ms}):
            inline_cores = managed[:m]
            pool = managed[m:] if m < ncores else managed
            mode = np.full(n, Mode.VANILLA, np.uint8)
            core = np.empty(n, dtype=np.int32)
            mode[order[k:]] = Mode.INLINE
            if k < n:
                core[order[k:]] = _lpt(inl_cost, inline_cores)
            core[order[:k]] = np.asarray(pool, dtype=np.int32)[np.arange(k) % len(pool)]
            candidates.append((mode, core, frozenset(pool), k > 0))

    best: OracleResult | None = None
    for c_mode, c_core, c_pool, threaded in candidates:
        ev = model.evaluate(offered, c_mode, c_core, c_pool, threaded)
        res = OracleResult(c_mode, c_core, c_pool, threaded, ev.total_gbps, ev.cores_used, ev)
        if best is None:
            best = res
            continue
        scale = max(best.delivered_gbps_total, res.delivered_gbps_total, 1e-12)
        gain = (res.delivered_gbps_total - best.delivered_gbps_total) / scale
        if gain > TIE or (gain > -TIE and res.cores_used < best.cores_used * (1 - TIE)):
            best = res
    assert best is not None
    return best
