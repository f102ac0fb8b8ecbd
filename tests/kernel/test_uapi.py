"""The stats record layout documented in kmod/include/uapi/linux/wghybrid.h matches
the C struct, as gcc lays it out: the numpy dtype in the header's comment is what
user space parses the bulk dump with."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.kernel

HEADER = Path(__file__).resolve().parents[2] / "kmod" / "include" / "uapi" / "linux" / "wghybrid.h"


def documented_dtype() -> np.dtype:
    text = HEADER.read_text()
    block = re.search(r"np\.dtype\((\[.*?\])\)", text, re.S)
    assert block, "the header documents no numpy dtype"
    fields = ast.literal_eval(re.sub(r"\n \*\s*", " ", block.group(1)))
    return np.dtype(fields)


def c_layout(tmp_path: Path, names: list[str]) -> dict[str, int]:
    prog = tmp_path / "layout.c"
    lines = [f'printf("{n} %zu\\n", offsetof(struct wgh_peer_record, {n}));' for n in names]
    prog.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <linux/wghybrid.h>\n"
        "int main(void) {\n"
        'printf("sizeof %zu\\n", sizeof(struct wgh_peer_record));\n'
        'printf("size_macro %d\\n", WGH_STATS_RECORD_SIZE);\n'
        + "\n".join(lines) + "\nreturn 0;\n}\n"
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(HEADER.parents[1]), "-o", str(exe),
                    str(prog)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_documented_dtype_matches_the_c_struct(tmp_path: Path) -> None:
    dt = documented_dtype()
    c_names = {"key": "public_key"}
    names = [n for n in dt.names if n != "reserved"]
    layout = c_layout(tmp_path, [c_names.get(n, n) for n in names])
    assert layout["sizeof"] == layout["size_macro"] == dt.itemsize == 104
    for n in names:
        assert dt.fields[n][1] == layout[c_names.get(n, n)], n


def test_documented_dtype_parses_a_packed_record() -> None:
    dt = documented_dtype()
    rec = np.zeros(2, dtype=dt)
    rec["key"][1] = b"k" * 32
    rec["tx_bytes"][1] = 1 << 40
    rec["core"][1] = -1
    rec["mode"][1] = 1
    back = np.frombuffer(rec.tobytes(), dtype=dt)
    assert back["tx_bytes"][1] == 1 << 40 and back["core"][1] == -1 and back["mode"][1] == 1
    assert rec.tobytes()[104 + 40 : 104 + 48] == (1 << 40).to_bytes(8, "little")


PATCHES = HEADER.parents[3] / "patches"
WINDOW_ASSERT = re.compile(r"^\+static_assert\(COUNTER_WINDOW_SIZE == (\d+)\);$", re.M)


def documented_replay_window() -> int:
    text = re.sub(r"\n \*\s*", " ", HEADER.read_text())
    m = re.search(r"replay window\D*?(\d+) messages", text)
    assert m, "the header gives no replay window in messages"
    return int(m.group(1))


def test_documented_replay_window_is_the_one_each_series_checks() -> None:
    """The replay window the header documents (issue 12: it said 8192, WireGuard's is
    COUNTER_WINDOW_SIZE, 8192 - BITS_PER_LONG) is the number each series' hybrid.c
    static_asserts COUNTER_WINDOW_SIZE to be: the build of a line whose WireGuard
    differs fails, and this test fails if the documentation does."""
    doc = documented_replay_window()
    lines = sorted(p for p in PATCHES.iterdir() if p.is_dir())
    assert lines, f"no series under {PATCHES}"
    for line in lines:
        found = [int(n) for p in sorted(line.glob("*.patch")) for n in
                 WINDOW_ASSERT.findall(p.read_text())]
        assert found == [doc], f"{line.name}: the series asserts {found}, the header says {doc}"


def test_documented_replay_window_is_wireguards_constant() -> None:
    """Against the pristine messages.h of every kernel the harness has fetched (the
    cache of kmod/fetch.sh), where it is: COUNTER_BITS_TOTAL less BITS_PER_LONG (64 on
    amd64, the one architecture built)."""
    cache = Path(os.environ.get("WGHYBRID_KMOD_CACHE", "/var/cache/wghybrid-kmod"))
    sources = sorted(cache.glob("*/*/src/linux-source-*/drivers/net/wireguard/messages.h"))
    if not sources:
        pytest.skip(f"no kernel source fetched under {cache} (kmod/fetch.sh)")
    doc = documented_replay_window()
    for src in sources:
        text = src.read_text()
        total = re.search(r"COUNTER_BITS_TOTAL = (\d+),", text)
        assert total and "COUNTER_REDUNDANT_BITS = BITS_PER_LONG," in text and \
            "COUNTER_WINDOW_SIZE = COUNTER_BITS_TOTAL - COUNTER_REDUNDANT_BITS" in text, src
        assert int(total.group(1)) - 64 == doc, src
