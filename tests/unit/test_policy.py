"""The policy loader: every kind of bad file is rejected with file, key and reason; every
shipped policy loads and is documented; fuzzed documents never raise anything but
PolicyError; accepted policies round-trip through policy_to_dict."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from wghybrid.model import encode_key
from wghybrid.policy import Classify, Metrics, NameImport, NapiPolicy, Placement, Policy, Stall
from wghybrid.policy.load import (
    PolicyError,
    _dotted,
    load_policy,
    parse_policy,
    policy_from_dict,
    policy_to_dict,
    shipped_policy_dir,
    shipped_policy_path,
    validate_command,
)

pytestmark = pytest.mark.unit

HERE = Path(__file__).parent
BAD = sorted((HERE / "policies" / "bad").glob("*.toml"))
GOOD = HERE / "policies" / "good"
SHIPPED = sorted((Path(__file__).parents[2] / "policies").glob("*.toml"))

KEY_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_B = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="


def expectation(path: Path) -> dict[str, str]:
    """A bad fixture's header: "# key: ...", "# reason: ...", optional line/column/online_cores."""
    out: dict[str, str] = {}
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        m = re.fullmatch(r"# (key|reason|line|column|online_cores):(.*)", line)
        if m:
            out[m[1]] = m[2].strip()
    assert "key" in out and "reason" in out, f"{path.name} lacks its # key:/# reason: header"
    return out


# ---------------------------------------------------------------------------
# Bad files: one fixture per kind, each naming the key and the reason it must be rejected with


def test_there_is_a_bad_fixture_for_every_kind_the_issue_names() -> None:
    stems = {p.stem for p in BAD}
    for kind in (
        "unknown_key",
        "wrong_type_bool_for_number",
        "interval_zero",
        "demote_equals_promote",
        "cores_do_not_exist",
        "names_key_not_base64",
        "names_duplicate_name",
        "toml_syntax_error",
        "interface_name_too_long",
    ):
        assert kind in stems


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_file_is_rejected_naming_file_key_and_reason(path: Path) -> None:
    want = expectation(path)
    with pytest.raises(PolicyError) as info:
        load_policy(path, online_cores=int(want.get("online_cores", "32")))
    err = info.value
    assert err.file == str(path)
    assert err.key == want["key"]
    assert want["reason"] in err.reason
    if "line" in want:
        assert (err.line, err.column) == (int(want["line"]), int(want.get("column", err.column)))
    text = str(err)
    assert "\n" not in text
    where = err.key or (f"line {err.line}, column {err.column}" if err.line else "")
    assert text == (f"{path}: {where}: {err.reason}" if where else f"{path}: {err.reason}")
    code, message = validate_command(str(path), int(want.get("online_cores", "32")))
    assert (code, message) == (1, text)


def test_policy_error_is_a_value_error_with_its_parts() -> None:
    err = PolicyError("p.toml", "classify.demote_gbps", "too high")
    assert isinstance(err, ValueError)
    assert str(err) == "p.toml: classify.demote_gbps: too high"


def test_missing_file_is_one_line_naming_it() -> None:
    code, message = validate_command("/nonexistent/policy.toml", 4)
    assert code == 1
    assert message == "/nonexistent/policy.toml: cannot read: No such file or directory"


def test_cores_are_checked_against_the_given_machine() -> None:
    text = 'cores = "0-31"\n'
    assert parse_policy(text, "p", online_cores=32).cores == frozenset(range(32))
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p", online_cores=16)
    assert info.value.key == "cores"
    assert "16-31 do not exist" in info.value.reason


def test_no_online_cores_means_this_machines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert parse_policy('cores = "2"\n[placement]\nvanilla_pool_min = 1').cores == {2}
    with pytest.raises(PolicyError, match="core.s. 3 do not exist"):
        parse_policy('cores = "0-3"')


def test_a_later_bad_key_rejects_the_whole_file() -> None:
    # Everything before the bad key is fine; nothing of it may come back.
    text = 'name = "x"\ninterval = 2\n[classify]\npromote_gbps = 4\n[placement]\nmax_moves = 0\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p", 32)
    assert info.value.key == "placement.max_moves"


def test_unknown_key_far_from_any_known_key_gets_no_suggestion() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("zzz = 1", "p", 32)
    assert info.value.reason == "unknown key"


def test_deeply_nested_toml_is_a_policy_error_not_a_crash() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("cores = " + "[" * 5000 + "]" * 5000, "deep.toml", 32)
    assert info.value.reason == "invalid TOML: nested too deeply"


def test_odd_keys_are_quoted_so_the_message_stays_one_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy('"a\\nb.c" = 1', "p", 32)
    assert info.value.key == '"a\\u000ab.c"'
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------
# Good files


