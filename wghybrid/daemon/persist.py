"""The simulated gateway kept across restarts (`--backend sim --state-dir`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wghybrid.model import (
    GatewaySample,
    Operation,
    encode_key,
)
from wghybrid.sim import Faults, Scenario, SimDataPlane

log = logging.getLogger("wghybrid.daemon")


class PersistentSim:
    """The simulated gateway behind the DataPlane interface, with its data-plane state
    (each peer's mode and core, the crypt pool, threaded NAPI, the scenario clock) kept in
    a file, so that it outlives the daemon as the kernel module's state does: a restarted
    or SIGKILLed daemon finds the modes it left, not the scenario's initial ones."""

    def __init__(
        self,
        scenario: Scenario,
        path: Path,
        speed: float = 1.0,
        wall: Callable[[], float] = time.time,
        persist: bool = True,
    ) -> None:
        self.path = path
        self.scenario = scenario
        self._persist = persist
        self._wall = wall
        self._speed = speed
        self._keys = [encode_key(t.public_key) for t in scenario.tunnels]
        offset = 0.0
        saved = self._load()
        start = time.monotonic()

        def clock() -> float:
            return offset + (time.monotonic() - start) * speed

        self.sim = SimDataPlane(scenario, clock=clock)
        gw = self.sim.gateway
        if saved is not None:
            offset = float(saved["time"]) + max(0.0, wall() - float(saved["wall"])) * speed
            gw.mode[:] = np.asarray(saved["mode"], dtype=np.uint8)
            gw.core[:] = np.asarray(saved["core"], dtype=np.int32)
            gw.crypt_cores = frozenset(int(c) for c in saved["crypt_cores"])
            gw.threaded_napi = bool(saved["threaded_napi"])
            gw.time = offset  # counters restart from zero here; the controller re-baselines
            log.info(
                "simulated gateway: resumed %s at t=%.1f s from %s", scenario.name, offset, path
            )

    @property
    def faults(self) -> Faults:
        return self.sim.faults

    def _load(self) -> dict[str, Any] | None:
        try:
            saved = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("simulated gateway: ignoring %s: %s", self.path, exc)
            return None
        if not isinstance(saved, dict) or saved.get("keys") != self._keys:
            log.info("simulated gateway: %s is for another scenario; starting afresh", self.path)
            return None
        return saved

    def _state(self) -> bytes | None:
        if not self._persist:
            return None  # --dry-run: the simulated kernel keeps its state in memory only
        gw = self.sim.gateway
        data = {
            "scenario": self.scenario.name,
            "keys": self._keys,
            "mode": gw.mode.tolist(),
            "core": gw.core.tolist(),
            "crypt_cores": sorted(gw.crypt_cores),
            "threaded_napi": gw.threaded_napi,
            "time": self.sim.clock(),
            "wall": self._wall(),
        }
        return json.dumps(data).encode()

    def _write(self, data: bytes | None) -> None:
        # The simulated kernel's memory: it must survive SIGKILL of the daemon, which
        # rename() alone ensures; fsync (power loss) is not worth its latency here.
        if data is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.path)

    def _save(self) -> None:
        self._write(self._state())

    async def sample(self) -> GatewaySample:
        return await self.sim.sample()

    async def apply(self, op: Operation) -> None:
        await self.sim.apply(op)
        # Saved before the operation counts as done, as the kernel's state would be. On
        # the loop, not in a thread: a thread hop per operation stretches a busy tick past
        # its slot when the machine is loaded, and the write is small (the keys are
        # encoded once, in __init__).
        self._save()

    async def recreate_peer(self, interface: str, public_key: bytes) -> str:
        """`PeerRecovery` (the daemon's stall recovery), saved as `apply` is."""
        text = await self.sim.recreate_peer(interface, public_key)
        self._save()
        return text

    async def close(self) -> None:
        if not self.sim.closed:
            self._save()
        await self.sim.close()


