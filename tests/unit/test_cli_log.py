"""wghybrid._log: journal with structured fields under systemd, plain stderr otherwise."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from wghybrid import _log

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    logger = logging.getLogger("wghybrid")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        logger.removeHandler(h)
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def stream_of(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def test_journal_stream_must_name_stderr_itself() -> None:
    with tempfile.TemporaryFile() as f:
        assert _log.stderr_is_journal({"JOURNAL_STREAM": stream_of(f.fileno())}, fd=f.fileno())
        with tempfile.TemporaryFile() as other:
            # stderr redirected elsewhere: JOURNAL_STREAM was inherited, not ours.
            assert not _log.stderr_is_journal(
                {"JOURNAL_STREAM": stream_of(other.fileno())}, fd=f.fileno()
            )
        for bad in ("", "12", "a:b", ":"):
            assert not _log.stderr_is_journal({"JOURNAL_STREAM": bad}, fd=f.fileno())
        assert not _log.stderr_is_journal({}, fd=f.fileno())


def test_plain_lines_on_stderr_outside_systemd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    _log.setup_logging("info")
    log = logging.getLogger("wghybrid.loop")
    log.info("[#] peer wg0/AbCdEfGh mode inline", extra={"WGH_INTERFACE": "wg0"})
    log.debug("not shown at info")
    err = capsys.readouterr().err
    assert err.endswith(" INFO wghybrid.loop: [#] peer wg0/AbCdEfGh mode inline\n")
    assert err.count("\n") == 1


def test_journal_handler_with_structured_fields_under_systemd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from systemd.journal import JournalHandler

    monkeypatch.setenv("JOURNAL_STREAM", stream_of(2))
    _log.setup_logging("DEBUG")
    logger = logging.getLogger("wghybrid")
    (handler,) = [h for h in logger.handlers if getattr(h, "_wghybrid", False)]
    assert isinstance(handler, JournalHandler)
    sent: list[tuple[str, dict[str, Any]]] = []
    handler.send = lambda MESSAGE, **fields: sent.append((MESSAGE, fields))  # type: ignore[attr-defined]
    logging.getLogger("wghybrid.loop").warning(
        "peer %s unmanaged", "wg0/AbCdEfGh",
        extra={"WGH_INTERFACE": "wg0", "WGH_PEER": "AbCdEfGh" + "A" * 35 + "="},
    )
    (msg, fields), = sent
    assert msg == "peer wg0/AbCdEfGh unmanaged"
    assert fields["SYSLOG_IDENTIFIER"] == "wghybrid"
    assert fields["PRIORITY"] == "4"
    assert fields["LOGGER"] == "wghybrid.loop"
    assert fields["WGH_INTERFACE"] == "wg0"
    assert fields["WGH_PEER"].startswith("AbCdEfGh")


def test_setup_twice_keeps_one_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    _log.setup_logging("info")
    _log.setup_logging("warning")
    logger = logging.getLogger("wghybrid")
    assert len([h for h in logger.handlers if getattr(h, "_wghybrid", False)]) == 1
    assert logger.level == logging.WARNING


def test_bad_level() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        _log.setup_logging("loud")
