"""The kernel layer's stage times and resolved kernels, in pytest's summary."""

from __future__ import annotations

import pytest
from test_kmod import LOG_KEY


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(LOG_KEY, [])
    if lines:
        terminalreporter.section("kernel layer (kmod/harness/run.sh)")
        for line in lines:
            terminalreporter.write_line(line)
