"""The one data model every front end converges on.

Policy files, the HTTP API, the CLI and both data-plane backends (the patched kernel
module and the simulated gateway) speak in these types, as wireguard-tools' `struct
wgdevice` is shared by its config parser and its kernel IPC.

Per-peer data is columnar (`PeerTable`, numpy arrays, one row per peer) because the
controller must tick over 100,000 peers in well under 100 ms; everything else is frozen,
slotted dataclasses.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

KEY_LEN = 32
"""A WireGuard public key: 32 raw bytes, 44 characters of base64."""

U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]
Keys = npt.NDArray[np.bytes_]  # dtype "S32": raw public keys


class Mode(enum.IntEnum):
    """How the data plane processes one peer's packets (uapi: WGH_MODE_*)."""

    VANILLA = 0
    """Upstream WireGuard: crypt work spread over the device's worker cores."""
    INLINE = 1
    """The whole packet lifecycle in one context, on one core."""

    def __str__(self) -> str:
        return self.name.lower()


class PeerClass(enum.IntEnum):
    MOUSE = 0
    ELEPHANT = 1

    def __str__(self) -> str:
        return self.name.lower()


class BadKeyError(ValueError):
    """A public key that is not 44 characters of base64 decoding to 32 bytes."""


def decode_key(text: str) -> bytes:
    """Decode a base64 WireGuard public key, rejecting anything that is not exactly one, in
    its one canonical spelling."""
    if not isinstance(text, str) or len(text) != 44 or not text.endswith("="):
        raise BadKeyError(f"public key {text!r} is not 44 characters of base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadKeyError(f"public key {text!r} is not valid base64: {exc}") from None
    if len(raw) != KEY_LEN:
        raise BadKeyError(f"public key {text!r} decodes to {len(raw)} bytes, not {KEY_LEN}")
    canonical = base64.b64encode(raw).decode()
    if canonical != text:
        # The last character carries 2 unused bits, which must be zero: otherwise four
        # spellings name one key (wireguard-tools refuses them too).
        raise BadKeyError(f"public key is not canonical base64 (did you mean {canonical}?)")
    return raw


CONTROL_RANGES = (
    (0x0000, 0x001F), (0x007F, 0x009F), (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C),
    (0x06DD, 0x06DD), (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB),
)
"""Characters free text (an override's reason, a state file's strings) must not contain:
the Unicode categories Cc (C0, DEL, C1 such as U+0085), Cf (format: bidi overrides such as
U+202E, zero-width characters, the BOM), Zl and Zp (U+2028, U+2029) and lone surrogates
(Cs), in the Basic Multilingual Plane. A fixed table rather than `unicodedata`, so that
the rule is the same on every Python (their Unicode versions differ) and is exactly the
OpenAPI document's `pattern` (tests/unit/test_api_validation.py checks both agree)."""

_CONTROL = re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in CONTROL_RANGES) + "]")


def control_pattern() -> str:
    """The JSON Schema `pattern` of text free of CONTROL_RANGES (openapi.json's reason).
    Lone surrogates are left out: JSON Schema's regex engines cannot spell them (the
    daemon still refuses a `\\udXXX` escape that decodes to one)."""
    ranges = "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in CONTROL_RANGES if a != 0xD800)
    return f"^[^{ranges}]*$"


def control_character(text: str) -> str | None:
    """The first character of `text` in CONTROL_RANGES, as U+XXXX, or None."""
    m = _CONTROL.search(text)
    return None if m is None else f"U+{ord(m.group()):04X}"


def raw_key(value: bytes | np.bytes_) -> bytes:
    """A key read back from an "S32" array: numpy drops trailing NUL bytes, put them back."""
    return bytes(value).ljust(KEY_LEN, b"\0")


def encode_key(raw: bytes) -> str:
    return base64.b64encode(bytes(raw).ljust(KEY_LEN, b"\0")).decode()


def short_key(raw: bytes) -> str:
    """The first 8 characters of the base64 key, as operators abbreviate peers."""
    return encode_key(raw)[:8]


# ---------------------------------------------------------------------------
# What the data plane reports


