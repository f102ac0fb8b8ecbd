"""The daemon's persisted state: operator overrides, unmanaged marks, and the devices
whose threaded NAPI the daemon turned off for good (a peer stalled with it on).

One JSON file, `state.json`, in the state directory (default /var/lib/wghybrid). It is
written atomically — a temporary file in the same directory, fsync, rename over the old
file, fsync of the directory — so a crash or SIGKILL at any point leaves either the old
or the new state, never a torn one. A file that cannot be parsed is reported, not
silently replaced: losing an operator's pin is worse than refusing to start.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wghybrid._files import read_regular
from wghybrid.model import (
    BadKeyError,
    Mode,
    Override,
    control_character,
    decode_key,
    encode_key,
)

STATE_VERSION = 1
STATE_FILE = "state.json"
LOCK_FILE = "lock"
MAX_STATE_BYTES = 64 << 20
"""state.json is refused unread above this (an override is about 250 bytes)."""
MAX_TEXT = 4096
"""Longest interface name or reason read back (the API takes reasons of 1024)."""
MAX_CORE = 1 << 20


class StateError(Exception):
    """The state file exists but cannot be read back; the message names the file."""


@dataclass(frozen=True, slots=True)
class Unmanaged:
    """A peer the data plane refused for good; the controller leaves it alone."""

    interface: str
    public_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class NapiOff:
    """A device whose threaded NAPI the daemon turned off for good: a peer's decryption
    stalled with it on (wghybrid.daemon.stall)."""

    interface: str
    reason: str


MAX_NAPI_OFF = 4096
"""Entries of `threaded_napi_off` read back at most (one per WireGuard device)."""


@dataclass(frozen=True, slots=True)
class DaemonState:
    overrides: tuple[Override, ...] = ()
    unmanaged: tuple[Unmanaged, ...] = ()
    napi_off: tuple[NapiOff, ...] = ()


def override_to_dict(o: Override) -> dict[str, Any]:
    """An override as the HTTP API and the state file spell it."""
    return {
        "interface": o.interface,
        "public_key": encode_key(o.public_key),
        "mode": str(o.mode) if o.mode is not None else None,
        "core": o.core,
        "expires": o.expires,
        "reason": o.reason,
        "created": o.created,
    }


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} is not a number: {_shown(value)}")
    try:
        out = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError(f"{what} is out of range: {_shown(value)}") from None
    if not math.isfinite(out):
        raise ValueError(f"{what} is not finite: {_shown(value)}")
    return out


def _text(value: object, what: str, empty: bool = True, controls: bool = True) -> str:
    """A string of at most MAX_TEXT characters. `controls`: control characters are
    tolerated (a reason an older version accepted, or the data plane's own error text:
    it is stored, and every front end escapes it when it shows it)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a string: {_shown(value)}")
    if not empty and not value:
        raise ValueError(f"{what} is empty")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")
    bad = None if controls else control_character(value)
    if bad is not None:
        raise ValueError(f"{what} contains the control character {bad}")
    return value


def _key(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"public key is not a string: {_shown(value)}")
    try:
        return decode_key(value)
    except BadKeyError as exc:
        raise ValueError(str(exc)) from None


def override_from_dict(d: object) -> Override:
    """The inverse of `override_to_dict`; raises ValueError naming what is wrong."""
    if not isinstance(d, dict):
        raise ValueError(f"override is not an object: {_shown(d)}")
    iface = _text(d.get("interface"), "override interface", empty=False)
    key = _key(d.get("public_key"))
    mode_text = d.get("mode")
    mode: Mode | None = None
    if mode_text is not None:
        if mode_text not in ("vanilla", "inline"):
            raise ValueError(f"override mode is not vanilla or inline: {_shown(mode_text)}")
        mode = Mode.VANILLA if mode_text == "vanilla" else Mode.INLINE
    core = d.get("core")
    if core is not None and (
        isinstance(core, bool) or not isinstance(core, int) or not 0 <= core < MAX_CORE
    ):
        raise ValueError(f"override core is not a core number: {_shown(core)}")
    expires_raw = d.get("expires")
    expires = None if expires_raw is None else _number(expires_raw, "override expires")
    reason = _text(d.get("reason", ""), "override reason")
    created = _number(d.get("created", 0.0), "override created")
    return Override(iface, key, mode, core, expires, reason, created)


