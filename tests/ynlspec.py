"""The YNL spec of the "wghybrid" family (kmod/spec/wghybrid.yaml), read the way the
kernel's YNL tools read it, and the things it must agree with, read as the compiler
and the kernel would: the uapi header's defines, enums and struct, the policy table
and ops of each patch series, the daemon's and the guest client's constants.

Each `check_*` raises AssertionError naming the first disagreement; the tests call
them on the committed spec, and test_ynl_spec.py also on copies of it with one number
changed, each of which some check must refuse.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import operator
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "kmod" / "spec" / "wghybrid.yaml"
HEADER = ROOT / "kmod" / "include" / "uapi" / "linux" / "wghybrid.h"
PATCHES = ROOT / "kmod" / "patches"
GUEST_CLIENT = ROOT / "kmod" / "harness" / "guest" / "wghctl.py"

Spec = dict[str, Any]

SCALAR_SIZE = {"u8": 1, "s8": 1, "u16": 2, "s16": 2, "u32": 4, "s32": 4, "u64": 8, "s64": 8}
C_TYPE = {"__u8": "u8", "__s8": "s8", "__u16": "u16", "__s16": "s16", "__u32": "u32",
          "__s32": "s32", "__u64": "u64", "__s64": "s64"}
NLA_TYPE = {"NLA_U8": "u8", "NLA_U16": "u16", "NLA_U32": "u32", "NLA_U64": "u64",
            "NLA_S8": "s8", "NLA_S16": "s16", "NLA_S32": "s32", "NLA_S64": "s64",
            "NLA_NUL_STRING": "string", "NLA_BINARY": "binary", "NLA_FLAG": "flag",
            "NLA_NESTED": "nest", "NLA_REJECT": "reject"}
KERNEL_DEFINES = {"IFNAMSIZ": 16}  # include/uapi/linux/if.h


def load_spec(path: Path = SPEC) -> Spec:
    spec: Spec = yaml.safe_load(path.read_text())
    return spec


def c_upper(name: str) -> str:
    return name.upper().replace("-", "_")


def c_lower(name: str) -> str:
    return name.lower().replace("-", "_")


# --- the spec, resolved as tools/net/ynl/lib/nlspec.py and ynl-gen-c.py do ----------

def consts(spec: Spec) -> dict[str, dict[str, Any]]:
    """Definitions by their spec name."""
    return {d["name"]: d for d in spec.get("definitions", [])}


def const_c_name(d: dict[str, Any], spec: Spec) -> str:
    """A const's C name: name-prefix + name (the rule of upstream's wireguard.yaml,
    WG_KEY_LEN; linux 6.12's ynl-gen-c still prefixes the family's name instead)."""
    return c_upper(d.get("name-prefix", spec["name"] + "-") + d["name"])


def uapi_consts(spec: Spec) -> dict[str, int]:
    return {const_c_name(d, spec): d["value"] for d in spec["definitions"]
            if d["type"] == "const" and d.get("scope", "uapi") == "uapi" and "header" not in d}


def limit(spec: Spec, value: int | str) -> int:
    """A check's limit: a literal or the name of a const (len-or-define)."""
    if isinstance(value, int):
        return value
    d = consts(spec)[value]
    assert d["type"] == "const", value
    return int(d["value"])


def enum_values(spec: Spec, name: str) -> dict[str, int]:
    """An enum definition's C names and values (value-start 0, each entry + 1 unless
    it says), with WGH_..._MAX if render-max."""
    d = consts(spec)[name]
    prefix = d.get("name-prefix", f"{spec['name']}-{name}-")
    out: dict[str, int] = {}
    val = d.get("value-start", 0)
    for e in d["entries"]:
        e = {"name": e} if isinstance(e, str) else e
        val = e.get("value", val)
        out[c_upper(prefix + e["name"])] = val
        val += 1
    if d.get("render-max"):
        out[c_upper(prefix + "max")] = max(out.values())
    return out


def attr_set(spec: Spec) -> dict[str, Any]:
    (s,) = spec["attribute-sets"]  # the family has one
    return s


