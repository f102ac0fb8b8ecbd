"""Friendly peer names from the configs the host already has: wg-quick and systemd-networkd.

The popular WireGuard front ends write a peer's name as a comment in its section,
keyed by nothing but the section's `PublicKey`:

    # Name = alice                 (wg-quick: /etc/wireguard/*.conf)
    [Peer]
    PublicKey = ...

    [WireGuardPeer]                (systemd-networkd: /etc/systemd/network/*.netdev)
    # Name = alice
    PublicKey=...

A name is read from a `# Name = X` (or `Name: X`, `friendly_name = X`, as
prometheus_wireguard_exporter reads) comment inside the peer's section, or in the run of
comment lines directly above its header. Which source wins: the policy's `[names]`, then
networkd, then wg-quick (and within one source, the first file in name order).

Everything is bounded (files per directory, bytes per file, names in all); a file that
cannot be read or parsed is skipped with one warning naming the file and the line, and
never stops the daemon. Nothing but public keys and names is kept; a warning never quotes
a line (a config holds its PrivateKey).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from wghybrid._files import read_regular
from wghybrid.model import BadKeyError, decode_key

MAX_FILES = 1024
"""Config files read per directory, at most (in name order)."""
MAX_FILE_BYTES = 16 << 20
"""A config file larger than this is skipped (100,000 peers of wg-quick are ~12 MiB)."""
MAX_NAME_LEN = 64

_NAME_COMMENT = re.compile(
    r"^\s*[#;]+\s*(?:name|friendly_?name)\s*[=:]\s*(?P<name>.*?)\s*$", re.IGNORECASE
)
_SECTION = re.compile(r"^\s*\[\s*(?P<section>[^\]]*?)\s*\]\s*(?:[#;].*)?$")
_PUBLIC_KEY = re.compile(r"^\s*publickey\s*=\s*(?P<key>\S*)\s*$", re.IGNORECASE)

WG_QUICK = "wg-quick"
NETWORKD = "networkd"


@dataclass(frozen=True, slots=True)
class Found:
    """One named peer: its name and where the name is ("file:line")."""

    name: str
    where: str


@dataclass
class Imported:
    names: dict[bytes, Found] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Format:
    kind: str
    suffix: str
    section: str
    """The peer section's name, case-insensitively."""


_FORMATS = {
    WG_QUICK: _Format(WG_QUICK, ".conf", "peer"),
    NETWORKD: _Format(NETWORKD, ".netdev", "wireguardpeer"),
}


def check_name(name: str) -> str | None:
    """Why `name` cannot be a friendly name, or None."""
    if not name:
        return "an empty name"
    if len(name) > MAX_NAME_LEN:
        return f"a name longer than {MAX_NAME_LEN} characters"
    if not name.isprintable():
        return "a name with control characters"
    try:
        decode_key(name)
    except BadKeyError:
        return None
    return "a name that looks like a public key"


def parse_config(text: str, source: str, kind: str) -> tuple[dict[bytes, Found], list[str]]:
    """The named peers of one config's text (wg-quick or networkd), and the warnings.

    A name comment belongs to the section it is in, unless it is in the run of comment
    lines directly above a section header: then it is the next section's."""
    fmt = _FORMATS[kind]
    names: dict[bytes, Found] = {}
    warnings: list[str] = []
    pending: tuple[str, int] | None = None  # a name comment in the current run of comments
    in_peer = False
    name: tuple[str, int] | None = None
    key: bytes | None = None
    bad_key = False
    header = 0

    def settle() -> None:
        """The run of comments ended, not at a header: its name is this section's."""
        nonlocal name, pending
        if pending is not None and in_peer:
            if name is None:
                name = pending
            elif name[0] != pending[0]:
                warnings.append(f"{source}:{pending[1]}: a second name for the peer section "
                                f"of line {header}; the first (line {name[1]}) is kept")
        pending = None

    def close() -> None:
        if not in_peer or name is None:
            return
        label, line = name
        if key is None:
            if bad_key:
                return  # said already
            warnings.append(f"{source}:{line}: a name for the peer section of line {header}, "
                            "which has no valid PublicKey; ignored")
            return
        if key in names:
            if names[key].name != label:
                warnings.append(f"{source}:{line}: the same PublicKey is named at "
                                f"{names[key].where}; that name is kept")
            return
        names[key] = Found(label, f"{source}:{line}")

    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            settle()
            continue
        section = _SECTION.match(line)
        if section:
            close()
            in_peer = section["section"].casefold() == fmt.section
            name = pending if in_peer else None
            key, bad_key, header, pending = None, False, number, None
            continue
        comment = _NAME_COMMENT.match(line)
        if comment:
            label = comment["name"]
            why = check_name(label)
            if why is not None:
                warnings.append(f"{source}:{number}: {why}; ignored")
            elif pending is None:
                pending = (label, number)
            continue
        if stripped[0] in "#;":
            continue  # other comments keep the run going
        settle()
        if in_peer:
            pk = _PUBLIC_KEY.match(line)
            if pk:
                try:
                    key = decode_key(pk["key"])
                except BadKeyError:
                    warnings.append(f"{source}:{number}: PublicKey is not a WireGuard key "
                                    "(44 characters of base64); the peer's name is ignored")
                    key, bad_key = None, True
    settle()
    close()
    return names, warnings


