"""A bad-input corpus for every reader of outside data: the API's override body, the state
file, the policy loader, token and certificate files, the CLI's --url (issue 11).

Each reader must answer bad input with its own error (ApiError with a 4xx, StateError /
ValueError, PolicyError, ClientError), never another exception. Hand-written cases cover
each class the issue names; hypothesis throws arbitrary JSON at the same readers.
"""

from __future__ import annotations

import contextlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wghybrid._files import FileReadError, read_regular
from wghybrid.cli.client import ClientError, check_url, read_token, tls_context
from wghybrid.daemon.api.access import token_role
from wghybrid.daemon.api.base import Access, ApiError, Role
from wghybrid.daemon.api.routes import parse_override
from wghybrid.daemon.state import StateError, StateStore, state_from_dict
from wghybrid.model import (
    BadKeyError,
    InterfaceStatus,
    Mode,
    PeerClass,
    PeerStatus,
    control_character,
    control_pattern,
    decode_key,
    encode_key,
)
from wghybrid.policy.load import PolicyError, load_policy, policy_from_dict

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
KEY = bytes(range(1, 33))
PEER = PeerStatus("wg0", KEY, "alice", Mode.INLINE, PeerClass.MOUSE, False, 0, 0, 0, 3, 1)
SNAPSHOT = (InterfaceStatus("wg0", frozenset(range(8)), frozenset(), frozenset(), False, (PEER,)),)
GOOD = {"interface": "wg0", "public_key": encode_key(KEY), "mode": "vanilla"}
HUGE = int("1" + "0" * 400)


def refused(body: Any) -> ApiError:
    with pytest.raises(ApiError) as exc:
        parse_override(body, SNAPSHOT, NOW)
    assert 400 <= exc.value.status < 500
    return exc.value


# ---------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("field", ["expires_in", "expires"])
@pytest.mark.parametrize("value", [HUGE, -HUGE, 1 << 63, 1e308, -1e308, 0, -0.0])
def test_out_of_range_numbers_are_a_4xx(field: str, value: float) -> None:
    assert refused({**GOOD, field: value}).field == field


@pytest.mark.parametrize("value", [HUGE, -1, 1 << 20, 2.0, True, "3", [1]])
def test_bad_cores_are_a_400(value: object) -> None:
    assert refused({**GOOD, "core": value}).status == 400


def test_null_counts_as_absent_beside_the_other_expiry() -> None:
    o = parse_override({**GOOD, "expires_in": None, "expires": NOW + 60}, SNAPSHOT, NOW)
    assert o.expires == NOW + 60
    o = parse_override({**GOOD, "expires_in": 60, "expires": None}, SNAPSHOT, NOW)
    assert o.expires == NOW + 60
    assert refused({**GOOD, "expires_in": 60, "expires": NOW + 60}).field == "expires"


# ---------------------------------------------------------------------------
# strings


@pytest.mark.parametrize(
    "char", ["\x00", "\t", "\n", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e",
             "\u200b", "\u2066", "\ufeff", "\u00ad", "\ud800", "\udfff"],
)
def test_control_and_format_characters_in_a_reason_are_a_400(char: str) -> None:
    err = refused({**GOOD, "reason": f"ok {char} not"})
    assert err.field == "reason" and f"U+{ord(char):04X}" in err.message


@pytest.mark.parametrize("reason", ["plain", "é ü 中文 🙂", "a\u00a0b", "x" * 1024])
def test_printable_reasons_are_accepted(reason: str) -> None:
    assert parse_override({**GOOD, "reason": reason}, SNAPSHOT, NOW).reason == reason


def test_a_reason_too_long_is_a_400() -> None:
    assert refused({**GOOD, "reason": "x" * 1025}).field == "reason"


