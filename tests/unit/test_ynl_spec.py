"""kmod/spec/wghybrid.yaml, the family's YNL spec, says what the uapi header, the policy
tables and ops of both patch series, the daemon's pyroute2 reader and the harness'
client say (issue 12, finding 10). The spec is read with YNL's own rules (tests/
ynlspec.py); its validation against the kernel's schema and ynl-gen-c's header are in
tests/kernel/test_ynl.py (they need linux-source)."""

from __future__ import annotations

from pathlib import Path

import pytest
import ynlspec as y

pytestmark = pytest.mark.unit

SERIES = {p.parent.name: p for p in y.series()}


@pytest.fixture(scope="module")
def spec() -> y.Spec:
    return y.load_spec()


def test_spec_matches_the_uapi_header(spec: y.Spec) -> None:
    """Family name and version, every const, the mode, attribute and command enums
    (values and MAX) and the record's members, sizes and offsets as gcc lays out
    struct wgh_peer_record (the gcc check itself: tests/kernel/test_ynl.py) and as the
    header's comment tabulates them."""
    y.check_header(spec, y.HEADER.read_text())


@pytest.mark.parametrize("line", sorted(SERIES))
def test_spec_matches_the_policy_table(spec: y.Spec, line: str) -> None:
    """wgh_policy[] of the series is the spec's global policy, entry by entry."""
    y.check_policy(spec, SERIES[line].read_text(), y.HEADER.read_text())


@pytest.mark.parametrize("line", sorted(SERIES))
def test_spec_matches_the_genl_ops(spec: y.Spec, line: str) -> None:
    y.check_ops(spec, SERIES[line].read_text(), y.HEADER.read_text())


def test_spec_matches_the_daemons_reader(spec: y.Spec) -> None:
    y.check_daemon(spec)


def test_spec_matches_the_harness_client(spec: y.Spec) -> None:
    y.check_guest_client(spec)


def test_the_spec_has_every_number_it_should(spec: y.Spec) -> None:
    """So that the next test covers them: every attribute, command and enum entry has
    an explicit value, so an ABI number is one line of the spec."""
    paths = {p for p, _ in y.numbers(spec)}
    for i, _ in enumerate(y.attr_set(spec)["attributes"]):
        assert ("attribute-sets", 0, "attributes", i, "value") in paths
    for i, _ in enumerate(spec["operations"]["list"]):
        assert ("operations", "list", i, "value") in paths
    assert len(paths) >= 29


def _numbers() -> list[tuple[tuple[object, ...], int]]:
    return y.numbers(y.load_spec())


@pytest.mark.parametrize("path,value", _numbers(), ids=lambda v: "/".join(map(str, v))
                         if isinstance(v, tuple) else str(v))
def test_a_changed_number_is_refused(spec: y.Spec, path: tuple[object, ...],
                                     value: int) -> None:
    """Each number of the spec, one at a time, plus one: some check above refuses the
    spec (none of them passes a number it does not compare)."""
    changed = y.with_number(spec, path, value + 1)
    with pytest.raises(AssertionError):
        y.check_all(changed)


def test_checks_read_the_files_they_name() -> None:
    assert Path(y.ROOT, "kmod/spec/wghybrid.yaml") == y.SPEC and y.SPEC.is_file()
    assert sorted(SERIES) == sorted(p.name for p in y.PATCHES.iterdir() if p.is_dir())