def _config_files(directory: str, suffix: str, warnings: list[str]) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        return []  # the default directories need not exist
    except OSError as exc:
        warnings.append(f"{directory}: cannot list the directory: {exc.strerror or exc}")
        return []
    files = [Path(e.path) for e in entries if e.name.endswith(suffix)
             and not e.name.startswith(".")]
    if len(files) > MAX_FILES:
        warnings.append(f"{directory}: {len(files)} *{suffix} files, more than {MAX_FILES}; "
                        f"only the first {MAX_FILES} in name order are read")
        files = files[:MAX_FILES]
    return files


def read_configs(directories: Iterable[str], kind: str, limit: int) -> Imported:
    """Every named peer in the `kind` configs of `directories` (first file wins), at most
    `limit` names."""
    fmt = _FORMATS[kind]
    out = Imported()
    for directory in directories:
        for path in _config_files(directory, fmt.suffix, out.warnings):
            try:
                st = os.stat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                if st.st_size > MAX_FILE_BYTES:
                    out.warnings.append(f"{path}: {st.st_size} bytes, more than "
                                        f"{MAX_FILE_BYTES}; skipped")
                    continue
                raw = read_regular(path, MAX_FILE_BYTES)
            except OSError as exc:
                out.warnings.append(f"{path}: cannot read: {exc.strerror or exc}")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = raw[: exc.start].count(b"\n") + 1
                out.warnings.append(f"{path}:{line}: not UTF-8 text; skipped")
                continue
            names, warnings = parse_config(text, str(path), kind)
            out.warnings.extend(warnings)
            for key, found in names.items():
                if key in out.names:
                    if out.names[key].name != found.name:
                        out.warnings.append(f"{found.where}: the peer is also named in "
                                            f"{out.names[key].where}, which is kept")
                    continue
                if len(out.names) >= limit:
                    out.warnings.append(f"{found.where}: more than {limit} names; the rest "
                                        "are ignored")
                    return out
                out.names[key] = found
    return out


def import_names(
    own: Mapping[bytes, str],
    wg_quick: Iterable[str],
    networkd: Iterable[str],
    limit: int,
) -> tuple[dict[bytes, str], dict[bytes, str], list[str]]:
    """The policy's own names (`own`) completed from networkd, then wg-quick configs:
    (every name, where each imported one came from as "wg-quick FILE:LINE" or
    "networkd FILE:LINE", warnings). A name already given to another peer is skipped."""
    merged = dict(own)
    origin: dict[bytes, str] = {}
    warnings: list[str] = []
    owner = {name: key for key, name in own.items()}
    for kind, dirs in ((NETWORKD, networkd), (WG_QUICK, wg_quick)):
        found = read_configs(dirs, kind, limit)
        warnings.extend(found.warnings)
        for key, f in found.names.items():
            if key in merged:
                continue  # a source above it names the peer already
            other = owner.get(f.name)
            if other is not None and other != key:
                warnings.append(f"{f.where}: the name {f.name!r} is another peer's already "
                                f"({'the policy' if other in own else origin[other]}); "
                                "ignored")
                continue
            if len(merged) >= limit:
                warnings.append(f"{f.where}: more than {limit} names; the rest are ignored")
                break
            merged[key] = f.name
            owner[f.name] = key
            origin[key] = f"{kind} {f.where}"
    return merged, origin, warnings