def test_every_key_of_a_full_file_arrives() -> None:
    policy = load_policy(GOOD / "full.toml", online_cores=32)
    assert policy == Policy(
        name="lab",
        description="Two lines\nof description.",
        interval=0.25,
        smoothing=0.0,
        cores=frozenset({0, 1, 2, 3, 8}),
        interfaces=frozenset({"wg0", "wg-lab.12"}),
        restore_on_stop=True,
        classify=Classify(
            promote_gbps=3.0, demote_gbps=0.0, inline_saturation=1.0, min_dwell=0.0,
            latent_heat=0.5,
        ),
        placement=Placement(
            max_moves=1, migrate_improvement=0.0, vanilla_pool_min=5, pool_headroom=0.0,
            core_capacity=0.5, threaded_napi=NapiPolicy.OFF,
        ),
        names={base64.b64decode(KEY_A): "branch office", base64.b64decode(KEY_B): "café-Ω"},
        source=str(GOOD / "full.toml"),
    )
    assert isinstance(policy.classify.promote_gbps, float)
    assert isinstance(policy.placement.max_moves, int)


def test_empty_file_is_the_built_in_defaults() -> None:
    path = GOOD / "empty.toml"
    assert load_policy(path, online_cores=1) == Policy(source=str(path))
    assert parse_policy("") == Policy(source="<string>")


def test_cores_array_and_dotted_keys() -> None:
    policy = load_policy(GOOD / "cores_array.toml", online_cores=8)
    assert policy.cores == {0, 1, 2, 7}
    assert policy.classify.promote_gbps == 2.5
    assert policy.placement.threaded_napi is NapiPolicy.ON


def test_validate_command_ok_is_one_line() -> None:
    path = str(GOOD / "full.toml")
    code, message = validate_command(path, 32)
    assert code == 0
    assert message.startswith(f"{path}: OK: policy 'lab': cores 0-3,8 (5)")
    assert "\n" not in message


def test_policy_to_dict_is_json_ready_with_base64_keys() -> None:
    policy = load_policy(GOOD / "full.toml", online_cores=32)
    data = json.loads(json.dumps(policy_to_dict(policy), allow_nan=False))
    assert data["names"] == {KEY_B: "café-Ω", KEY_A: "branch office"}
    assert data["cores"] == "0-3,8"
    assert data["interfaces"] == ["wg-lab.12", "wg0"]
    assert data["placement"]["threaded_napi"] == "off"
    assert data["source"] == str(GOOD / "full.toml")
    default = policy_to_dict(Policy())
    assert (default["cores"], default["interfaces"]) == ("all", "all")


# ---------------------------------------------------------------------------
# Shipped policies


def key_comments(path: Path) -> dict[str, str]:
    """Each assigned key of a shipped file -> the comment block right above it."""
    out: dict[str, str] = {}
    table = ""
    block: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#"):
            block.append(line)
        elif m := re.fullmatch(r"\[(\w+)\]", line):
            table, block = m[1], []
        elif m := re.match(r"(\w+)\s*=", line):
            out[f"{table}.{m[1]}" if table else m[1]] = " ".join(block)
            block = []
        elif not line:
            continue
        else:
            raise AssertionError(f"{path.name}: unexpected line {raw!r}")
    return out


ALL_KEYS = (
    {f.name for f in dataclasses.fields(Policy)}
    - {"classify", "placement", "metrics", "stall", "name_import", "names", "source",
       "file_names", "name_origin", "name_warnings"}
) | {f"classify.{f.name}" for f in dataclasses.fields(Classify)} | {
    f"placement.{f.name}" for f in dataclasses.fields(Placement)
} | {f"metrics.{f.name}" for f in dataclasses.fields(Metrics)} | {
    f"stall.{f.name}" for f in dataclasses.fields(Stall)
} | {
    f"name_import.{f.name}" for f in dataclasses.fields(NameImport)
}


def test_policies_directory_holds_default_and_another_goal() -> None:
    names = {p.stem for p in SHIPPED}
    assert "default" in names and len(names) >= 2
    assert shipped_policy_dir() == SHIPPED[0].parent
    assert shipped_policy_path("efficiency") == shipped_policy_dir() / "efficiency.toml"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_policy_loads_on_the_model_and_here(path: Path) -> None:
    on_model = load_policy(path, online_cores=32)
    here = load_policy(path)
    assert on_model.name == path.stem
    assert on_model == here
    assert validate_command(str(path), 32)[0] == 0


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_policy_sets_and_comments_every_key(path: Path) -> None:
    comments = key_comments(path)
    assert set(comments) == ALL_KEYS
    for key, comment in comments.items():
        assert "Default:" in comment, f"{path.name}: {key} does not state its default"
    # [names] is a table of peers, not keys: it must still be explained.
    assert "[names]" in path.read_text()