def attributes(spec: Spec) -> list[dict[str, Any]]:
    """The attributes with their resolved `value` (1 for the first unless given, then
    the previous + 1) and C `c-name`."""
    s = attr_set(spec)
    out, val = [], 1
    for a in s["attributes"]:
        val = a.get("value", val)
        out.append({**a, "value": val, "c-name": c_upper(s["name-prefix"] + a["name"])})
        val += 1
    return out


def operations(spec: Spec) -> list[dict[str, Any]]:
    ops = spec["operations"]
    out, val = [], 1
    for op in ops["list"]:
        val = op.get("value", val)
        out.append({**op, "value": val, "c-name": c_upper(ops["name-prefix"] + op["name"])})
        val += 1
    return out


def request_attrs(spec: Spec) -> set[str]:
    """What a global policy accepts: every attribute of some request."""
    names: set[str] = set()
    for op in spec["operations"]["list"]:
        for mode in ("do", "dump"):
            names.update(op.get(mode, {}).get("request", {}).get("attributes", []))
    return names


def effective_checks(spec: Spec, a: dict[str, Any]) -> dict[str, int]:
    """A scalar's or binary's checks with limits resolved, and an enum's range as
    ynl-gen-c derives it (max: the highest entry; min only if the lowest is not 0 or
    the type is signed)."""
    checks = {k: limit(spec, v) for k, v in a.get("checks", {}).items()}
    if "enum" in a and a["type"] in SCALAR_SIZE:
        vals = [v for k, v in enum_values(spec, a["enum"]).items() if not k.endswith("_MAX")]
        assert max(vals) - min(vals) + 1 == len(vals), f"{a['name']}: enum not contiguous"
        checks.setdefault("max", max(vals))
        if min(vals) != 0 or a["type"].startswith("s"):
            checks.setdefault("min", min(vals))
    return checks


def struct_members(spec: Spec, name: str = "wgh-peer-record") -> list[tuple[str, str, int, int]]:
    """(C name, type, offset, size) of a struct definition: YNL structs are packed
    (pyynl decodes each member right after the previous one)."""
    d = consts(spec)[name]
    assert d["type"] == "struct", name
    out, off = [], 0
    for m in d["members"]:
        size = SCALAR_SIZE[m["type"]] if m["type"] in SCALAR_SIZE else limit(spec, m["len"])
        out.append((c_lower(m["name"]), m["type"], off, size))
        off += size
    return out


# --- the uapi header, read as C ---------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.floordiv, ast.FloorDiv: operator.floordiv, ast.LShift: operator.lshift}


def c_eval(expr: str, names: dict[str, Any]) -> Any:
    """An integer constant expression of C (literals, names, + - * / << and parentheses;
    integer division as C's for non-negative operands) or a string literal."""
    expr = re.sub(r"\b(0x[0-9a-fA-F]+|\d+)[uUlL]*\b", r"\1", expr.strip())

    def ev(n: ast.AST) -> Any:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | str):
            return n.value
        if isinstance(n, ast.Name):
            return names[n.id]
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub):
            return -ev(n.operand)
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(f"not a constant expression: {expr}")

    return ev(ast.parse(expr.replace("/", "//"), mode="eval").body)


def strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def header_enums(text: str) -> dict[str, dict[str, int]]:
    """enum name -> {member: value} of every named enum in a C header."""
    text = strip_comments(text)
    out: dict[str, dict[str, int]] = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", text, re.S):
        members: dict[str, int] = {}
        val = 0
        for item in filter(None, (i.strip() for i in body.split(","))):
            m = re.fullmatch(r"(\w+)(?:\s*=\s*(.+))?", item, re.S)
            assert m, f"enum {name}: cannot read {item!r}"
            if m.group(2):
                val = c_eval(m.group(2), members)
            members[m.group(1)] = val
            val += 1
        out[name] = members
    return out


def header_defines(text: str) -> dict[str, Any]:
    """#define NAME VALUE of a C header, evaluated (after the enums, which they may
    name); the include guard and unevaluable ones left out."""
    env: dict[str, Any] = {k: v for e in header_enums(text).values() for k, v in e.items()}
    out: dict[str, Any] = {}
    for name, value in re.findall(r"^#define\s+(\w+)[ \t]+(.+?)\s*$",
                                  strip_comments(text), re.M):
        out[name] = env[name] = c_eval(value, {**KERNEL_DEFINES, **env})
    return out