def state_to_dict(state: DaemonState) -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "overrides": [override_to_dict(o) for o in state.overrides],
        "unmanaged": [
            {"interface": u.interface, "public_key": encode_key(u.public_key), "reason": u.reason}
            for u in state.unmanaged
        ],
        "threaded_napi_off": [{"interface": n.interface, "reason": n.reason}
                              for n in state.napi_off],
    }


def state_from_dict(d: object) -> DaemonState:
    if not isinstance(d, dict):
        raise ValueError("state is not a JSON object")
    if d.get("version") != STATE_VERSION:
        raise ValueError(f"state version {_shown(d.get('version'))} is not {STATE_VERSION}")
    overrides = d.get("overrides", [])
    unmanaged = d.get("unmanaged", [])
    if not isinstance(overrides, list) or not isinstance(unmanaged, list):
        raise ValueError("overrides and unmanaged must be lists")
    marks = []
    for u in unmanaged:
        if not isinstance(u, dict):
            raise ValueError(f"unmanaged entry is malformed: {_shown(u)}")
        try:
            iface = _text(u.get("interface"), "interface", empty=False)
            key = _key(u.get("public_key"))
            reason = _text(u.get("reason", ""), "reason")
        except ValueError as exc:
            raise ValueError(f"unmanaged entry is malformed: {exc}") from None
        marks.append(Unmanaged(iface, key, reason))
    return DaemonState(tuple(override_from_dict(o) for o in overrides), tuple(marks),
                       _napi_off(d.get("threaded_napi_off", [])))


def _napi_off(entries: object) -> tuple[NapiOff, ...]:
    """`threaded_napi_off` (absent in a state written before it existed: none)."""
    if not isinstance(entries, list):
        raise ValueError(f"threaded_napi_off is not a list: {_shown(entries)}")
    if len(entries) > MAX_NAPI_OFF:
        raise ValueError(f"threaded_napi_off has {len(entries)} entries, more than "
                         f"{MAX_NAPI_OFF}")
    out = []
    for e in entries:
        if not isinstance(e, dict):
            raise ValueError(f"threaded_napi_off entry is malformed: {_shown(e)}")
        try:
            iface = _text(e.get("interface"), "interface", empty=False, controls=False)
            reason = _text(e.get("reason", ""), "reason")
        except ValueError as exc:
            raise ValueError(f"threaded_napi_off entry is malformed: {exc}") from None
        out.append(NapiOff(iface, reason))
    return tuple(out)


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content."""
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class StateStore:
    """Reads and writes `state.json` in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE

    def load(self) -> DaemonState:
        """The saved state; empty when there is none yet. Raises StateError."""
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        for stale in self.directory.glob(f".{STATE_FILE}.*.tmp"):
            stale.unlink(missing_ok=True)  # a write that a crash interrupted
        try:
            raw = read_regular(self.path, MAX_STATE_BYTES)
        except FileNotFoundError:
            return DaemonState()
        except OSError as exc:
            if not os.path.lexists(self.path):
                return DaemonState()
            raise StateError(f"{self.path}: {exc}") from None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise StateError(f"{self.path}: not valid JSON: {exc}") from None
        except (ValueError, RecursionError) as exc:
            raise StateError(f"{self.path}: not valid JSON: {exc}") from None
        try:
            return state_from_dict(data)
        except (ValueError, TypeError, RecursionError, OverflowError, MemoryError) as exc:
            # ValueError covers bad UTF-8, bad JSON and an integer of more than
            # sys.get_int_max_str_digits() digits.
            raise StateError(f"{self.path}: {' '.join(str(exc).splitlines())}") from None

    def save(self, state: DaemonState) -> None:
        data = json.dumps(state_to_dict(state), indent=1, sort_keys=True).encode() + b"\n"
        write_atomic(self.path, data)


def sorted_overrides(overrides: Iterable[Override]) -> tuple[Override, ...]:
    return tuple(sorted(overrides, key=lambda o: o.peer))