def test_default_file_states_the_built_in_defaults() -> None:
    # So that "a key left out takes the value in default.toml" is true.
    policy = load_policy(shipped_policy_path("default"), online_cores=32)
    built_in = Policy()
    assert policy.classify == built_in.classify
    assert policy.placement == built_in.placement
    assert policy.metrics == built_in.metrics
    assert policy.name_import == built_in.name_import
    for f in ("interval", "smoothing", "cores", "interfaces", "restore_on_stop", "names"):
        assert getattr(policy, f) == getattr(built_in, f)


def test_efficiency_policy_is_more_conservative_than_default() -> None:
    default = load_policy(shipped_policy_path("default"), 32)
    eff = load_policy(shipped_policy_path("efficiency"), 32)
    assert eff.classify.promote_gbps > default.classify.promote_gbps
    assert eff.classify.min_dwell > default.classify.min_dwell
    assert eff.placement.pool_headroom < default.placement.pool_headroom


# ---------------------------------------------------------------------------
# Fuzzing: only PolicyError ever escapes; accepted policies round-trip


TOP = ["name", "description", "interval", "smoothing", "cores", "interfaces", "restore_on_stop"]
CLASSIFY = [f.name for f in dataclasses.fields(Classify)]
PLACEMENT = [f.name for f in dataclasses.fields(Placement)]
METRICS = [f.name for f in dataclasses.fields(Metrics)]

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-3, max_value=40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=5),
    st.text(max_size=20),
    st.sampled_from(
        ["all", "auto", "on", "off", "0-1", "1", "0-40", "5-2", "", "wg0", "wg1", KEY_A, "x"]
    ),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