def header_names(text: str) -> dict[str, Any]:
    """Every enum member and define of a C header, by name."""
    names = {k: v for e in header_enums(text).values() for k, v in e.items()}
    return {**names, **header_defines(text)}


def header_struct(text: str, name: str = "wgh_peer_record") -> list[tuple[str, str, int, int]]:
    """(name, YNL type, offset, size) of a C struct's members, as gcc lays them out on
    amd64: each member aligned to its scalar size (arrays: to their element's)."""
    defines = header_defines(text)
    m = re.search(rf"struct\s+{name}\s*\{{(.*?)\}}\s*;", strip_comments(text), re.S)
    assert m, f"no struct {name}"
    out, off = [], 0
    for decl in filter(None, (d.strip() for d in m.group(1).split(";"))):
        dm = re.fullmatch(r"(\w+)\s+(\w+)(?:\[(.+)\])?", decl)
        assert dm, f"struct {name}: cannot read {decl!r}"
        ctype, member, count = dm.groups()
        elem = SCALAR_SIZE[C_TYPE[ctype]]
        off = (off + elem - 1) // elem * elem
        n = c_eval(count, {**KERNEL_DEFINES, **defines}) if count else 1
        kind = C_TYPE[ctype] if count is None else "binary"
        out.append((member, kind, off, elem * n))
        off += elem * n
    return out


def documented_record(text: str) -> list[tuple[str, int, int]]:
    """(field, offset, size) of the record's table in the header's comment
    ("offset size field")."""
    table = text.split("offset size field", 1)[1].split("*/", 1)[0]
    rows = re.findall(r"^ \*\s+(\d+)\s+(\d+) (\w+)", table, re.M)
    return [(name, int(off), int(size)) for off, size, name in rows]


def header_struct_size(text: str, name: str = "wgh_peer_record") -> int:
    members = header_struct(text, name)
    align = max(SCALAR_SIZE.get(t, 1) for _, t, _, _ in members)
    end = members[-1][2] + members[-1][3]
    return (end + align - 1) // align * align


# --- the checks -------------------------------------------------------------------

def check_header(spec: Spec, text: str) -> None:
    """Every number of the spec is the header's: family name and version, consts,
    the mode enum, the attribute and command enums with their MAX, the struct."""
    defines = header_defines(text)
    enums = header_enums(text)
    assert spec["name"] == defines[c_upper(spec["c-family-name"])], "family name"
    assert spec["version"] == defines[c_upper(spec["c-version-name"])], "family version"

    sc = uapi_consts(spec)
    hc = {k: v for k, v in defines.items() if isinstance(v, int) and not k.endswith("_MAX")
          and k not in (c_upper(spec["c-version-name"]),) and not k.startswith("_")}
    assert sc == hc, f"consts: spec {sc} != header {hc}"

    for d in spec["definitions"]:
        if d["type"] == "enum":
            got = {k: v for k, v in enums[c_lower(d["enum-name"])].items()
                   if not k.startswith("__")}
            assert enum_values(spec, d["name"]) == got, f"enum {d['enum-name']}: {got}"

    s = attr_set(spec)
    want = {a["c-name"]: a["value"] for a in attributes(spec)}
    got = {k: v for k, v in enums[c_lower(s["enum-name"])].items() if not k.startswith("__")}
    assert want == got, f"attributes: spec {want} != header {got}"
    max_name = c_upper(s.get("attr-max-name", s["name-prefix"] + "max"))
    assert defines[max_name] == max(want.values()), max_name
    cnt_name = c_upper(s.get("attr-cnt-name", "--" + s["name-prefix"] + "max"))
    assert enums[c_lower(s["enum-name"])][cnt_name] == max(want.values()) + 1, cnt_name

    ops = spec["operations"]
    want = {op["c-name"]: op["value"] for op in operations(spec)}
    got = {k: v for k, v in enums[c_lower(ops["enum-name"])].items() if not k.startswith("__")}
    assert want == got, f"commands: spec {want} != header {got}"
    assert defines[c_upper(ops["name-prefix"] + "max")] == max(want.values()), "WGH_CMD_MAX"

    spec_struct = [(n, t, o, z) for n, t, o, z in struct_members(spec)]
    c_struct = header_struct(text)
    assert spec_struct == c_struct, f"struct: spec {spec_struct} != header {c_struct}"
    doc_table = documented_record(text)
    assert [(n, o, z) for n, _, o, z in spec_struct] == doc_table, \
        f"struct: spec {spec_struct} != the header's table {doc_table}"
    size = spec_struct[-1][2] + spec_struct[-1][3]
    assert size == header_struct_size(text) == uapi_consts(spec)["WGH_STATS_RECORD_SIZE"], size
    assert limit(spec, consts(spec)["wgh-peer-record"]["members"][0]["len"]) == \
        uapi_consts(spec)["WGH_KEY_LEN"], "public-key member is WGH_KEY_LEN bytes"


