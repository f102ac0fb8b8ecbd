"""wghybrid/cli/events.py: `wghybrid log` and `wghybrid explain`, their arguments and
rendering (the daemon end to end: tests/sim/test_events_e2e.py)."""

from __future__ import annotations

import pytest

from wghybrid import cli
from wghybrid.cli import events as cli_events

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv, message", [
    (["log", "--since", "x"], "bad event id 'x'"),
    (["log", "--since", "-1"], "bad event id '-1'"),
    (["log", "--since", "１"], "bad event id '１'"),  # a full-width digit
    (["log", "--limit", "0"], "bad limit '0'"),
    (["log", "--limit", "1001"], "bad limit '1001'"),
    (["log", "--limit", "99999999999999999999"], "bad limit"),
    (["explain", "wg0"], "the following arguments are required: PEER"),
    (["explain"], "the following arguments are required: IFACE, PEER"),
    (["log", "wg0", "p", "extra"], "unrecognized arguments: extra"),
])
def test_bad_arguments_exit_2_naming_them(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_parse() -> None:
    args = cli.build_parser().parse_args(["log", "-f", "--since", "7", "--limit", "5",
                                          "--json", "wg0", "mouse-1"])
    assert (args.follow, args.since, args.limit, args.json) == (True, 7, 5, True)
    assert (args.interface, args.peer) == ("wg0", "mouse-1")
    assert args.handler is cli_events.cmd_log
    args = cli.build_parser().parse_args(["explain", "wg0", "mouse-1"])
    assert args.handler is cli_events.cmd_explain and not getattr(args, "json", False)


def test_rendering_is_one_printable_line() -> None:
    line = cli_events.render_event({"seq": 12, "time": 0, "text": "[#] peer wg0/x\x1b[2J mode"})
    assert line.startswith("    12 ") and "\x1b" not in line and "wg0/x?[2J mode" in line
    assert cli_events.render_event({"seq": 1, "time": "bad", "text": "t"}) == "     1 ? t"
    assert cli_events.render_explain({"text": ["a\u202eb", "c"]}) == "a?b\nc\n"
