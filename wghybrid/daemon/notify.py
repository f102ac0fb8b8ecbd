"""systemd's notification socket (READY=1, WATCHDOG=1, STATUS=) and watchdog period."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wghybrid.daemon")


class Notifier:
    """sd_notify(3) through systemd-python, only when systemd gave us a NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self._notify: Callable[[str], Any] | None = None
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                from systemd import daemon as sd_daemon  # type: ignore[attr-defined]
            except ImportError:
                log.warning("NOTIFY_SOCKET is set but systemd-python is not installed")
            else:
                self._notify = sd_daemon.notify

    def __call__(self, message: str) -> None:
        if self._notify is not None:
            self._notify(message)


def watchdog_period(environ: dict[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd set (WATCHDOG_USEC for our PID), or None."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        pid = int(env.get("WATCHDOG_PID", str(os.getpid())))
    except ValueError:
        return None
    if usec <= 0 or pid != os.getpid():
        return None
    return usec / 2e6