def test_the_openapi_pattern_is_the_daemons_rule() -> None:
    import re

    doc = json.loads(resources.files("wghybrid").joinpath("openapi.json").read_text())
    pattern = doc["components"]["schemas"]["OverrideRequest"]["properties"]["reason"]["pattern"]
    assert pattern == control_pattern()
    compiled = re.compile(pattern)
    for c in map(chr, range(0x10000)):
        if 0xD800 <= ord(c) <= 0xDFFF:
            continue
        assert (compiled.fullmatch(c) is None) == (control_character(c) is not None), hex(ord(c))


@pytest.mark.parametrize("field", ["interface", "public_key", "mode", "reason"])
@pytest.mark.parametrize("value", [None, 1, [], {}, "x" * 70000])
def test_wrong_types_and_huge_strings_are_a_4xx(field: str, value: object) -> None:
    body = {**GOOD, field: value}
    if field in ("mode", "reason") and value is None:
        return  # null counts as absent
    refused(body)


# ---------------------------------------------------------------------------
# keys


def test_non_canonical_keys_are_refused_everywhere() -> None:
    canonical = encode_key(KEY)
    last = canonical[-2]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    index = alphabet.index(last)
    for extra in (1, 2, 3):  # the 2 unused low bits set
        other = canonical[:-2] + alphabet[index + extra] + "="
        with pytest.raises(BadKeyError, match="not canonical"):
            decode_key(other)
        assert refused({**GOOD, "public_key": other}).field == "public_key"
    assert decode_key(canonical) == KEY


@pytest.mark.parametrize(
    "text", ["", "=" * 44, "A" * 44, "A" * 43 + "==", "é" * 43 + "=", " " + "A" * 42 + "=",
             "A" * 42 + "==", "\x00" * 44, "A" * 10000],
)
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(BadKeyError):
        decode_key(text)


# ---------------------------------------------------------------------------
# properties: arbitrary JSON never raises anything but ApiError / ValueError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
override_fields = st.sampled_from(
    ["interface", "public_key", "mode", "core", "expires_in", "expires", "reason", "x"]
)


@settings(max_examples=300)
@given(st.dictionaries(override_fields, json_values | st.integers(-(10**400), 10**400)))
def test_any_override_body_is_parsed_or_refused_with_a_4xx(body: dict[str, Any]) -> None:
    body = {**GOOD, **body} if "public_key" not in body else body
    try:
        parse_override(body, SNAPSHOT, NOW)
    except ApiError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=300)
@given(json_values | st.fixed_dictionaries(
    {"version": st.just(1), "overrides": st.lists(
        st.dictionaries(override_fields, json_values | st.integers(-(10**400), 10**400)),
        max_size=3)}))
def test_any_state_document_is_loaded_or_refused_with_a_value_error(doc: Any) -> None:
    with contextlib.suppress(ValueError):
        state_from_dict(doc)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["name", "interval", "cores", "interfaces", "classify",
                                        "names", "restore_on_stop"]), json_values, max_size=4))
def test_any_policy_document_is_loaded_or_refused_with_a_policy_error(doc: Any) -> None:
    with contextlib.suppress(PolicyError):
        policy_from_dict(doc, "<fuzz>", online_cores=8)


# ---------------------------------------------------------------------------
# files: FIFO, devices, directories, empty, BOM, size limits


def _odd(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"odd-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dev-null":
        path.symlink_to("/dev/null")
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "dangling":
        path.symlink_to(tmp_path / "nowhere")
    return path


KINDS = ["fifo", "dev-zero", "dev-null", "directory", "missing", "dangling"]


@pytest.mark.parametrize("kind", KINDS)
def test_odd_files_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = _odd(tmp_path, kind)
    with pytest.raises(FileReadError):
        read_regular(path, 1000)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(path, online_cores=1)
    with pytest.raises(ClientError):
        read_token(path)
    with pytest.raises(ClientError):
        tls_context(str(path))


def test_size_limits(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(FileReadError, match="larger than the limit"):
        read_regular(path, 1000)
    assert read_regular(path, 1001) == b"x" * 1001


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "the file is empty"),
        (b"  \n\n", "the file is empty"),
        (b'\xef\xbb\xbfname = "x"\n', "byte-order mark"),
        (b"\xff\xfe", "not UTF-8"),
        (b"interfaces = [" + b'"wg0",' * 1 + b"]\n" + b"interval = 1" + b"0" * 400 + b"\n",
         "out of range"),
    ],
)
def test_bad_policy_files(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=reason):
        load_policy(path, online_cores=1)


