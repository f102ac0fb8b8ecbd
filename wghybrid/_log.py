"""Logging: the journal with structured fields under systemd, plain stderr lines otherwise.

The daemon logs with `logging.getLogger("wghybrid.<module>")` and passes structured fields
as `extra={"WGH_INTERFACE": "wg0", "WGH_PEER": "<base64>"}`. Under systemd those become
journal fields (`journalctl -u wghybrid WGH_INTERFACE=wg0`); on a terminal they are left
out of the line, which already names the peer.

systemd tells a service that its stderr is the journal by setting JOURNAL_STREAM to the
"device:inode" of that stream (systemd.exec(5)); a process whose stderr was redirected
elsewhere (a pipe, a file) must not assume the journal, so both numbers are compared.
"""

from __future__ import annotations

import logging
import os
import sys
import time

IDENTIFIER = "wghybrid"
LEVELS = ("debug", "info", "warning", "error", "critical")
_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def stderr_is_journal(environ: dict[str, str] | None = None, fd: int = 2) -> bool:
    """True when JOURNAL_STREAM names the very stream `fd` is connected to."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def make_handler(journal: bool) -> logging.Handler:
    """The handler `setup_logging` installs: JournalHandler or a plain stderr one."""
    if journal:
        try:
            from systemd.journal import JournalHandler
        except ImportError:
            pass  # systemd-python is optional: fall back to plain lines, which journald keeps
        else:
            # JournalHandler passes every `extra` key of a record as a journal field
            # (journald keeps the valid, upper-case ones such as WGH_INTERFACE).
            handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
            handler.setFormatter(logging.Formatter("%(message)s"))
            return handler
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_PLAIN_FORMAT))
    return handler


class OneLine(logging.Filter):
    """For loggers about misbehaving clients: a traceback becomes `: Type: message` on the
    same line, and ERROR becomes WARNING (a bad request is the client's error, not ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            exc = record.exc_info[1]
            if exc is not None:
                text = " ".join(str(exc).split()) or "-"
                record.msg = f"{record.getMessage()}: {type(exc).__name__}: {text}"
                record.args = None
            record.exc_info = None
            record.exc_text = None
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RateLimit(logging.Filter):
    """At most `burst` records per message template in any `period` seconds; the next
    record let through after a quiet spell says how many were dropped."""

    def __init__(self, burst: int = 5, period: float = 10.0) -> None:
        super().__init__()
        self.burst = burst
        self.period = period
        self._windows: dict[tuple[str, object], tuple[float, int, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.msg)
        now = time.monotonic()
        start, count, dropped = self._windows.get(key, (now, 0, 0))
        if now - start >= self.period:
            start, count = now, 0
        if count >= self.burst:
            self._windows[key] = (start, count, dropped + 1)
            return False
        if len(self._windows) > 1000:  # bounded, whatever the templates
            self._windows.clear()
        self._windows[key] = (start, count + 1, 0)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar line(s) suppressed)"
            record.args = None
        return True


CLIENT_LOGGERS = ("wghybrid.clients", "wghybrid.asyncio")
"""Loggers about what clients (or the event loop on their behalf) did wrong: one line per
record, rate-limited."""


def setup_logging(level: str) -> None:
    """Route the "wghybrid" loggers to the journal or stderr at `level` ("info", "debug", ...).

    Calling it again replaces the handler it installed before (tests, reconfiguration).
    """
    name = level.strip().lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    logger = logging.getLogger("wghybrid")
    for old in [h for h in logger.handlers if getattr(h, "_wghybrid", False)]:
        logger.removeHandler(old)
        old.close()
    handler = make_handler(stderr_is_journal())
    handler._wghybrid = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(name.upper())
    logger.propagate = False
    for child in CLIENT_LOGGERS:
        clients = logging.getLogger(child)
        for f in [f for f in clients.filters if isinstance(f, OneLine | RateLimit)]:
            clients.removeFilter(f)
        clients.addFilter(RateLimit())
        clients.addFilter(OneLine())
    # Libraries' own records (aiohttp, asyncio) get the same handler, hence a timestamp and
    # a level, instead of logging's bare last-resort lines; warnings and worse only.
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_wghybrid", False)]:
        root.removeHandler(old)
        old.close()
    library = make_handler(stderr_is_journal())
    library._wghybrid = True  # type: ignore[attr-defined]
    library.setLevel(logging.WARNING)
    library.addFilter(RateLimit())
    root.addHandler(library)