odd_keys = st.text(min_size=1, max_size=12)
valid_keys = st.binary(min_size=32, max_size=32).map(encode_key)
names_tables = st.dictionaries(
    st.one_of(st.sampled_from([KEY_A, KEY_B]), valid_keys, st.text(max_size=44)),
    st.one_of(st.text(max_size=10), scalars),
    max_size=4,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Plausible values seven times in eight, anything at all otherwise."""
    return st.one_of(*([good] * 7), values)


def fraction(lo: float = 0.0, hi: float = 1.0) -> st.SearchStrategy[float]:
    return st.floats(min_value=lo, max_value=hi)


PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "name": st.text(st.characters(categories=["L", "N", "P", "Zs"]), min_size=1, max_size=70),
    "description": st.text(max_size=50),
    "interval": fraction(1e-3, 3600) | st.integers(1, 4000),
    "smoothing": fraction(0, 3600) | st.integers(0, 10),
    "cores": st.sampled_from(["all", "0", "0-1", "0-31", "0,2-5", "8-40"])
    | st.lists(st.integers(0, 33), max_size=6),
    "interfaces": st.just("all")
    | st.lists(st.from_regex(r"[a-z0-9.-]{1,15}|wg[0-9/: ]{1,2}", fullmatch=True), max_size=3),
    "restore_on_stop": st.booleans(),
    "promote_gbps": fraction(0, 10) | st.integers(0, 10),
    "demote_gbps": fraction(0, 5),
    "inline_saturation": fraction(),
    "min_dwell": fraction(0, 100),
    "latent_heat": fraction(0, 100),
    "probe_gain": fraction(0, 12),
    "demand_decay": fraction(0, 100),
    "max_moves": st.integers(0, 100),
    "migrate_improvement": fraction(),
    "vanilla_pool_min": st.integers(0, 4),
    "pool_headroom": fraction(0, 0.6),
    "core_capacity": fraction(),
    "threaded_napi": st.sampled_from(["auto", "on", "off", "yes"]),
    "min_gain": fraction(0, 1.2),
    "nic_steering": st.booleans(),
    "per_peer_max": st.integers(-1, 20_000_000) | fraction(0, 10),
}


def table(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: mostly(PLAUSIBLE[k]) for k in keys})


documents = st.builds(
    lambda top, extra, sections: {**top, **extra, **sections},
    table(TOP),
    st.one_of(st.just({}), st.just({}), st.just({}), st.dictionaries(odd_keys, values, max_size=1)),
    st.fixed_dictionaries(
        {},
        optional={
            "classify": mostly(table(CLASSIFY)),
            "placement": mostly(table(PLACEMENT)),
            "metrics": mostly(table(METRICS)),
            "names": mostly(st.dictionaries(valid_keys, st.text(min_size=1, max_size=8),
                                            max_size=3)) | names_tables,
        },
    ),
)


def dotted_keys(doc: dict[str, Any]) -> set[str]:
    keys = {_dotted("", k) for k in doc}
    for k, v in doc.items():
        if isinstance(v, dict):
            keys |= {_dotted(_dotted("", k), sub) for sub in v}
    return keys


def check_round_trip(policy: Policy, source: str) -> None:
    data = policy_to_dict(policy)
    assert data.pop("source") == source
    json.dumps(data, allow_nan=False)
    assert policy_from_dict(data, source, 64) == policy
    assert parse_policy(tomli_w.dumps(data), source, 64) == policy


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_fuzzed_documents_give_a_policy_or_one_policy_error(doc: dict[str, Any]) -> None:
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        reject()  # not representable in TOML
    for attempt in (lambda: parse_policy(text, "f.toml", 32),
                    lambda: policy_from_dict(doc, "f.toml", 32)):
        try:
            policy = attempt()
        except PolicyError as err:
            assert err.file == "f.toml"
            assert "\n" not in str(err)
            # The key named is one the document actually has (or none, for syntax).
            assert err.key == "" or err.key in dotted_keys(doc)
        else:
            check_round_trip(policy, "f.toml")


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_random_text_gives_a_policy_or_one_policy_error(text: str) -> None:
    try:
        policy = parse_policy(text, "t.toml", 4)
    except PolicyError as err:
        assert "\n" not in str(err)
    else:
        check_round_trip(policy, "t.toml")


DEFAULT_TEXT = (Path(__file__).parents[2] / "policies" / "default.toml").read_text()


@settings(max_examples=300)
@given(st.data())
def test_mutated_default_file_gives_a_policy_or_one_policy_error(data: st.DataObject) -> None:
    lines = [ln for ln in DEFAULT_TEXT.splitlines() if ln and not ln.startswith("#")]
    i = data.draw(st.integers(0, len(lines) - 1))
    edit = data.draw(st.sampled_from(["delete", "replace_value", "insert", "duplicate"]))
    if edit == "delete":
        del lines[i]
    elif edit == "replace_value" and "=" in lines[i]:
        key = lines[i].split("=")[0]
        lines[i] = key + "= " + data.draw(st.sampled_from(
            ["0", "-1", "1e400", "nan", "true", '"all"', '"0-99"', "[]", "{}", "3600.5", "0.5",
             '"auto"', "2", "1.0", "0.99", '"wg0"']))
    elif edit == "insert":
        lines.insert(i, data.draw(st.text(max_size=30)))
    else:
        lines.insert(i, lines[i])
    text = "\n".join(lines)
    try:
        policy = parse_policy(text, "m.toml", 32)
    except PolicyError as err:
        assert "\n" not in str(err)
    else:
        check_round_trip(policy, "m.toml")


finite = {"allow_nan": False, "allow_infinity": False}
valid_policies = st.builds(
    lambda promote, demote_frac, **kw: Policy(
        classify=Classify(
            promote_gbps=promote, demote_gbps=promote * demote_frac, **kw.pop("classify")
        ),
        **kw,
    ),
    promote=st.floats(min_value=1e-3, max_value=10_000, **finite),
    demote_frac=st.floats(min_value=0, max_value=0.999, **finite),
    name=st.text(min_size=1, max_size=64).filter(lambda s: s.strip() and s.isprintable()),
    description=st.text(max_size=100),
    interval=st.floats(min_value=1e-3, max_value=3600, **finite),
    smoothing=st.floats(min_value=0, max_value=3600, **finite),
    cores=st.none() | st.frozensets(st.integers(0, 63), min_size=8, max_size=64),
    interfaces=st.none() | st.frozensets(st.from_regex(r"[a-z][a-z0-9.-]{0,14}", fullmatch=True),
                                         min_size=1, max_size=4),
    restore_on_stop=st.booleans(),
    classify=st.fixed_dictionaries({
        "inline_saturation": st.floats(min_value=0.01, max_value=1, **finite),
        "min_dwell": st.floats(min_value=0, max_value=86_400, **finite),
        "latent_heat": st.floats(min_value=0, max_value=3600, **finite),
    }),
    placement=st.builds(
        Placement,
        max_moves=st.integers(1, 1_000_000),
        migrate_improvement=st.floats(min_value=0, max_value=1, **finite),
        vanilla_pool_min=st.integers(1, 8),
        pool_headroom=st.floats(min_value=0, max_value=0.49, **finite),
        core_capacity=st.floats(min_value=0.01, max_value=1, **finite),
        threaded_napi=st.sampled_from(NapiPolicy),
    ),
    names=st.dictionaries(
        st.binary(min_size=32, max_size=32),
        st.from_regex(r"[\w][\w .-]{0,20}", fullmatch=True).filter(lambda s: s.isprintable()),
        max_size=5,
    ).filter(lambda d: len(set(d.values())) == len(d)),
    source=st.just("v.toml"),
)


@settings(max_examples=200)
@given(valid_policies)
def test_valid_policies_round_trip_through_the_file_layout(policy: Policy) -> None:
    check_round_trip(policy, "v.toml")
