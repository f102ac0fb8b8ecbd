"""bench/cli_latency.py's pure parts (the run itself: tests/sim/test_cli_latency_run.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cli_latency.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wghybrid_bench_cli_latency", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summarise_median_p90_max() -> None:
    cl = load()
    got = cl.summarise([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 100.0])
    assert got == {"median_ms": 5.5, "p90_ms": 100.0, "max_ms": 100.0, "min_ms": 1.0}
    assert cl.summarise([7.0]) == {"median_ms": 7.0, "p90_ms": 7.0, "max_ms": 7.0,
                                   "min_ms": 7.0}


def test_the_default_commands_are_read_only_and_exist() -> None:
    from wghybrid import cli

    cl = load()
    parser = cli.build_parser()
    for command in cl.COMMANDS:
        args = parser.parse_args(command.split())
        name = getattr(args, "command", None)
        assert name in ("version", "status", "dump", "override", "policy"), command
        assert getattr(args, "command_override", None) in (None, "list")
        assert getattr(args, "command_policy", None) in (None, "show")


def test_bad_runs_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load().main(["--runs", "0"])
    assert exc.value.code == 2 and "--runs must be 1 or more" in capsys.readouterr().err
    assert sys.modules.get("wghybrid_bench_cli_latency") is None