class PeerId(NamedTuple):
    """One peer of one interface: what every layer keys a peer by (overrides, unmanaged
    marks, events, look-ups in a snapshot). A named tuple: hashable, cheap, and equal to
    the plain `(interface, public_key)` pair that JSON and state files decode to. Many
    peers at once are columns (`PeerTable`: an interface index and an "S32" key array),
    never a list of these."""

    interface: str
    public_key: bytes
    """32 raw bytes."""

    def __str__(self) -> str:
        return f"{self.interface}/{short_key(self.public_key)}"


@dataclass(frozen=True, slots=True)
class InterfaceState:
    """One WireGuard device as the data plane reports it."""

    name: str
    crypt_cores: frozenset[int]
    """Cores the device's parallel crypt workers may run on (vanilla peers)."""
    threaded_napi: bool
    """/sys/class/net/DEV/threaded."""


@dataclass(frozen=True, slots=True, eq=False)
class PeerTable:
    """Every managed peer of one gateway, one row each, cumulative counters.

    Counters are cumulative since the peer was created in the data plane; `epoch`
    changes when they restart from zero (the module was reloaded, or the peer was
    removed and added again), which is how the rate stage tells a reset from a wrap.
    """

    iface: I32
    """Index into `GatewaySample.interfaces`."""
    key: Keys
    rx_bytes: U64
    tx_bytes: U64
    rx_packets: U64
    tx_packets: U64
    rx_cpu_ns: U64
    tx_cpu_ns: U64
    drops: U64
    mode: U8
    """`Mode` values."""
    core: I32
    """Core of the peer's serial work (inline context / TX worker); -1 = data plane's default."""
    epoch: U64

    def __len__(self) -> int:
        return int(self.key.shape[0])

    @staticmethod
    def empty() -> PeerTable:
        return PeerTable.build(np.zeros(0, dtype=np.int32), np.zeros(0, dtype="S32"))

    @staticmethod
    def build(iface: I32, key: Keys, **columns: npt.ArrayLike) -> PeerTable:
        """A table with the given columns; any column not given is zero (core: -1)."""
        n = int(np.asarray(key).shape[0])

        def col(name: str, dtype: type, default: int = 0) -> np.ndarray:
            if name in columns:
                arr: np.ndarray = np.asarray(columns.pop(name), dtype=dtype)
                if arr.shape != (n,):
                    raise ValueError(f"column {name} has shape {arr.shape}, expected ({n},)")
                return arr
            return np.full(n, default, dtype=dtype)

        table = PeerTable(
            iface=np.asarray(iface, dtype=np.int32),
            key=np.asarray(key, dtype="S32"),
            rx_bytes=col("rx_bytes", np.uint64),
            tx_bytes=col("tx_bytes", np.uint64),
            rx_packets=col("rx_packets", np.uint64),
            tx_packets=col("tx_packets", np.uint64),
            rx_cpu_ns=col("rx_cpu_ns", np.uint64),
            tx_cpu_ns=col("tx_cpu_ns", np.uint64),
            drops=col("drops", np.uint64),
            mode=col("mode", np.uint8),
            core=col("core", np.int32, -1),
            epoch=col("epoch", np.uint64),
        )
        if columns:
            raise TypeError(f"unknown columns: {', '.join(sorted(columns))}")
        return table


@dataclass(frozen=True, slots=True, eq=False)
class GatewaySample:
    """One reading of the whole gateway, taken at `now` (monotonic seconds)."""

    now: float
    cores: int
    """Online cores, numbered 0..cores-1."""
    core_busy_ns: U64
    """Per core, cumulative ns spent not idle (/proc/stat user+nice+system+irq+softirq)."""
    interfaces: tuple[InterfaceState, ...]
    peers: PeerTable


# ---------------------------------------------------------------------------
# What the controller asks the data plane to do: a plan is a tuple of these.


