"""The policy loader: TOML text -> a fully validated `Policy`, or one `PolicyError`."""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from wghybrid._files import read_regular
from wghybrid.model import BadKeyError, decode_key, encode_key, format_cores, parse_cores
from wghybrid.policy import Classify, Metrics, NameImport, NapiPolicy, Placement, Policy, Stall
from wghybrid.policy.names import import_names as read_names

# ---------------------------------------------------------------------------
# The loader: TOML text -> a fully validated Policy, or one PolicyError.
#
# File layout (sections map to the dataclasses above):
#   name, description, interval, smoothing, cores, interfaces, restore_on_stop
#   [classify]   the Classify fields
#   [placement]  the Placement fields (threaded_napi = "auto" | "on" | "off",
#                nic_steering = true | false)
#   [metrics]    the Metrics fields (per_peer_max)
#   [stall]      the Stall fields (detect, window, min_drops, recover, retry)
#   [name_import] wg_quick, networkd: directories to import names from (policy/names.py)
#   [names]      "<base64 public key>" = "friendly name"
#
# Every key is checked by a declarative table (`_TOP`, `_CLASSIFY`, `_PLACEMENT`,
# `_METRICS`) before any cross-field rule runs; the first problem found, in file order, is
# the one reported.

IFNAMSIZ = 16
"""Linux interface names are at most IFNAMSIZ - 1 = 15 bytes."""
MAX_NAME_LEN = 64
"""Longest friendly peer name or policy name, in characters."""
_MAX_CORE = 1 << 16
"""No cpulist number above this is even parsed: it cannot be an online core."""
_ALL = "all"
MAX_POLICY_BYTES = 8 << 20
"""A policy file larger than this is refused unread (a names table for 100,000 peers is
about 6 MiB)."""
MAX_INTERFACES = 4096
MAX_NAMES = 200_000
MAX_IMPORT_DIRS = 16

log = logging.getLogger("wghybrid.policy")


