"""The controller: the decision side of a tick, pure (no I/O), state owned by the caller.

    sample (I/O) -> rates (pure) -> classify (pure) -> plan (pure) -> apply (I/O)

`Controller.plan()` runs the three pure stages on one `GatewaySample` and returns a
`Plan`; `wghybrid.loop.run_tick` does the I/O on either side. The controller keeps, per
peer and aligned row for row with the last sample: smoothed rates, class and latent heat,
when the peer entered its mode, the mode it was found in; and per gateway: the vanilla
pool decided last, the learned CPU cost of a Gbps in each mode, and what the data plane
refused for good (unmanaged peers, unsupported device knobs).

Adoption: a peer seen for the first time gets the class that matches its mode and starts
its dwell, so a restarted daemon changes nothing it finds until the traffic says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wghybrid.core.classify import Classes, adopt_classes, update_classes
from wghybrid.core.placement import PlanInput, PlanOutput, plan_operations
from wghybrid.core.rates import Rates, identities, realign, update_rates
from wghybrid.model import (
    F64,
    U8,
    GatewaySample,
    InterfaceStatus,
    Mode,
    Operation,
    Override,
    PeerClass,
    PeerStatus,
    Plan,
    SetCryptCores,
    SetPeerCore,
    SetPeerMode,
    SetThreadedNapi,
    raw_key,
)
from wghybrid.policy import Policy

DEFAULT_INLINE_COST = 1.0 / 2.8
"""Cores per Gbps of an inline tunnel until measured (FACTS.md: ~2.8 Gbps per core)."""
DEFAULT_VANILLA_COST = 32.0 / 48.0
"""Cores per Gbps of a vanilla tunnel until measured (FACTS.md: 48 Gbps on 32 cores)."""
COST_HALF_LIFE = 30.0
"""Seconds: learned costs move slowly, they describe the machine, not the traffic."""
MIN_GBPS_FOR_COST = 0.05


@dataclass(frozen=True, slots=True, eq=False)
class _PeerState:
    """Per-peer controller state, aligned with `rates`."""

    classes: Classes
    mode_since: F64
    found_mode: U8
    last_mode: U8


def _take(arr: np.ndarray, rows: np.ndarray, fill: float | int) -> np.ndarray:
    if arr.shape[0] == 0:
        return np.full(rows.shape[0], fill, dtype=arr.dtype)
    return np.where(rows >= 0, arr[np.where(rows >= 0, rows, 0)], fill).astype(arr.dtype)


class Controller:
    """Decides modes and cores for every peer of one gateway, tick after tick."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._rates: Rates | None = None
        self._peers: _PeerState | None = None
        self._sample: GatewaySample | None = None
        self._last: PlanOutput | None = None
        self._pool: frozenset[int] | None = None
        self._index: dict[bytes, int] | None = None
        self._cost = {Mode.INLINE: DEFAULT_INLINE_COST, Mode.VANILLA: DEFAULT_VANILLA_COST}
        self._unmanaged: dict[bytes, str] = {}
        self._unsupported: dict[tuple[str, str], str] = {}
        self.transitions = 0

    # -- policy ----------------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self._policy

    def set_policy(self, policy: Policy) -> None:
        """Takes effect at the next tick; rates, classes and dwell clocks carry over."""
        self._policy = policy

    # -- the pure stages -----------------------------------------------------------
    def _observe(self, sample: GatewaySample) -> tuple[Rates, _PeerState, float]:
        prev = self._rates
        rows = realign(prev, sample)
        rates = update_rates(prev, sample, self._policy.smoothing, rows)
        mode = sample.peers.mode
        n = len(sample.peers)
        dt = sample.now - prev.now if prev is not None else 0.0
        if self._peers is None or prev is None:
            st = _PeerState(adopt_classes(mode), np.full(n, sample.now), mode.copy(), mode.copy())
        else:
            st = self._peers
            if rows is not None:
                fresh = rows < 0
                adopted = adopt_classes(mode)
                st = _PeerState(
                    Classes(
                        np.where(fresh, adopted.pclass, _take(st.classes.pclass, rows, 0)).astype(
                            np.uint8
                        ),
                        _take(st.classes.heat, rows, 0.0),
                    ),
                    np.where(fresh, sample.now, _take(st.mode_since, rows, 0.0)),
                    np.where(fresh, mode, _take(st.found_mode, rows, 0)).astype(np.uint8),
                    np.where(fresh, mode, _take(st.last_mode, rows, 0)).astype(np.uint8),
                )
                self._index = None
        # A mode the data plane now reports differently starts a new dwell.
        changed = mode != st.last_mode
        mode_since = np.where(changed, sample.now, st.mode_since)
        inline = mode == Mode.INLINE
        classes = update_classes(
            st.classes, rates.gbps, rates.cpu, inline, rates.valid, dt, self._policy.classify
        )
        self._learn_costs(rates, mode, dt)
        return rates, _PeerState(classes, mode_since, st.found_mode, mode.copy()), dt

    def _learn_costs(self, rates: Rates, mode: U8, dt: float) -> None:
        if dt <= 0:
            return
        alpha = 1.0 - 2.0 ** (-dt / COST_HALF_LIFE)
        gbps = rates.gbps
        for m in (Mode.INLINE, Mode.VANILLA):
            sel = rates.valid & (mode == m) & (gbps > MIN_GBPS_FOR_COST)
            total = float(gbps[sel].sum())
            if total > 0:
                measured = float(rates.cpu[sel].sum()) / total
                self._cost[m] += alpha * (measured - self._cost[m])

    def _rows_of(self, keys: Sequence[tuple[str, bytes]]) -> list[int]:
        if self._rates is None:
            return [-1] * len(keys)
        if self._index is None:
            r = self._rates
            idents = identities(r.ifnames, r.iface, r.key)
            self._index = {ident: i for i, ident in enumerate(idents)}
        return [self._index.get(i.encode() + b"/" + k, -1) for i, k in keys]

    def plan(self, sample: GatewaySample, overrides: Sequence[Override], wall_now: float) -> Plan:
        """Fold in one sample and decide; returns the operations to apply (maybe none)."""
        rates, st, _dt = self._observe(sample)
        self._rates, self._peers, self._sample = rates, st, sample
        pol = self._policy
        peers = sample.peers
        n = len(peers)
        ifnames = rates.ifnames

        managed = np.ones(n, dtype=bool)
        if pol.interfaces is not None:
            managed &= np.isin(
                peers.iface, [k for k, name in enumerate(ifnames) if name in pol.interfaces]
            )
        if self._unmanaged:
            rows = self._rows_of([(i.decode(), k) for i, k in
                                  (ident.split(b"/", 1) for ident in self._unmanaged)])
            managed[[r for r in rows if r >= 0]] = False
        pin_mode = np.full(n, -1, dtype=np.int8)
        pin_core = np.full(n, -1, dtype=np.int32)
        live = [o for o in overrides if o.active(wall_now)]
        if live:
            rows = self._rows_of([(o.interface, o.public_key) for o in live])
            for o, r in zip(live, rows, strict=True):
                if r < 0:
                    continue
                if o.mode is not None:
                    pin_mode[r] = int(o.mode)
                if o.core is not None:
                    pin_core[r] = o.core

        gbps = rates.gbps
        want = np.where(st.classes.pclass == PeerClass.ELEPHANT, Mode.VANILLA, Mode.INLINE)
        mode = peers.mode
        measured = rates.valid
        load_inline = np.where(
            measured & (mode == Mode.INLINE), rates.cpu, gbps * self._cost[Mode.INLINE]
        )
        load_vanilla = np.where(
            measured & (mode == Mode.VANILLA), rates.cpu, gbps * self._cost[Mode.VANILLA]
        )
        cores = tuple(sorted(pol.cores)) if pol.cores is not None else tuple(range(sample.cores))
        cores = tuple(c for c in cores if c < sample.cores) or tuple(range(sample.cores))
        inp = PlanInput(
            now=sample.now,
            ifnames=ifnames,
            iface=peers.iface,
            key=peers.key,
            mode=mode,
            core=peers.core,
            want=want.astype(np.uint8),
            eligible=(sample.now - st.mode_since) >= pol.classify.min_dwell,
            urgency=np.where(want == Mode.VANILLA, gbps, -gbps),
            pin_mode=pin_mode,
            pin_core=pin_core,
            managed=managed,
            load_inline=load_inline,
            load_vanilla=load_vanilla,
            cores=cores,
            crypt_cores=tuple(i.crypt_cores for i in sample.interfaces),
            threaded_napi=tuple(i.threaded_napi for i in sample.interfaces),
            pool=self._pool,
            core_busy=rates.core_busy,
            # A baseline reading (first tick, or every counter restarted): nothing is
            # measured yet, so only operator pins are carried out.
            measured=not len(rates) or bool(rates.valid.any()),
        )
        out = plan_operations(inp, pol.placement)
        self._last = out
        self._pool = out.pool
        return tuple(op for op in out.plan if not self._refused(op))

    def _refused(self, op: Operation) -> bool:
        if isinstance(op, SetCryptCores):
            return (op.interface, "crypt_cores") in self._unsupported
        if isinstance(op, SetThreadedNapi):
            return (op.interface, "threaded_napi") in self._unsupported
        return False

    # -- feedback from apply ----------------------------------------------------------
    def record(self, op: Operation, error: str | None, permanent: bool = False) -> None:
        """Called by the loop after each operation (`error` None when it succeeded):
        counts transitions, and marks what failed for good (`permanent`) as unmanaged
        (peers) or unsupported (device knobs)."""
        if error is None:
            if isinstance(op, SetPeerMode):
                self.transitions += 1
            return
        if not permanent:
            return
        if isinstance(op, SetPeerMode | SetPeerCore):
            self._unmanaged[op.interface.encode() + b"/" + op.public_key] = error
        elif isinstance(op, SetCryptCores):
            self._unsupported[(op.interface, "crypt_cores")] = error
        else:
            self._unsupported[(op.interface, "threaded_napi")] = error

    def manage(self, interface: str, public_key: bytes) -> None:
        self._unmanaged.pop(interface.encode() + b"/" + public_key, None)

    def unmanaged(self) -> dict[tuple[str, bytes], str]:
        out = {}
        for ident, why in self._unmanaged.items():
            name, key = ident.split(b"/", 1)
            out[(name.decode(), key)] = why
        return out

    def mark_unmanaged(self, interface: str, public_key: bytes, reason: str) -> None:
        """Restore a mark from persisted state."""
        self._unmanaged[interface.encode() + b"/" + public_key] = reason

    # -- reporting ------------------------------------------------------------------
    def restore_plan(self) -> Plan:
        """Operations that put every managed peer back in the mode it was found in."""
        if self._sample is None or self._peers is None:
            return ()
        peers, st, ifn = self._sample.peers, self._peers, self._rates.ifnames if self._rates else ()
        ops: list[Operation] = []
        for i in np.flatnonzero(peers.mode != st.found_mode).tolist():
            ident = ifn[int(peers.iface[i])].encode() + b"/" + raw_key(peers.key[i])
            if ident in self._unmanaged:
                continue
            ops.append(SetPeerMode(ifn[int(peers.iface[i])], raw_key(peers.key[i]),
                                   Mode(int(st.found_mode[i]))))
        return tuple(ops)

    def status(self, overrides: Sequence[Override] = (), wall_now: float = 0.0) -> tuple[
        InterfaceStatus, ...
    ]:
        """What the controller sees and decided, per interface (for API, CLI, metrics)."""
        sample, rates, st = self._sample, self._rates, self._peers
        if sample is None or rates is None or st is None:
            return ()
        pol = self._policy
        peers = sample.peers
        pins = {(o.interface, o.public_key): o for o in overrides if o.active(wall_now)}
        cores = frozenset(c for c in (pol.cores or range(sample.cores)) if c < sample.cores)
        out = []
        rx, tx, cpu = rates.rx_bps.tolist(), rates.tx_bps.tolist(), rates.cpu.tolist()
        pclass, mode = st.classes.pclass.tolist(), peers.mode.tolist()
        core, since = peers.core.tolist(), st.mode_since.tolist()
        for k, dev in enumerate(sample.interfaces):
            rows = np.flatnonzero(peers.iface == k).tolist()
            plist = []
            for i in rows:
                key = raw_key(peers.key[i])
                ov = pins.get((dev.name, key))
                plist.append(PeerStatus(
                    interface=dev.name,
                    public_key=key,
                    name=pol.names.get(key, ""),
                    mode=Mode(mode[i]),
                    pclass=PeerClass(pclass[i]),
                    pinned=ov is not None,
                    rx_bps=rx[i],
                    tx_bps=tx[i],
                    cpu=cpu[i],
                    core=core[i],
                    time_in_mode=sample.now - since[i],
                    override=ov,
                    unmanaged=self._unmanaged.get(dev.name.encode() + b"/" + key),
                ))
            inline_cores = frozenset(
                int(c) for c in peers.core[rows][peers.mode[rows] == Mode.INLINE] if c >= 0
            )
            out.append(InterfaceStatus(
                name=dev.name,
                cores=cores,
                crypt_cores=dev.crypt_cores,
                inline_cores=inline_cores,
                threaded_napi=dev.threaded_napi,
                peers=tuple(plist),
                unsupported=tuple(
                    f"{knob}: {why}" for (ifname, knob), why in sorted(self._unsupported.items())
                    if ifname == dev.name
                ),
            ))
        return tuple(out)
