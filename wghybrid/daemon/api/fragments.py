"""The big answers' bytes: peers pre-encoded once per tick (Fragments), the JSON shapes,
and the cache they are served from."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wghybrid.core.status import PeerColumns, columns, marks_of
from wghybrid.daemon.metrics import Exposition
from wghybrid.daemon.state import override_to_dict
from wghybrid.model import (
    InterfaceStatus,
    Mode,
    Override,
    PeerClass,
    PeerId,
    PeerStatus,
    encode_key,
    format_cores,
)

if TYPE_CHECKING:
    from wghybrid.daemon.api.base import DaemonView

@dataclass(slots=True)
class BodyCache:
    """Encoded answers of the big GETs (status, peers, metrics), built at most once per
    tick or override change: under load the API serves bytes, not fresh JSON."""

    key: object = None
    bodies: dict[str, bytes] = field(default_factory=dict)
    metrics: Exposition = Exposition(b"", b"")
    metrics_serial: object = None
    metrics_pending: tuple[object, asyncio.Future[Exposition]] | None = None
    fragments: Fragments | None = None
    health_key: object = None
    health: bytes = b""


@dataclass(frozen=True, slots=True)
class Fragments:
    """One snapshot pre-encoded: per interface its JSON head, per peer its JSON minus the
    two fields an override changes ("pinned", "override"). A new override costs a join of
    strings, not a re-encoding of every peer."""

    serial: int
    interfaces: tuple[tuple[str, str, PeerColumns, list[str]], ...]
    """(name, head without its closing brace, the peers' columns, each peer without its
    closing brace, row for row)"""

    @staticmethod
    def build(serial: int, snapshot: tuple[InterfaceStatus, ...]) -> Fragments:
        out = []
        for i in snapshot:
            head = _encode(interface_json(i, {}, with_peers=False))[:-1]
            cols = columns(i)
            out.append((i.name, head, cols, _peer_fragments(cols)))
        return Fragments(serial, tuple(out))

    def peers(self, name: str | None, live: dict[PeerId, Override]) -> str:
        return ", ".join(
            _join_peers(cols, bases, live)
            for iname, _, cols, bases in self.interfaces
            if (name is None or iname == name) and bases
        )

    def interfaces_json(self, live: dict[PeerId, Override]) -> str:
        return ", ".join(
            f'{head}, "peers": [{self.peers(name, live)}]}}' for name, head, _, _ in self.interfaces
        )


_UNPINNED = ', "pinned": false, "override": null}'


def _peer_fragments(cols: PeerColumns) -> list[str]:
    """`_encode(_peer_fields(p))[:-1]` for every peer of `cols`, column by column: the same
    bytes (json.dumps' separators, ASCII escapes and float reprs)."""
    n = len(cols)
    if not n:
        return []
    head = '{"interface": ' + _encode(cols.interface) + ', "public_key": "'
    names = list(map(_json_string, cols.names()))
    kinds = np.array([f'"mode": "{m}", "class": "{c}"' for m in Mode for c in PeerClass],
                     dtype=object)
    kind = kinds[cols.mode.astype(np.intp) * len(PeerClass) + cols.pclass].tolist()

    def numbers(x: np.ndarray) -> list[str]:
        return list(map(float.__repr__, np.where(np.isfinite(x), x, 0.0).tolist()))

    reasons = np.array([*map(_json_string, cols.reasons), "null"], dtype=object)
    why = reasons[cols.unmanaged].tolist()
    return [
        f'{head}{key}", "name": {name}, {k}, "rx_bps": {rx}, "tx_bps": {tx}, "cpu": {cpu}, '
        f'"core": {core}, "time_in_mode": {t}, "unmanaged": {u}'
        for key, name, k, rx, tx, cpu, core, t, u in zip(
            cols.public_keys(), names, kind, numbers(cols.rx_bps), numbers(cols.tx_bps),
            numbers(cols.cpu), map(str, cols.core.tolist()), numbers(cols.time_in_mode), why,
            strict=True,
        )
    ]


def _join_peers(
    cols: PeerColumns, bases: list[str], live: dict[PeerId, Override]
) -> str:
    """The peers of one interface, each closed by its live override (or none)."""
    sep = _UNPINNED + ", "
    mine = [(k, o) for (iface, k), o in live.items() if iface == cols.interface]
    if not mine:
        return sep.join(bases) + _UNPINNED
    at = marks_of(cols, [k for k, _ in mine])
    pieces = []
    start = 0
    for row in np.flatnonzero(at >= 0).tolist():
        if row > start:
            pieces.append(sep.join(bases[start:row]) + _UNPINNED)
        pieces.append(_peer_tail(bases[row], mine[int(at[row])][1]))
        start = row + 1
    if start < len(bases):
        pieces.append(sep.join(bases[start:]) + _UNPINNED)
    return ", ".join(pieces)


def _encode(data: object) -> str:
    return json.dumps(data, allow_nan=False)


_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii  # json.dumps(str)


def _peer_tail(base: str, override: Override | None) -> str:
    if override is None:
        return base + ', "pinned": false, "override": null}'
    return f'{base}, "pinned": true, "override": {_encode(override_to_dict(override))}}}'



# ---------------------------------------------------------------------------------------
# JSON shapes


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _peer_fields(p: PeerStatus) -> dict[str, Any]:
    """A peer's JSON fields but "pinned" and "override" (which follow the live overrides)."""
    return {
        "interface": p.interface,
        "public_key": encode_key(p.public_key),
        "name": p.name,
        "mode": str(p.mode),
        "class": str(p.pclass),
        "rx_bps": _finite(p.rx_bps),
        "tx_bps": _finite(p.tx_bps),
        "cpu": _finite(p.cpu),
        "core": int(p.core),
        "time_in_mode": _finite(p.time_in_mode),
        "unmanaged": p.unmanaged,
    }


def peer_json(p: PeerStatus, override: Override | None) -> dict[str, Any]:
    """A peer as the API shows it (components/schemas/Peer)."""
    return {
        **_peer_fields(p),
        "pinned": override is not None,
        "override": override_to_dict(override) if override is not None else None,
    }


def _cpulist(cores: frozenset[int]) -> str:
    return format_cores(cores) if cores else ""


def interface_json(
    i: InterfaceStatus, overrides: dict[PeerId, Override], with_peers: bool = True
) -> dict[str, Any]:
    """An interface as the API shows it (components/schemas/Interface)."""
    out: dict[str, Any] = {
        "name": i.name,
        "cores": _cpulist(i.cores),
        "crypt_cores": _cpulist(i.crypt_cores),
        "inline_cores": _cpulist(i.inline_cores),
        "threaded_napi": i.threaded_napi,
        "unsupported": list(i.unsupported),
        "summary": columns(i).summary_json(),
    }
    if with_peers:
        out["peers"] = [peer_json(p, overrides.get(p.peer)) for p in i.peers]
    return out


def _live(daemon: DaemonView) -> dict[PeerId, Override]:
    return {o.peer: o for o in daemon.live_overrides()}


def override_json(o: Override, present: bool, name: str) -> dict[str, Any]:
    """An override as GET /v1/overrides and status's absent_overrides show it: the state
    file's fields, the peer's friendly name, and whether the peer is there at all."""
    return {**override_to_dict(o), "name": name, "present": present}


def _override_listing(d: DaemonView, overrides: list[Override]) -> list[dict[str, Any]]:
    keys = [o.peer for o in overrides]
    return [
        override_json(o, here, name)
        for o, here, name in zip(overrides, d.present(keys), d.peer_names(keys), strict=True)
    ]


