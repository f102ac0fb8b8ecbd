"""kmod/spec/wghybrid.yaml against the kernel's own YNL tooling, from the target's
linux-source (fetched by kmod/fetch.sh, as the other kernel tests do; linux 6.12's
tools/net/ynl and Documentation/netlink are unpacked beside the WireGuard sources in
the cache): the spec is valid under the schema of its protocol, YNL's library reads it
with the numbers tests/ynlspec.py reads, pyynl decodes a stats reply the way the daemon
does, and the uapi header ynl-gen-c makes from it has our header's enums. The record's
layout is checked against gcc here too.

ynl-gen-c does not make our whole header, and cannot in 6.12 (see
test_ynl_gen_c_makes_the_headers_enums): it renders no struct definitions, prefixes
consts with the family name (WGHYBRID_KEY_LEN: the `name-prefix` of a const, which
upstream's wireguard.yaml uses for WG_KEY_LEN, is honoured only by later kernels),
names an enum's private count __WGH_MODE_MAX where ours is __WGH_MODE_LAST, and writes
an expression (WGH_STATS_RECORDS_PER_ATTR) only as its value. So the header stays
handwritten, with its documentation, and these tests hold it to the spec.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml
import ynlspec as y
from test_kmod import _unmet

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parents[2]


def _need(why: str | None) -> None:
    if why is None:
        return
    if os.environ.get("WGHYBRID_KERNEL_TESTS") == "1":
        pytest.fail(f"WGHYBRID_KERNEL_TESTS=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def tree() -> Path:
    """tools/net/ynl and Documentation/netlink of the trixie target's linux-source (its
    kernel resolved and its packages downloaded by kmod/fetch.sh), unpacked once into
    the cache at SUITE/V/ynl/."""
    _need(_unmet())
    top = Path(subprocess.run([str(ROOT / "kmod" / "fetch.sh")], capture_output=True,
                              text=True, check=True, timeout=1800, stdin=subprocess.DEVNULL,
                              env={**os.environ, "WGHYBRID_KMOD_TARGET": "trixie"},
                              ).stdout.splitlines()[-1])
    env = dict(line.split("=", 1) for line in (top / "target.env").read_text().splitlines())
    dst = top / "ynl"
    if not (dst / ".done").exists():
        deb = next(Path(env["DEBS"]).glob(f"linux-source-{env['LINE']}_*.deb"))
        src = f"linux-source-{env['LINE']}"
        tmp = top / f"ynl.tmp.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        subprocess.run(
            ["bash", "-o", "pipefail", "-c",
             'dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$2.tar.xz" | xz -dc |'
             ' tar -x -C "$3" --strip-components=1 "$2/tools/net/ynl" "$2/Documentation/netlink"',
             "-", str(deb), src, str(tmp)], check=True, timeout=600, stdin=subprocess.DEVNULL)
        (tmp / ".done").touch()
        try:
            tmp.rename(dst)
        except OSError:  # another run got there first (or left a half one: replace it)
            if not (dst / ".done").exists():
                shutil.rmtree(dst, ignore_errors=True)
                tmp.rename(dst)
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def schema_of(tree: Path, spec: y.Spec) -> Path:
    return tree / "Documentation" / "netlink" / f"{spec['protocol']}.yaml"


def ynl_lib(tree: Path) -> ModuleType:
    """tools/net/ynl/lib, imported under a name of its own."""
    lib = tree / "tools" / "net" / "ynl" / "lib"
    loader = importlib.util.spec_from_file_location(
        "kernel_ynl_lib", lib / "__init__.py", submodule_search_locations=[str(lib)])
    assert loader and loader.loader
    mod = importlib.util.module_from_spec(loader)
    sys.modules["kernel_ynl_lib"] = mod
    loader.loader.exec_module(mod)
    return mod


def test_spec_validates_against_the_kernels_schema(tree: Path) -> None:
    """Against Documentation/netlink/genetlink-legacy.yaml (the protocol with struct
    definitions), as tools/net/ynl validates every spec it loads; a spec with one
    attribute of a type YNL lacks is refused, so the validator does look."""
    spec = y.load_spec()
    assert spec["protocol"] == "genetlink-legacy"
    schema = yaml.safe_load(schema_of(tree, spec).read_text())
    # Its $schema is draft-07's, written without the "#" jsonschema looks it up by.
    assert schema["$schema"].rstrip("#") == "https://json-schema.org/draft-07/schema"
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(spec)
    bad = copy.deepcopy(spec)
    y.attr_set(bad)["attributes"][1]["type"] = "u24"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_ynl_reads_the_numbers_the_checks_read(tree: Path) -> None:
    """YNL's own library (lib/nlspec.py) resolves the spec to the attribute, command
    and enum values and struct members that tests/ynlspec.py compares with the header,
    the series and the daemon."""
    lib = ynl_lib(tree)
    spec = y.load_spec()
    fam = lib.SpecFamily(str(y.SPEC), "")  # "": validated above, not again
    attrs = fam.attr_sets["wghybrid"].attrs
    assert {n: a.value for n, a in attrs.items()} == \
        {a["name"]: a["value"] for a in y.attributes(spec)}
    assert {n: op.value for n, op in fam.msgs.items()} == \
        {op["name"]: op["value"] for op in y.operations(spec)}
    # and so, as the header numbers them
    enums = y.header_enums(y.HEADER.read_text())
    assert {y.c_upper("wgh-a-" + n): a.value for n, a in attrs.items()} == \
        {k: v for k, v in enums["wgh_attribute"].items() if not k.startswith("__")}
    assert {y.c_upper("wgh-cmd-" + n): op.value for n, op in fam.msgs.items()} == \
        {k: v for k, v in enums["wgh_cmd"].items() if not k.startswith("__")}
    mode = fam.consts["mode"]
    assert {e.name: e.value for e in mode.entries.values()} == \
        {k.removeprefix("WGH_MODE_").lower(): v for k, v in y.enum_values(spec, "mode").items()
         if k != "WGH_MODE_MAX"}
    rec = fam.consts["wgh-peer-record"].members
    assert [(m.name.replace("-", "_"), m.type) for m in rec] == \
        [(n, t) for n, t, _, _ in y.struct_members(spec)]


def test_pyynl_decodes_a_stats_reply_as_the_daemon_does(tree: Path) -> None:
    """A GET_STATS reply's attributes, records made with the daemon's dtype, decoded by
    pyynl's YnlFamily from the spec alone (no socket: the family is not on this host),
    gives each record's fields as the daemon's parse_records reads them."""
    from wghybrid.dataplane import _genl

    lib = ynl_lib(tree)
    spec = y.load_spec()
    fam: Any = lib.YnlFamily.__new__(lib.YnlFamily)
    lib.SpecFamily.__init__(fam, str(y.SPEC), "")
    fam.process_unknown = False
    fam.include_raw = False

    recs = np.zeros(2, dtype=_genl.record_dtype())
    for i, r in enumerate(recs):
        r["key"] = bytes(range(i, i + 32))
        for j, name in enumerate(("rx_bytes", "tx_bytes", "rx_packets", "tx_packets",
                                  "rx_cpu_ns", "tx_cpu_ns", "drops", "epoch")):
            r[name] = (i + 1) << (8 * j % 60) | j
    recs["core"] = (-1, 3)
    recs["mode"] = (1, 0)

    def nla(kind: int, payload: bytes) -> bytes:
        return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)

    # the daemon's attribute numbers, not the spec's: pyynl must find them in the spec
    a = {n.removeprefix("WGH_A_").lower().replace("_", "-"): i
         for i, (n, _) in enumerate(_genl._Msg.nla_map)}
    raw = (nla(a["ifindex"], struct.pack("=I", 7)) + nla(a["stats-version"], struct.pack("=I", 1))
           + nla(a["stats-record-size"], struct.pack("=I", _genl.RECORD_SIZE))
           + b"".join(nla(a["stats-records"], r.tobytes()) for r in recs))
    got = fam._decode(sys.modules["kernel_ynl_lib.ynl"].NlAttrs(raw), "wghybrid")
    assert got["ifindex"] == 7 and got["stats-record-size"] == 104
    ours = _genl.parse_records([r.tobytes() for r in recs], _genl.RECORD_SIZE)
    assert len(got["stats-records"]) == len(ours) == 2
    modes = {v: k.removeprefix("WGH_MODE_").lower()
             for k, v in y.enum_values(spec, "mode").items() if k != "WGH_MODE_MAX"}
    for theirs, mine in zip(got["stats-records"], ours, strict=True):
        assert bytes.fromhex(theirs["public-key"].replace(" ", "").replace(":", "")) == \
            mine["key"]
        for name in _genl.RECORD_FIELDS:
            if name[0] not in ("key", "mode"):
                assert theirs[name[0].replace("_", "-")] == int(mine[name[0]]), name
        assert theirs["mode"] == modes[int(mine["mode"])]


def test_ynl_gen_c_makes_the_headers_enums(tree: Path, tmp_path: Path) -> None:
    """ynl-gen-c --mode uapi --header from the spec (laid out as in a kernel tree, which
    it needs: a MAINTAINERS file above Documentation/netlink/specs/) gives our header's
    enums and defines: the same enum types, members and values; the family's name and
    version and WGH_A_MAX/WGH_CMD_MAX. Where 6.12's ynl-gen-c cannot say what ours
    says, the difference is named here: private enum counts, the consts' prefix, the
    struct (not rendered)."""
    kt = tmp_path / "linux"
    specs = kt / "Documentation" / "netlink" / "specs"
    specs.mkdir(parents=True)
    (kt / "MAINTAINERS").touch()
    shutil.copy(schema_of(tree, y.load_spec()), specs.parent)
    shutil.copy(y.SPEC, specs / "wghybrid.yaml")
    out = tmp_path / "wghybrid.h"
    r = subprocess.run([sys.executable, str(tree / "tools" / "net" / "ynl" / "ynl-gen-c.py"),
                        "--mode", "uapi", "--header", "--spec", str(specs / "wghybrid.yaml"),
                        "-o", str(out)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    gen_text, our_text = out.read_text(), y.HEADER.read_text()
    assert "Do not edit directly, auto-generated from" in gen_text

    gen, ours = y.header_enums(gen_text), y.header_enums(our_text)
    assert set(gen) == set(ours) == {"wgh_mode", "wgh_attribute", "wgh_cmd"}
    for name in gen:
        pub_gen = {k: v for k, v in gen[name].items() if not k.startswith("__")}
        pub_ours = {k: v for k, v in ours[name].items() if not k.startswith("__")}
        assert pub_gen == pub_ours, name
        priv_gen = {k: v for k, v in gen[name].items() if k.startswith("__")}
        priv_ours = {k: v for k, v in ours[name].items() if k.startswith("__")}
        assert sorted(priv_gen.values()) == sorted(priv_ours.values()), name
        if name == "wgh_mode":  # 6.12 has no enum-cnt-name: __WGH_MODE_MAX
            assert set(priv_gen) == {"__WGH_MODE_MAX"} and set(priv_ours) == {"__WGH_MODE_LAST"}
        else:
            assert priv_gen == priv_ours, name

    gdef, odef = y.header_defines(gen_text), y.header_defines(our_text)
    for name in ("WGH_GENL_NAME", "WGH_GENL_VERSION", "WGH_A_MAX", "WGH_CMD_MAX"):
        assert gdef[name] == odef[name], name
    consts = {k: v for k, v in gdef.items() if k.startswith("WGHYBRID_")}
    ours_consts = {k: v for k, v in odef.items() if k.startswith("WGH_") and k not in
                   ("WGH_GENL_NAME", "WGH_GENL_VERSION", "WGH_A_MAX", "WGH_CMD_MAX")}
    assert {k.replace("WGHYBRID_", "WGH_", 1): v for k, v in consts.items()} == ours_consts
    assert set(gdef) == {"WGH_GENL_NAME", "WGH_GENL_VERSION", "WGH_A_MAX", "WGH_CMD_MAX",
                         *consts}, "ynl-gen-c rendered something the header lacks"
    assert "WGH_PEER_CORE_MIN" not in gen_text  # scope: kernel, not uapi
    if "struct wgh_peer_record" in gen_text:  # a later ynl-gen-c: hold it to ours too
        assert y.header_struct(gen_text) == y.header_struct(our_text)


def test_record_layout_is_gccs(tmp_path: Path) -> None:
    """The spec's struct (packed, as YNL decodes it) against offsetof() and sizeof() of
    struct wgh_peer_record as the host's gcc compiles the uapi header."""
    _need(None if shutil.which("gcc") else "needs gcc (scripts/setup)")
    members = y.struct_members(y.load_spec())
    prog = tmp_path / "layout.c"
    prog.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/wghybrid.h>\n"
        "#define F(m) printf(#m \" %zu %zu\\n\", offsetof(struct wgh_peer_record, m), "
        "sizeof(((struct wgh_peer_record *)0)->m));\n"
        "int main(void) {\n"
        + "".join(f"F({n})\n" for n, _, _, _ in members)
        + 'printf("sizeof %zu 0\\n", sizeof(struct wgh_peer_record));\nreturn 0;\n}\n')
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(y.HEADER.parents[1]), "-o", str(exe),
                    str(prog)], check=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    got = {n: (int(o), int(s)) for n, o, s in (line.split() for line in out.splitlines())}
    assert {n: (o, s) for n, _, o, s in members} == {k: v for k, v in got.items()
                                                     if k != "sizeof"}
    assert got["sizeof"][0] == members[-1][2] + members[-1][3]