def policy_table(patch: str) -> dict[str, str]:
    """The `nla_policy wgh_policy[]` entries of a patch: attribute -> initializer."""
    m = re.search(r"^\+static const struct nla_policy wgh_policy\[(\w+) \+ 1\] = \{\n(.*?)^\+\};",
                  patch, re.S | re.M)
    assert m, "no wgh_policy table in the patch"
    assert m.group(1) == "WGH_A_MAX", m.group(1)
    table = {}
    for line in m.group(2).splitlines():
        em = re.fullmatch(r"\+\s*\[(\w+)\]\s*=\s*(.+?),?\s*", line)
        assert em, f"cannot read policy line {line!r}"
        table[em.group(1)] = em.group(2)
    return table


def policy_entry(init: str, names: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """A policy initializer as (YNL type, checks), NLA_REJECT as ("reject", {})."""
    ev = lambda s: c_eval(s, {**KERNEL_DEFINES, **names})  # noqa: E731
    if m := re.fullmatch(r"\{\s*(.*?)\s*\}", init):
        fields = dict(re.fullmatch(r"\.(\w+)\s*=\s*(.+)", f.strip()).groups()  # type: ignore
                      for f in m.group(1).split(",") if f.strip())
        kind = NLA_TYPE[fields.pop("type")]
        checks = {}
        if "len" in fields:
            checks["max-len"] = ev(fields.pop("len"))
        assert not fields, f"unread policy fields {fields}"
        return kind, checks
    m = re.fullmatch(r"(NLA_POLICY_\w+)\((.*)\)", init)
    assert m, f"cannot read policy {init!r}"
    macro, args = m.group(1), [a.strip() for a in m.group(2).split(",")]
    if macro == "NLA_POLICY_EXACT_LEN":
        return "binary", {"exact-len": ev(args[0])}
    if macro == "NLA_POLICY_MIN_LEN":
        return "binary", {"min-len": ev(args[0])}
    if macro == "NLA_POLICY_MAX_LEN":
        return "binary", {"max-len": ev(args[0])}
    if macro == "NLA_POLICY_MIN":
        return NLA_TYPE[args[0]], {"min": ev(args[1])}
    if macro == "NLA_POLICY_MAX":
        return NLA_TYPE[args[0]], {"max": ev(args[1])}
    if macro == "NLA_POLICY_RANGE":
        return NLA_TYPE[args[0]], {"min": ev(args[1]), "max": ev(args[2])}
    raise AssertionError(f"policy macro {macro} not read here")


def check_policy(spec: Spec, patch: str, header_text: str) -> None:
    """The series' policy table is the spec's global policy: each attribute some
    request carries, with its type and checks; every other one NLA_REJECT; each entry's
    index (WGH_A_*, as the header numbers it) is the spec's attribute value."""
    names = header_names(header_text)
    table = policy_table(patch)
    accepted = request_attrs(spec)
    attrs = [a for a in attributes(spec) if a["type"] != "unused"]
    assert set(table) == {a["c-name"] for a in attrs}, f"policy covers {sorted(table)}"
    for a in attrs:
        assert names[a["c-name"]] == a["value"], f"{a['c-name']} is {names[a['c-name']]}"
        got = policy_entry(table[a["c-name"]], names)
        want = (a["type"], effective_checks(spec, a)) if a["name"] in accepted else ("reject", {})
        assert got == want, f"{a['c-name']}: kernel {got}, spec {want}"


def genl_ops(patch: str) -> dict[str, dict[str, str]]:
    m = re.search(r"^\+static const struct genl_ops wgh_ops\[\] = \{\n(.*?)^\+\};", patch,
                  re.S | re.M)
    assert m, "no wgh_ops in the patch"
    out = {}
    for block in re.findall(r"\{(.*?)\}", m.group(1), re.S):
        fields = dict(re.findall(r"\.(\w+)\s*=\s*([\w|]+)", block))
        out[fields.pop("cmd")] = fields
    return out


def genl_family(patch: str) -> dict[str, str]:
    m = re.search(r"^\+static struct genl_family wgh_family[^=;\n]*= \{\n(.*?)^\+\};", patch,
                  re.S | re.M)
    assert m, "no wgh_family in the patch"
    return dict(re.findall(r"\.(\w+)\s*=\s*([\w()]+)", m.group(1)))


def check_ops(spec: Spec, patch: str, header_text: str) -> None:
    """The series' genl_ops and genl_family are the spec's operations: the same
    commands, do = .doit, dump = .dumpit with pre/post = .start/.done, the same
    permission flags; one policy for the family (kernel-policy global), strict for
    every command (no dont-validate, no resv_start_op), no multicast group; each
    .cmd (WGH_CMD_*, as the header numbers it) is the spec's operation value."""
    ops = genl_ops(patch)
    spec_ops = [op for op in operations(spec) if "attribute-set" in op]
    assert set(ops) == {op["c-name"] for op in spec_ops}, f"kernel ops {sorted(ops)}"
    names = header_names(header_text)
    perm = {"admin-perm": "GENL_ADMIN_PERM", "uns-admin-perm": "GENL_UNS_ADMIN_PERM"}
    for op in spec_ops:
        k = ops[op["c-name"]]
        assert names[op["c-name"]] == op["value"], f"{op['c-name']} is {names[op['c-name']]}"
        assert ("doit" in k) == ("do" in op), f"{op['name']}: doit {k.get('doit')}"
        assert ("dumpit" in k) == ("dump" in op), f"{op['name']}: dumpit {k.get('dumpit')}"
        dump = op.get("dump", {})
        assert k.get("start") == (c_lower(dump["pre"]) if "pre" in dump else None), op["name"]
        assert k.get("done") == (c_lower(dump["post"]) if "post" in dump else None), op["name"]
        flags = "|".join(perm[f] for f in op.get("flags", [])) or None
        assert k.get("flags") == flags, f"{op['name']}: kernel flags {k.get('flags')}"
        assert "policy" not in k and "validate" not in k and "dont-validate" not in op
    fam = genl_family(patch)
    assert fam["name"] == c_upper(spec["c-family-name"])
    assert fam["version"] == c_upper(spec["c-version-name"])
    assert fam["maxattr"] == c_upper(attr_set(spec)["name-prefix"] + "max")
    assert spec["kernel-policy"] == "global" and fam["policy"] == "wgh_policy"
    assert "resv_start_op" not in fam
    assert ("mcgrps" in fam) == ("mcast-groups" in spec), "multicast groups"


PYROUTE2_TYPE = {"unused": "none", "u8": "uint8", "u16": "uint16", "u32": "uint32",
                 "u64": "uint64", "s32": "int32", "string": "asciiz", "binary": "cdata"}
NUMPY_TYPE = {"u8": "u1", "u16": "<u2", "u32": "<u4", "u64": "<u8", "s32": "<i4", "s64": "<i8"}


def check_daemon(spec: Spec) -> None:
    """wghybrid/dataplane/_genl.py: the pyroute2 message class (attribute i is the
    spec's attribute of value i, same name, same type), the commands and raw attribute
    numbers of its fast dump reader, and the record fields it parses."""
    from wghybrid.dataplane import _genl

    attrs = sorted(attributes(spec), key=lambda a: a["value"])
    assert [a["value"] for a in attrs] == list(range(len(attrs))), "attributes not dense"
    want = tuple((a["c-name"], PYROUTE2_TYPE[a["type"]]) for a in attrs)
    assert _genl._Msg.nla_map == want, f"_Msg.nla_map {_genl._Msg.nla_map} != spec {want}"
    ops = {op["c-name"]: op["value"] for op in operations(spec)}
    for name, value in ops.items():
        if name != "WGH_CMD_UNSPEC":
            assert getattr(_genl, name.removeprefix("WGH_")) == value, name
    by_name = {a["c-name"]: a["value"] for a in attrs}
    for raw in ("A_IFNAME", "A_STATS_VERSION", "A_STATS_RECORD_SIZE", "A_STATS_RECORDS"):
        assert getattr(_genl, raw) == by_name["WGH_" + raw], raw
    c = uapi_consts(spec)
    assert (spec["name"], spec["version"]) == (_genl.FAMILY, _genl.VERSION)
    assert (c["WGH_STATS_VERSION"], c["WGH_STATS_RECORD_SIZE"]) == \
        (_genl.STATS_VERSION, _genl.RECORD_SIZE)
    want_fields = tuple(
        ("key" if n == "public_key" else n,
         f"S{z}" if t == "binary" else NUMPY_TYPE[t], o)
        for n, t, o, z in struct_members(spec) if n != "reserved")
    assert want_fields == _genl.RECORD_FIELDS, f"RECORD_FIELDS != spec {want_fields}"


def guest_client() -> Any:
    loader = importlib.util.spec_from_file_location("wghctl", GUEST_CLIENT)
    assert loader and loader.loader
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    return mod


def check_guest_client(spec: Spec) -> None:
    """kmod/harness/guest/wghctl.py (the harness' raw client): its command and
    attribute numbers, modes and record struct."""
    g = guest_client()
    for op in operations(spec):
        if op["c-name"] != "WGH_CMD_UNSPEC":
            assert getattr(g, op["c-name"].removeprefix("WGH_")) == op["value"], op["c-name"]
    for a in attributes(spec):
        if a["type"] != "unused":
            assert getattr(g, a["c-name"].removeprefix("WGH_")) == a["value"], a["c-name"]
    modes = enum_values(spec, "mode")
    assert {k.removeprefix("WGH_MODE_").lower(): v for k, v in modes.items()
                       if k != "WGH_MODE_MAX"} == g.MODES
    members = struct_members(spec)
    assert g.RECORD.size == members[-1][2] + members[-1][3], "wghctl RECORD size"
    fmt = {"u64": "Q", "s32": "i", "u8": "B"}
    want = "<"
    for n, t, _, z in members:
        want += f"{z}s" if n == "public_key" else f"{z}x" if n == "reserved" else fmt[t]
    got = re.sub(r"(\d+)([QiB])", lambda m: m.group(2) * int(m.group(1)), g.RECORD.format)
    assert got == want, f"wghctl RECORD {g.RECORD.format} != spec {want}"
    assert tuple(n for n, t, _, _ in members if t == "u64") == g.FIELDS, "wghctl FIELDS"


def series() -> list[Path]:
    """The 0002 patch (the genl family) of each kernel line."""
    found = sorted(PATCHES.glob("*/0002-*.patch"))
    assert len(found) >= 2, f"expected a series per kernel line under {PATCHES}"
    return found


def check_all(spec: Spec) -> None:
    text = HEADER.read_text()
    check_header(spec, text)
    for patch in series():
        check_policy(spec, patch.read_text(), text)
        check_ops(spec, patch.read_text(), text)
    check_daemon(spec)
    check_guest_client(spec)


def numbers(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], int]]:
    """Every integer in the spec, with its path (booleans are not numbers)."""
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in numbers(v, (*path, k))]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in numbers(v, (*path, i))]
    if isinstance(node, int) and not isinstance(node, bool):
        return [(path, node)]
    return []


def with_number(spec: Spec, path: tuple[Any, ...], value: int) -> Spec:
    out = copy.deepcopy(spec)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out