@dataclass(frozen=True, slots=True)
class Reason:
    """Why the controller planned an operation: the rule that fired and its numbers.

    `rule` is a stable word (for machines and filters); `text` one line for people;
    `numbers` the figures the decision compared, by name (Gbps, cores, seconds), in the
    order they are best read. Reasons never take part in comparing operations."""

    rule: str
    text: str
    numbers: tuple[tuple[str, float], ...] = ()

    def number(self, name: str) -> float | None:
        for k, v in self.numbers:
            if k == name:
                return v
        return None


@dataclass(frozen=True, slots=True)
class SetPeerMode:
    interface: str
    public_key: bytes
    mode: Mode
    reason: Reason | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"peer {self.peer} mode {self.mode}"

    @property
    def peer(self) -> PeerId:
        return PeerId(self.interface, self.public_key)


@dataclass(frozen=True, slots=True)
class SetPeerCore:
    interface: str
    public_key: bytes
    core: int
    reason: Reason | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"peer {self.peer} core {self.core}"

    @property
    def peer(self) -> PeerId:
        return PeerId(self.interface, self.public_key)


@dataclass(frozen=True, slots=True)
class SetCryptCores:
    interface: str
    cores: frozenset[int]
    reason: Reason | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"dev {self.interface} crypt-cores {format_cores(self.cores)}"


@dataclass(frozen=True, slots=True)
class SetThreadedNapi:
    interface: str
    enabled: bool
    reason: Reason | None = field(default=None, compare=False)

    def describe(self) -> str:
        return f"dev {self.interface} threaded-napi {'on' if self.enabled else 'off'}"


Operation = SetPeerMode | SetPeerCore | SetCryptCores | SetThreadedNapi
Plan = tuple[Operation, ...]


def format_cores(cores: frozenset[int] | set[int]) -> str:
    """Render a core set as a cpulist ("0-3,8"), the kernel's own notation."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cores):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out) or "-"


def parse_cores(text: str) -> frozenset[int]:
    """Parse a cpulist ("0-3,8"); raises ValueError naming the bad part."""
    cores: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise ValueError(f"bad core range {part!r} in {text!r}") from None
        if a < 0 or b < a:
            raise ValueError(f"bad core range {part!r} in {text!r}")
        cores.update(range(a, b + 1))
    return frozenset(cores)


# ---------------------------------------------------------------------------
# Operator overrides (HTTP API, CLI, persisted state)


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's pin of one peer's mode and/or core, optionally expiring."""

    interface: str
    public_key: bytes
    mode: Mode | None = None
    core: int | None = None
    expires: float | None = None
    """Wall-clock (time.time()) expiry; None = until cleared."""
    reason: str = ""
    created: float = field(default=0.0)

    def active(self, wall_now: float) -> bool:
        return self.expires is None or wall_now < self.expires

    @property
    def peer(self) -> PeerId:
        return PeerId(self.interface, self.public_key)


# ---------------------------------------------------------------------------
# What the controller reports (status API, CLI, metrics)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    interface: str
    public_key: bytes
    name: str
    mode: Mode
    pclass: PeerClass
    pinned: bool
    """True when an operator override decides the mode/core, False when automatic."""
    rx_bps: float
    tx_bps: float
    cpu: float
    """Smoothed CPU use, in cores (1.0 = one core fully busy)."""
    core: int
    time_in_mode: float
    """Seconds since the last mode change (or since the daemon adopted the peer)."""
    override: Override | None = None
    unmanaged: str | None = None
    """Why the controller stopped managing this peer (a permanent error), or None."""

    @property
    def peer(self) -> PeerId:
        return PeerId(self.interface, self.public_key)


@dataclass(frozen=True, slots=True)
class InterfaceStatus:
    name: str
    cores: frozenset[int]
    """Managed cores."""
    crypt_cores: frozenset[int]
    """The vanilla pool: cores the crypt workers may use."""
    inline_cores: frozenset[int]
    """Cores carrying at least one inline tunnel."""
    threaded_napi: bool
    peers: Sequence[PeerStatus]
    """A tuple, or (from the controller) `wghybrid.core.status.PeerColumns`: the same
    peers as columns, which makes `PeerStatus` objects only when iterated or indexed."""
    unsupported: tuple[str, ...] = ()
    """Device knobs the data plane refused for good (a permanent error), with the reason."""
