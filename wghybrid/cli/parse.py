"""Argument types: durations, times, counts, widths, cores."""

from __future__ import annotations

import argparse
import re
from datetime import datetime

# ---------------------------------------------------------------------------
# Argument types


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """"90", "90s", "10m", "1h30m", "2d" -> seconds (> 0)."""
    pos, total = 0, 0.0
    text = text.strip()
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text) or total <= 0:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r} (examples: 90s, 10m, 1h30m, 2d)"
        )
    return total


def parse_time(text: str) -> float:
    """An ISO 8601 date-time (local time unless it names a zone) -> unix time."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r} (ISO 8601, e.g. 2026-11-24T22:30 or 2026-11-24T22:30:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # naive: the operator's local time
    return when.timestamp()


def parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"bad number of seconds {text!r}")
    return value


def parse_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"bad number {text!r} (1 or more)")
    return n


def parse_width(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 40:
        raise argparse.ArgumentTypeError(f"bad width {text!r} (40 columns or more)")
    return n


def parse_core(text: str) -> int:
    try:
        core = int(text)
    except ValueError:
        core = -1
    if core < 0:
        raise argparse.ArgumentTypeError(f"bad core {text!r} (a core number, 0 or more)")
    return core



WATCH_MIN, WATCH_MAX = 0.1, 3600.0


def parse_interval(text: str) -> float:
    """`--watch SECONDS`: a number of seconds from 0.1 to 3600 (an hour)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not WATCH_MIN <= value <= WATCH_MAX:  # also nan, inf
        raise argparse.ArgumentTypeError(
            f"bad interval {text!r} (seconds, from {WATCH_MIN:g} to {WATCH_MAX:g})")
    return value


# A word that begins like a number (2, .5, -1, 1e9, nan, inf) is meant as --watch's
# SECONDS; any other (wg0, all) is a positional argument that happens to follow it.
_NUMBER_LIKE = re.compile(r"[+-]?(?:\d|\.\d|nan$|inf)", re.IGNORECASE)


def watch_words_first(argv: list[str], option: str = "--watch") -> list[str]:
    """`status --watch wg0` means `status wg0 --watch`: argparse gives an optional value
    (`nargs="?"`) whatever word follows the option, so the words after `--watch` that do
    not look like a number are moved before it. `--watch=abc` is left alone (a value
    given with `=` must be a number: a usage error), and so is everything after `--`."""
    out: list[str] = []
    held = False  # an `--watch` not yet written out, the words after it going first
    for i, word in enumerate(argv):
        if word == "--":
            if held:
                out.append(option)
            return out + argv[i:]
        if held and not word.startswith("-") and not _NUMBER_LIKE.match(word):
            out.append(word)
            continue
        if held:
            out.append(option)
            held = False
        if word == option:
            held = True
        else:
            out.append(word)
    if held:
        out.append(option)
    return out