def test_a_200000_interface_list_is_refused(tmp_path: Path) -> None:
    names = ", ".join(f'"wg{i}"' for i in range(200_000))
    path = tmp_path / "p.toml"
    path.write_text(f'name = "big"\ninterfaces = [{names}]\n')
    with pytest.raises(PolicyError, match="more than the limit"):
        load_policy(path, online_cores=1)


def test_a_policy_of_comments_only_is_every_default(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("# every default\n")
    assert load_policy(path, online_cores=1).name


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_a_state_file_that_is_not_regular_is_a_state_error(tmp_path: Path, kind: str) -> None:
    odd = _odd(tmp_path, kind)
    odd.rename(tmp_path / "state.json")
    with pytest.raises(StateError, match="not a regular file"):
        StateStore(tmp_path).load()


def test_a_401_digit_number_in_the_state_is_a_state_error(tmp_path: Path) -> None:
    doc = {"version": 1, "overrides": [{**GOOD, "expires": HUGE}]}
    (tmp_path / "state.json").write_text(json.dumps(doc))
    with pytest.raises(StateError, match="out of range"):
        StateStore(tmp_path).load()


# ---------------------------------------------------------------------------
# the CLI's connection options; tokens and roles


@pytest.mark.parametrize(
    "url, reason",
    [
        ("not-a-url", "no scheme"),
        ("ftp://host:1", "unsupported scheme 'ftp'"),
        ("http://host:99999", "out of range"),
        ("http://host:port", "Port could not be cast"),
        ("http://:80", "no host"),
        ("http://host:0", "port 0"),
        ("http://host:80/v1/status", "only the scheme, host and port"),
    ],
)
def test_bad_urls_are_named(url: str, reason: str) -> None:
    with pytest.raises(ClientError) as exc:
        check_url(url)
    assert str(exc.value).startswith(f"--url {url!r}: ") and reason in str(exc.value)


def test_good_urls() -> None:
    for url in ("http://127.0.0.1:8080", "https://[::1]:8443/", "https://gw.example"):
        assert check_url(url) == url


def test_a_cacert_that_is_not_a_certificate_is_named(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n")
    with pytest.raises(ClientError, match="not a PEM CA certificate"):
        tls_context(str(path))


def test_token_roles() -> None:
    access = Access(admin_token="a" * 20, read_token="r" * 20)
    assert token_role(access, "Bearer " + "a" * 20) is Role.ADMIN
    assert token_role(access, "bearer " + "r" * 20) is Role.READ
    for bad in (None, "", "Bearer", "Basic " + "a" * 20, "Bearer " + "a" * 19, "Bearer \udcff"):
        assert token_role(access, bad) is None
    assert token_role(Access(read_token="r" * 20), "Bearer " + "a" * 20) is None


# ---------------------------------------------------------------------------
# log lines about bad clients: one line, a level, rate-limited


def test_client_log_records_are_one_rate_limited_line() -> None:
    import logging

    from wghybrid._log import OneLine, RateLimit

    limit, one = RateLimit(burst=3, period=3600), OneLine()
    kept = []
    for i in range(10):
        try:
            raise ValueError(f"bad\nthing {i}")
        except ValueError:
            import sys

            record = logging.LogRecord(
                "wghybrid.clients", logging.ERROR, __file__, 1, "Error handling request from %s",
                ("peer",), sys.exc_info(),
            )
        if limit.filter(record) and one.filter(record):
            kept.append(record)
    assert len(kept) == 3
    assert all(r.exc_info is None and r.levelname == "WARNING" for r in kept)
    assert kept[0].getMessage() == "Error handling request from peer: ValueError: bad thing 0"