class PolicyError(ValueError):
    """A policy that cannot be used. `str()` is one line: "<file>: <key>: <reason>".

    `key` is dotted ("classify.demote_gbps", "names.<public key>"); it is "" when the
    problem is not one key's (unreadable file, TOML syntax error: then `line`/`column`
    say where, when tomllib said so).
    """

    def __init__(
        self,
        file: str,
        key: str,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(file, key, reason)
        self.file = file
        self.key = key
        self.reason = reason
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = self.key
        if not where and self.line is not None:
            where = f"line {self.line}, column {self.column}"
        text = f"{self.file}: {where}: {self.reason}" if where else f"{self.file}: {self.reason}"
        return " ".join(text.splitlines())


class _Invalid(Exception):
    """One key's problem, before the file name is attached."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value!r})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def _quote(text: str) -> str:
    """`text` as a TOML basic string, every non-printable character escaped (one line)."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return '"' + "".join(out) + '"'


def _short(text: str, limit: int = 40) -> str:
    return _quote(text if len(text) <= limit else text[: limit - 3] + "...")


def _dotted(prefix: str, key: str) -> str:
    """`prefix.key`, quoting a key that would not read back as one word."""
    plain = key != "" and key.isprintable() and not any(c.isspace() or c in ".\"'" for c in key)
    shown = key if plain else _quote(key)
    return f"{prefix}.{shown}" if prefix else shown


def _fmt(x: float) -> str:
    """A number as people write it: 2, 0.25, 1000000, inf."""
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


@dataclass(frozen=True, slots=True)
class _Number:
    """A number in a range; `integer` demands a TOML integer, otherwise ints are accepted."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    unit: str = ""

    def describe(self) -> str:
        lo = f"> {_fmt(self.lo)}" if self.lo_open else f">= {_fmt(self.lo)}"
        hi = f"< {_fmt(self.hi)}" if self.hi_open else f"<= {_fmt(self.hi)}"
        unit = f" ({self.unit})" if self.unit else ""
        return f"must be {lo} and {hi}{unit}"

    def __call__(self, key: str, value: object) -> float | int:
        if isinstance(value, bool) or not isinstance(value, int | float):
            want = "an integer" if self.integer else "a number"
            raise _Invalid(key, f"expected {want}, got {_type_name(value)}")
        if self.integer and not isinstance(value, int):
            raise _Invalid(key, f"expected an integer, got {_type_name(value)}")
        if isinstance(value, float) and math.isnan(value):
            raise _Invalid(key, f"nan is not a number; {self.describe()}")
        below = value <= self.lo if self.lo_open else value < self.lo
        above = value >= self.hi if self.hi_open else value > self.hi
        if below or above:
            shown = _fmt(value) if isinstance(value, float) else _short(str(value), 24)[1:-1]
            raise _Invalid(key, f"{shown} is out of range: {self.describe()}")
        return value if self.integer else float(value)


@dataclass(frozen=True, slots=True)
class _Flag:
    def __call__(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(key, f"expected true or false, got {_type_name(value)}")
        return value


@dataclass(frozen=True, slots=True)
class _Text:
    """A string; `label` means one printable line of at most MAX_NAME_LEN characters."""

    label: bool = True
    max_len: int = MAX_NAME_LEN

    def __call__(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise _Invalid(key, f"expected a string, got {_type_name(value)}")
        if len(value) > self.max_len:
            raise _Invalid(key, f"longer than {self.max_len} characters")
        if self.label:
            if not value.strip():
                raise _Invalid(key, "must not be empty")
            if not value.isprintable():
                raise _Invalid(key, f"{_short(value)} contains control characters")
        return value


@dataclass(frozen=True, slots=True)
class _Napi:
    def __call__(self, key: str, value: object) -> NapiPolicy:
        choices = ", ".join(f'"{m.value}"' for m in NapiPolicy)
        if not isinstance(value, str):
            raise _Invalid(key, f"expected one of {choices}, got {_type_name(value)}")
        try:
            return NapiPolicy(value)
        except ValueError:
            raise _Invalid(key, f"{_short(value)} is not one of {choices}") from None


_CPULIST = re.compile(r"\s*[0-9]+(\s*-\s*[0-9]+)?\s*(,\s*[0-9]+(\s*-\s*[0-9]+)?\s*)*")


@dataclass(frozen=True, slots=True)
class _Cores:
    """ "all", a cpulist string ("0-3,8", the kernel's notation) or an array of core numbers.

    Syntax only; whether the cores exist is checked against the machine afterwards.
    """

    def __call__(self, key: str, value: object) -> frozenset[int] | None:
        if value == _ALL:
            return None
        if isinstance(value, str):
            if not _CPULIST.fullmatch(value):
                raise _Invalid(key, f'bad cpulist {_short(value)}: expected "all" or e.g. "0-3,8"')
            numbers = [int(n) for n in re.findall(r"[0-9]+", value)]
            if max(numbers) > _MAX_CORE:
                raise _Invalid(key, f"core {max(numbers)} does not exist on this machine")
            try:
                cores = parse_cores(value)
            except ValueError as exc:
                raise _Invalid(key, str(exc)) from None
        elif isinstance(value, list):
            if len(value) > _MAX_CORE:
                raise _Invalid(key, f"{len(value)} items, more than the limit of {_MAX_CORE}")
            for i, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, int) or item < 0:
                    raise _Invalid(
                        key, f"item {i + 1}: expected a core number >= 0, got {_type_name(item)}"
                    )
                if item > _MAX_CORE:
                    raise _Invalid(key, f"core {item} does not exist on this machine")
            cores = frozenset(value)
        else:
            want = '"all", a cpulist string or an array of cores'
            raise _Invalid(key, f"expected {want}, got {_type_name(value)}")
        if not cores:
            raise _Invalid(key, 'empty: name at least one core, or "all"')
        return cores


def check_ifname(name: str) -> str | None:
    """Why `name` cannot be a Linux interface name (the kernel's dev_valid_name), or None."""
    if not name:
        return "an interface name must not be empty"
    if len(name.encode()) >= IFNAMSIZ:
        return f"interface name {_short(name)} is longer than {IFNAMSIZ - 1} bytes"
    if name in (".", ".."):
        return f"{_short(name)} is not a valid interface name"
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        return f"interface name {_short(name)} contains '/', ':', whitespace or a control character"
    return None


@dataclass(frozen=True, slots=True)
class _Interfaces:
    """ "all" or an array of interface names."""

    def __call__(self, key: str, value: object) -> frozenset[str] | None:
        if value == _ALL:
            return None
        if not isinstance(value, list):
            raise _Invalid(
                key, f'expected "all" or an array of interface names, got {_type_name(value)}'
            )
        if not value:
            raise _Invalid(key, 'empty: name at least one interface, or "all"')
        if len(value) > MAX_INTERFACES:
            raise _Invalid(key, f"{len(value)} interfaces, more than the limit of {MAX_INTERFACES}")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _Invalid(key, f"item {i + 1}: expected a string, got {_type_name(item)}")
            why = check_ifname(item)
            if why:
                raise _Invalid(key, why)
            if item in seen:
                raise _Invalid(key, f"interface {_short(item)} is listed twice")
            seen.add(item)
        return frozenset(seen)


@dataclass(frozen=True, slots=True)
class _Dirs:
    """An array of absolute directory paths (empty: the source is off)."""

    def __call__(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise _Invalid(key, f"expected an array of directories, got {_type_name(value)}")
        if len(value) > MAX_IMPORT_DIRS:
            raise _Invalid(key, f"{len(value)} directories, more than {MAX_IMPORT_DIRS}")
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise _Invalid(key, f"item {i + 1}: expected a string, got {_type_name(item)}")
            if not item.startswith("/") or "\0" in item or len(item) > 4096:
                raise _Invalid(key, f"item {i + 1}: {_short(item)} is not an absolute path")
            if item in out:
                raise _Invalid(key, f"{_short(item)} is listed twice")
            out.append(item)
        return tuple(out)


_Check = Callable[[str, object], object]

_TOP: dict[str, _Check] = {
    "name": _Text(),
    "description": _Text(label=False, max_len=4096),
    "interval": _Number(0, 3600, lo_open=True, unit="seconds"),
    "smoothing": _Number(0, 3600, unit="seconds"),
    "cores": _Cores(),
    "interfaces": _Interfaces(),
    "restore_on_stop": _Flag(),
}
_CLASSIFY: dict[str, _Check] = {
    "promote_gbps": _Number(0, 10_000, lo_open=True, unit="Gbps"),
    "demote_gbps": _Number(0, 10_000, unit="Gbps"),
    "inline_saturation": _Number(0, 1, lo_open=True, unit="fraction of one core"),
    "min_dwell": _Number(0, 86_400, unit="seconds"),
    "latent_heat": _Number(0, 3600, unit="seconds"),
    "probe_gain": _Number(0, 10, unit="fraction of the reading"),
    "demand_decay": _Number(0, 86_400, unit="seconds"),
}
_PLACEMENT: dict[str, _Check] = {
    "max_moves": _Number(1, 1_000_000, integer=True, unit="operations per tick"),
    "migrate_improvement": _Number(0, 1, unit="fraction of the imbalance"),
    "vanilla_pool_min": _Number(1, _MAX_CORE, integer=True, unit="cores"),
    # The pool shrinks only when demand fits (1 - 2*headroom) of a smaller pool: at 0.5 or
    # more it could never shrink.
    "pool_headroom": _Number(0, 0.5, hi_open=True, unit="fraction of the pool"),
    "core_capacity": _Number(0, 1, lo_open=True, unit="fraction of one core"),
    "threaded_napi": _Napi(),
    "min_gain": _Number(0, 1, hi_open=True, unit="fraction of throughput or CPU"),
    "nic_steering": _Flag(),
}
_METRICS: dict[str, _Check] = {
    "per_peer_max": _Number(0, 10_000_000, integer=True, unit="peers"),
}
_STALL: dict[str, _Check] = {
    "detect": _Flag(),
    # At least 5 s: below WireGuard's passive keepalive (10 s) a healthy one-way tunnel
    # would look stalled; the default is 15.
    "window": _Number(5, 3600, unit="seconds"),
    "min_drops": _Number(1, 1 << 40, integer=True, unit="packets"),
    "recover": _Flag(),
    "retry": _Number(10, 86_400, unit="seconds"),
}
_NAME_IMPORT: dict[str, _Check] = {
    "wg_quick": _Dirs(),
    "networkd": _Dirs(),
}
_SECTIONS: dict[str, dict[str, _Check]] = {
    "classify": _CLASSIFY, "placement": _PLACEMENT, "metrics": _METRICS, "stall": _STALL,
    "name_import": _NAME_IMPORT,
}
_TABLES = ("classify", "placement", "metrics", "stall", "name_import", "names")
_NOT_IN_FILE = {"source", "file_names", "name_origin", "name_warnings"}
"""Policy fields that are not keys of the file (where it and its names came from)."""

# The tables above must name exactly the dataclasses' fields (checked at import).
assert set(_TOP) | set(_TABLES) == {f.name for f in fields(Policy)} - _NOT_IN_FILE
assert set(_NAME_IMPORT) == {f.name for f in fields(NameImport)}
assert set(_CLASSIFY) == {f.name for f in fields(Classify)}
assert set(_PLACEMENT) == {f.name for f in fields(Placement)}
assert set(_METRICS) == {f.name for f in fields(Metrics)}
assert set(_STALL) == {f.name for f in fields(Stall)}


def _unknown(section: str, key: str) -> _Invalid:
    """An unknown key, with the closest known key as a suggestion."""
    known = list(_SECTIONS[section]) if section else [*_TOP, *_TABLES]
    reason = "unknown key"
    close = difflib.get_close_matches(key, known, n=1)
    if close:
        reason += f"; did you mean {close[0]!r}?"
    elif section and key in _TOP:
        reason += f"; {key!r} belongs at the top level, before any [table] header"
    else:
        homes = [s for s, table in _SECTIONS.items() if s != section and key in table]
        if homes:
            reason += f"; {key!r} belongs in the [{homes[0]}] table"
        else:
            anywhere = [f"{s}.{k}" for s, t in _SECTIONS.items() if s != section for k in t]
            close = difflib.get_close_matches(key, anywhere, n=1)
            if close:
                reason += f"; did you mean {close[0]!r}?"
    return _Invalid(_dotted(section, key), reason)


def _check_table(section: str, data: dict[str, Any]) -> dict[str, Any]:
    table = _SECTIONS[section]
    out: dict[str, Any] = {}
    for key, value in data.items():
        check = table.get(key)
        if check is None:
            raise _unknown(section, key)
        out[key] = check(_dotted(section, key), value)
    return out


def _check_names(data: dict[str, Any]) -> dict[bytes, str]:
    if len(data) > MAX_NAMES:
        raise _Invalid("names", f"{len(data)} entries, more than the limit of {MAX_NAMES}")
    names: dict[bytes, str] = {}
    owner: dict[str, str] = {}
    check = _Text()
    for text, value in data.items():
        key = _dotted("names", text)
        try:
            raw = decode_key(text)
        except BadKeyError as exc:
            raise _Invalid(key, str(exc)) from None
        name = check(key, value)
        assert isinstance(name, str)
        if name in owner:
            raise _Invalid(key, f"duplicate name {_short(name)}: also the name of {owner[name]}")
        try:
            decode_key(name)
        except BadKeyError:
            pass
        else:
            raise _Invalid(key, "a friendly name must not itself look like a public key")
        owner[name] = text
        names[raw] = name
    return names


def _check_machine(values: dict[str, Any], online_cores: int, explicit: set[str]) -> None:
    """Rules between keys and against this machine, after every key passed on its own."""
    cores: frozenset[int] | None = values.get("cores")
    if cores is not None:
        missing = sorted(c for c in cores if c >= online_cores)
        if missing:
            raise _Invalid(
                "cores",
                f"core(s) {format_cores(frozenset(missing))} do not exist on this machine "
                f"(online: {format_cores(frozenset(range(online_cores)))})",
            )
    classify: Classify = values["classify"]
    if classify.demote_gbps >= classify.promote_gbps:
        if "classify.demote_gbps" in explicit or "classify.promote_gbps" not in explicit:
            given = "" if "classify.promote_gbps" in explicit else ", the default"
            raise _Invalid(
                "classify.demote_gbps",
                f"{_fmt(classify.demote_gbps)} must be below promote_gbps "
                f"({_fmt(classify.promote_gbps)}{given})",
            )
        raise _Invalid(
            "classify.promote_gbps",
            f"{_fmt(classify.promote_gbps)} must be above demote_gbps "
            f"({_fmt(classify.demote_gbps)}, the default)",
        )
    placement: Placement = values["placement"]
    # With cores = "all" the planner clamps the pool to the machine instead, so that one
    # policy file serves gateways of any size.
    if cores is not None and placement.vanilla_pool_min > len(cores):
        if "placement.vanilla_pool_min" in explicit:
            raise _Invalid(
                "placement.vanilla_pool_min",
                f"{placement.vanilla_pool_min} is more than the {len(cores)} managed core(s)",
            )
        raise _Invalid(
            "cores",
            f"{len(cores)} managed core(s), fewer than placement.vanilla_pool_min "
            f"({placement.vanilla_pool_min}, the default)",
        )


def policy_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", online_cores: int | None = None
) -> Policy:
    """Validate a parsed policy document (the file layout) and build the Policy.

    Raises PolicyError naming `source`, the first bad key and why; nothing is returned
    until every key and every rule between keys has passed.
    """
    online = _online(online_cores)
    try:
        return _build(data, source, online)
    except _Invalid as exc:
        raise PolicyError(source, exc.key, exc.reason) from None


def _online(online_cores: int | None) -> int:
    if online_cores is None:
        return os.cpu_count() or 1
    if online_cores < 1:
        raise ValueError(f"online_cores must be >= 1, got {online_cores}")
    return online_cores


def _build(data: Mapping[str, Any], source: str, online: int) -> Policy:
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {
        "classify": {}, "placement": {}, "metrics": {}, "stall": {}, "name_import": {},
    }
    names: dict[bytes, str] = {}
    explicit: set[str] = set()
    for key, value in data.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                raise _Invalid(key, f"expected a table ([{key}]), got {_type_name(value)}")
            if key == "names":
                names = _check_names(value)
            else:
                sections[key] = _check_table(key, value)
                explicit.update(f"{key}.{k}" for k in value)
            continue
        check = _TOP.get(key)
        if check is None:
            raise _unknown("", key)
        values[key] = check(key, value)
        explicit.add(key)
    values["classify"] = Classify(**sections["classify"])
    values["placement"] = Placement(**sections["placement"])
    values["metrics"] = Metrics(**sections["metrics"])
    values["stall"] = Stall(**sections["stall"])
    values["name_import"] = NameImport(**sections["name_import"])
    _check_machine(values, online, explicit)
    return Policy(**values, names=names, source=source)


_TOML_WHERE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|(end of document))\)$")


def parse_policy(text: str, source: str = "<string>", online_cores: int | None = None) -> Policy:
    """Parse and validate policy TOML text; `source` names it in errors and in the Policy."""
    return policy_from_dict(_toml(text, source), source, online_cores)


def _toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        where = _TOML_WHERE.search(message)
        line = column = None
        if where:
            message = message[: where.start()]
            if where[3]:
                message += " at end of document"
            else:
                line, column = int(where[1]), int(where[2])
        raise PolicyError(
            source, "", f"invalid TOML: {message}", line=line, column=column
        ) from None
    except RecursionError:
        raise PolicyError(source, "", "invalid TOML: nested too deeply") from None


def load_policy(
    path: str | os.PathLike[str],
    online_cores: int | None = None,
    import_names: bool = True,
    log_warnings: bool = True,
) -> Policy:
    """Load and validate a policy file; raises PolicyError (never half a policy).

    `online_cores` is the number of cores the policy's `cores` must exist among; None
    means this machine's (os.cpu_count()). The simulated gateway passes its own.
    With `import_names`, the names of `[name_import]`'s directories complete `[names]`
    (`with_imported_names`); each problem with them is a warning, logged unless
    `log_warnings` is false, and kept in `Policy.name_warnings`.
    """
    policy = _load_file(path, online_cores)
    if not import_names:
        return dataclasses.replace(policy, file_names=frozenset(policy.names))
    policy = with_imported_names(policy)
    if log_warnings:
        for warning in policy.name_warnings:
            log.warning("names: %s", warning)
    return policy


def with_imported_names(policy: Policy) -> Policy:
    """`policy` with the names of its `[name_import]` directories added (the file's
    `[names]` wins, then networkd, then wg-quick); never raises for a bad config file."""
    ni = policy.name_import
    own = frozenset(policy.names)
    if not ni.wg_quick and not ni.networkd:
        return dataclasses.replace(policy, file_names=own)
    names, origin, warnings = read_names(policy.names, ni.wg_quick, ni.networkd, MAX_NAMES)
    return dataclasses.replace(policy, names=names, name_origin=origin, file_names=own,
                               name_warnings=tuple(warnings))


def _load_file(path: str | os.PathLike[str], online_cores: int | None) -> Policy:
    source = os.fspath(path)
    try:
        raw = read_regular(source, MAX_POLICY_BYTES)
    except OSError as exc:
        raise PolicyError(source, "", f"cannot read: {exc}") from None
    if not raw.strip():
        # A truncated write or the wrong file, far more often than a wish for every
        # default: that takes a comment ("# all defaults"), as policies/ shows.
        raise PolicyError(source, "", "the file is empty (for every default, write a comment)")
    if raw.startswith(b"\xef\xbb\xbf"):
        raise PolicyError(
            source, "", "the file starts with a UTF-8 byte-order mark (BOM); save it without one"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(source, "", f"not UTF-8 text (bad byte at offset {exc.start})") from None
    return policy_from_dict(_toml(text, source), source, online_cores)


def policy_to_dict(policy: Policy) -> dict[str, Any]:
    """The policy as JSON-ready data in the file's layout (keys base64), plus `source`.

    Without `source`, the result is a valid policy document: `policy_from_dict` (or a
    TOML writer and `parse_policy`) gives back an equal Policy. The names that are not the
    file's own (imported, or the data plane's) are not under `names` but under
    `name_sources` ({key: {"name", "from"}}), and the problems met importing them under
    `name_warnings`; both keys are there only when not empty.
    """
    file_keys = policy.file_names
    own: dict[bytes, str] = {}
    others: dict[bytes, str] = {}
    for k, v in policy.names.items():
        mine = k not in policy.name_origin if file_keys is None else k in file_keys
        (own if mine else others)[k] = v
    out = {
        "name": policy.name,
        "description": policy.description,
        "interval": float(policy.interval),
        "smoothing": float(policy.smoothing),
        "cores": _ALL if policy.cores is None else format_cores(policy.cores),
        "interfaces": _ALL if policy.interfaces is None else sorted(policy.interfaces),
        "restore_on_stop": policy.restore_on_stop,
        "classify": {f.name: float(getattr(policy.classify, f.name)) for f in fields(Classify)},
        "placement": {f.name: _plain(getattr(policy.placement, f.name)) for f in fields(Placement)},
        "metrics": {f.name: getattr(policy.metrics, f.name) for f in fields(Metrics)},
        "stall": {f.name: getattr(policy.stall, f.name) for f in fields(Stall)},
        "name_import": {f.name: list(getattr(policy.name_import, f.name))
                        for f in fields(NameImport)},
        "names": {encode_key(k): v for k, v in sorted(own.items())},
        "source": policy.source,
    }
    if others:
        out["name_sources"] = {
            encode_key(k): {"name": v, "from": policy.name_origin.get(k, DATA_PLANE)}
            for k, v in sorted(others.items(), key=lambda kv: kv[1])
        }
    if policy.name_warnings:
        out["name_warnings"] = list(policy.name_warnings)
    return out


DATA_PLANE = "the data plane (the simulated gateway's tunnel names)"
"""Where a name comes from that neither the policy file nor an import gave: the daemon
adds the simulator's tunnel names to the policy's (which win over them)."""


def _plain(value: object) -> object:
    return value.value if isinstance(value, Enum) else value


def describe_policy(policy: Policy, online_cores: int | None = None) -> str:
    """One line summing up a policy, for `wghybrid validate` and logs."""
    online = _online(online_cores)
    cores = (
        f"all ({online} online)"
        if policy.cores is None
        else f"{format_cores(policy.cores)} ({len(policy.cores)})"
    )
    ifaces = "all" if policy.interfaces is None else ",".join(sorted(policy.interfaces))
    c = policy.classify
    return (
        f"policy {policy.name!r}: cores {cores}, interfaces {ifaces}, "
        f"interval {_fmt(policy.interval)} s, promote {_fmt(c.promote_gbps)} Gbps, "
        f"demote {_fmt(c.demote_gbps)} Gbps, dwell {_fmt(c.min_dwell)} s, "
        f"{len(policy.names)} name(s)"
        + (f" ({len(policy.name_origin)} imported)" if policy.name_origin else "")
    )


def validate_command(path: str, online_cores: int | None = None) -> tuple[int, str]:
    """`wghybrid validate FILE`: the daemon's own loader; (exit code, one-line message)."""
    try:
        policy = load_policy(path, online_cores, log_warnings=False)
    except PolicyError as exc:
        return 1, str(exc)
    lines = [f"{path}: OK: {describe_policy(policy, online_cores)}"]
    lines.extend(f"  warning: names: {w}" for w in policy.name_warnings)
    return 0, "\n".join(lines)


def shipped_policy_dir() -> Path:
    """Where the policies shipped with wghybrid are: inside the package when installed
    with them, else the source tree's policies/."""
    here = Path(__file__).resolve().parent.parent  # the package directory
    for candidate in (here / "policies", here.parent / "policies"):
        if (candidate / "default.toml").is_file():
            return candidate
    raise FileNotFoundError("the shipped policies (policies/default.toml) are not installed")


def shipped_policy_path(name: str = "default") -> Path:
    """A shipped policy file by name ("default", "efficiency", "latency")."""
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"bad policy name {name!r}")
    path = shipped_policy_dir() / f"{name}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped policy {name!r} ({path})")
    return path
