"""Friendly names imported from wg-quick and systemd-networkd configs (issue 13):
wghybrid/policy/names.py, and the policy's `[name_import]` key that points at them."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

import pytest

from wghybrid.cli import _dump, _render
from wghybrid.policy import NameImport, Policy
from wghybrid.policy import names as names_mod
from wghybrid.policy.load import (
    DATA_PLANE,
    PolicyError,
    load_policy,
    parse_policy,
    policy_from_dict,
    policy_to_dict,
    validate_command,
)
from wghybrid.policy.names import import_names, parse_config, read_configs

pytestmark = pytest.mark.unit


def raw(n: int) -> bytes:
    return bytes([n]) * 31 + b"\x02"


def b64(n: int) -> str:
    return base64.b64encode(raw(n)).decode()


PRIVATE = base64.b64encode(b"\x09" * 32).decode()

WG_QUICK = f"""\
[Interface]
PrivateKey = {PRIVATE}
# Name = the-interface-not-a-peer
ListenPort = 51820

# Name = alice
[Peer]
PublicKey = {b64(1)}
AllowedIPs = 10.0.0.2/32

[Peer]
# name: bob
PublicKey = {b64(2)}

[Peer]
PublicKey = {b64(3)}
# friendly_name = carol

# ID: 1234
# Name:  dave the router
# Email: dave@example.org
[Peer]
PublicKey = {b64(4)}

[Peer]
PublicKey = {b64(5)}
"""


def test_wg_quick_names_above_and_inside_a_peer_section() -> None:
    found, warnings = parse_config(WG_QUICK, "/etc/wireguard/wg0.conf", "wg-quick")
    assert warnings == []
    assert {k: (f.name, f.where) for k, f in found.items()} == {
        raw(1): ("alice", "/etc/wireguard/wg0.conf:6"),
        raw(2): ("bob", "/etc/wireguard/wg0.conf:12"),
        raw(3): ("carol", "/etc/wireguard/wg0.conf:17"),
        raw(4): ("dave the router", "/etc/wireguard/wg0.conf:20"),
    }


def test_a_name_above_a_header_is_the_next_peers_not_the_previous_ones() -> None:
    text = f"[Peer]\nPublicKey = {b64(1)}\n# Name = second\n[Peer]\nPublicKey = {b64(2)}\n"
    found, _ = parse_config(text, "f", "wg-quick")
    assert {k: f.name for k, f in found.items()} == {raw(2): "second"}


NETDEV = f"""\
[NetDev]
Name=wg0
Kind=wireguard

[WireGuard]
PrivateKeyFile=/etc/systemd/network/wg0.key

[WireGuardPeer]
# Name = alice-networkd
PublicKey={b64(1)}
AllowedIPs=10.0.0.2/32

[WireGuardPeer]
PublicKey={b64(6)}
# Name = frank
"""


def test_networkd_wireguardpeer_sections() -> None:
    found, warnings = parse_config(NETDEV, "/etc/systemd/network/wg0.netdev", "networkd")
    assert warnings == []
    assert {k: f.name for k, f in found.items()} == {raw(1): "alice-networkd", raw(6): "frank"}
    # a [Peer] section means nothing to networkd, [WireGuardPeer] nothing to wg-quick
    assert parse_config(NETDEV, "f", "wg-quick")[0] == {}
    assert parse_config(WG_QUICK, "f", "networkd")[0] == {}


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        ("[Peer]\n# Name = x\nPublicKey = nope\n",
         "f:3: PublicKey is not a WireGuard key (44 characters of base64); the peer's name "
         "is ignored"),
        ("[Peer]\n# Name = lonely\nAllowedIPs = 10.0.0.1/32\n",
         "f:2: a name for the peer section of line 1, which has no valid PublicKey; ignored"),
        (f"[Peer]\n# Name = {'x' * 65}\nPublicKey = {b64(1)}\n",
         "f:2: a name longer than 64 characters; ignored"),
        (f"[Peer]\n# Name = {b64(7)}\nPublicKey = {b64(1)}\n",
         "f:2: a name that looks like a public key; ignored"),
        (f"[Peer]\n# Name =\nPublicKey = {b64(1)}\n", "f:2: an empty name; ignored"),
        (f"[Peer]\n# Name = a\x1bb\nPublicKey = {b64(1)}\n",
         "f:2: a name with control characters; ignored"),
        (f"[Peer]\n# Name = a\nPublicKey = {b64(1)}\n# Name = b\nAllowedIPs = x\n",
         "f:4: a second name for the peer section of line 1; the first (line 2) is kept"),
        (f"[Peer]\n# Name = a\nPublicKey = {b64(1)}\n\n[Peer]\n# Name = b\nPublicKey = {b64(1)}\n",
         "f:6: the same PublicKey is named at f:2; that name is kept"),
    ],
)
def test_bad_entries_are_warnings_naming_file_and_line(text: str, warning: str) -> None:
    found, warnings = parse_config(text, "f", "wg-quick")
    assert warnings == [warning]
    assert all(f.name in ("a",) for f in found.values())


def test_a_warning_never_quotes_a_line(tmp_path: Path) -> None:
    secret = base64.b64encode(b"\x42" * 32).decode()
    text = f"[Peer]\nPublicKey = {secret}x\nPresharedKey = {secret}\n# Name = p\n"
    _, warnings = parse_config(text, "f", "wg-quick")
    assert warnings and not any(secret in w for w in warnings)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_directories_are_read_in_name_order_and_bad_files_skipped(tmp_path: Path) -> None:
    d = tmp_path / "wireguard"
    write(d / "b.conf", f"[Peer]\n# Name = second-file\nPublicKey = {b64(1)}\n")
    write(d / "a.conf", f"[Peer]\n# Name = first-file\nPublicKey = {b64(1)}\n")
    write(d / "c.conf", b"[Peer]\n# Name = caf\xe9\n")
    write(d / "notes.txt", f"[Peer]\n# Name = not-a-config\nPublicKey = {b64(2)}\n")
    write(d / ".hidden.conf", f"[Peer]\n# Name = hidden\nPublicKey = {b64(3)}\n")
    (d / "dir.conf").mkdir()
    os.mkfifo(d / "fifo.conf")  # must not block
    out = read_configs([str(d), str(tmp_path / "missing")], "wg-quick", 100)
    assert {k: f.name for k, f in out.names.items()} == {raw(1): "first-file"}
    assert out.warnings == [
        f"{d}/b.conf:2: the peer is also named in {d}/a.conf:2, which is kept",
        f"{d}/c.conf:2: not UTF-8 text; skipped",
    ]


def test_limits_on_files_sizes_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "w"
    for i in range(5):
        write(d / f"{i}.conf", f"[Peer]\n# Name = p{i}\nPublicKey = {b64(10 + i)}\n")
    monkeypatch.setattr(names_mod, "MAX_FILES", 3)
    out = read_configs([str(d)], "wg-quick", 100)
    assert len(out.names) == 3
    assert out.warnings == [f"{d}: 5 *.conf files, more than 3; only the first 3 in name order "
                            "are read"]
    monkeypatch.setattr(names_mod, "MAX_FILE_BYTES", 40)
    out = read_configs([str(d)], "wg-quick", 100)
    assert out.names == {} and all("more than 40; skipped" in w for w in out.warnings[1:])
    monkeypatch.undo()
    out = read_configs([str(d)], "wg-quick", 2)
    assert len(out.names) == 2 and out.warnings == [
        f"{d}/2.conf:2: more than 2 names; the rest are ignored"]


def test_an_unreadable_directory_or_file_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write(tmp_path / "w" / "wg0.conf", "[Peer]\n").parent
    real = names_mod.read_regular

    def refuse(path: object, limit: int) -> bytes:
        if str(path).endswith("wg0.conf"):
            raise PermissionError(13, "Permission denied")
        return real(path, limit)  # type: ignore[arg-type]

    monkeypatch.setattr(names_mod, "read_regular", refuse)
    assert read_configs([str(d)], "wg-quick", 10).warnings == [
        f"{d}/wg0.conf: cannot read: Permission denied"]

    def no_listing(path: str) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(names_mod.os, "scandir", no_listing)
    assert read_configs([str(d)], "wg-quick", 10).warnings == [
        f"{d}: cannot list the directory: Permission denied"]


def test_the_policy_wins_then_networkd_then_wg_quick(tmp_path: Path) -> None:
    wgq = write(tmp_path / "wg" / "wg0.conf", WG_QUICK).parent
    nd = write(tmp_path / "nd" / "wg0.netdev", NETDEV).parent
    own = {raw(2): "bob-from-policy", raw(9): "frank"}
    merged, origin, warnings = import_names(own, [str(wgq)], [str(nd)], 1000)
    assert merged == {
        raw(2): "bob-from-policy", raw(9): "frank",  # the policy's own
        raw(1): "alice-networkd",                    # networkd over wg-quick's "alice"
        raw(3): "carol", raw(4): "dave the router",
    }
    assert origin == {
        raw(1): f"networkd {nd}/wg0.netdev:9",
        raw(3): f"wg-quick {wgq}/wg0.conf:17",
        raw(4): f"wg-quick {wgq}/wg0.conf:20",
    }
    # networkd's "frank" (another key) collides with the policy's frank: left out
    assert warnings == [f"{nd}/wg0.netdev:15: the name 'frank' is another peer's already "
                        "(the policy); ignored"]


def test_policy_key_name_import(tmp_path: Path) -> None:
    policy = parse_policy('[name_import]\nwg_quick = ["/srv/wg", "/etc/wireguard"]\n'
                          'networkd = []\n', online_cores=4)
    assert policy.name_import == NameImport(("/srv/wg", "/etc/wireguard"), ())
    assert Policy().name_import == NameImport(("/etc/wireguard",), ("/etc/systemd/network",))
    for body, message in (
        ('wg_quick = "/etc/wireguard"', "name_import.wg_quick: expected an array of "
                                        "directories, got a string (\"/etc/wireguard\")"),
        ('wg_quick = ["etc/wireguard"]', "name_import.wg_quick: item 1: \"etc/wireguard\" is not "
                                         "an absolute path"),
        ("networkd = [1]", "name_import.networkd: item 1: expected a string, got an integer (1)"),
        ('networkd = ["/a", "/a"]', "name_import.networkd: \"/a\" is listed twice"),
        ("wg_quik = []", "name_import.wg_quik: unknown key; did you mean 'wg_quick'?"),
        ("wg_quick = [" + ", ".join(f'"/a{i}"' for i in range(17)) + "]",
         "name_import.wg_quick: 17 directories, more than 16"),
    ):
        with pytest.raises(PolicyError) as exc:
            parse_policy(f"[name_import]\n{body}\n", "p.toml", online_cores=4)
        assert str(exc.value) == f"p.toml: {message}"


def test_load_policy_imports_and_reports_where_each_name_came_from(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wgq = write(tmp_path / "wg" / "wg0.conf", WG_QUICK + "[Peer]\n# Name = x\nPublicKey = no\n")
    path = write(tmp_path / "policy.toml", f'name = "t"\n[name_import]\nwg_quick = ["{wgq.parent}"]'
                 f'\nnetworkd = []\n[names]\n"{b64(1)}" = "alice-policy"\n')
    with caplog.at_level(logging.WARNING, logger="wghybrid.policy"):
        policy = load_policy(path, online_cores=4)
    assert policy.names[raw(1)] == "alice-policy" and policy.names[raw(2)] == "bob"
    assert policy.file_names == frozenset({raw(1)})
    assert [r.getMessage() for r in caplog.records] == [
        f"names: {wgq}:29: PublicKey is not a WireGuard key (44 characters of base64); the "
        "peer's name is ignored",
    ]
    assert len(policy.name_warnings) == 1
    # The daemon adds the simulator's names under the policy's (dataclasses.replace).
    from dataclasses import replace
    policy = replace(policy, names={raw(8): "mouse-008", **policy.names})
    data = policy_to_dict(policy)
    assert data["names"] == {b64(1): "alice-policy"}
    assert data["name_sources"][b64(2)] == {"name": "bob", "from": f"wg-quick {wgq}:12"}
    assert data["name_sources"][b64(8)] == {"name": "mouse-008", "from": DATA_PLANE}
    assert data["name_warnings"] == list(policy.name_warnings)
    text = _dump.render_policy(data, None, _render.Palette(False))
    assert f"# loaded from {path}" in text and "mouse-008\"  # from the data plane" in text
    file_part = text.split("more name(s)")[0]  # the sim's names are not shown as the file's
    assert "mouse-008" not in file_part and '"alice-policy"' in file_part
    # What is not the file's does not come back as the file's.
    back = dict(data)
    for k in ("source", "name_sources", "name_warnings"):
        back.pop(k)
    assert policy_from_dict(back, online_cores=4).names == {raw(1): "alice-policy"}


def test_a_policy_without_imports_reads_no_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "p.toml", '[name_import]\nwg_quick = []\nnetworkd = []\n')
    policy = load_policy(path, online_cores=4)
    assert policy.names == {} and policy.name_warnings == ()
    assert "name_sources" not in policy_to_dict(policy)
    # load_policy(import_names=False) ignores the directories altogether
    wgq = write(tmp_path / "wg" / "wg0.conf", WG_QUICK).parent
    path.write_text(f'[name_import]\nwg_quick = ["{wgq}"]\nnetworkd = []\n')
    assert load_policy(path, 4, import_names=False).names == {}
    assert len(load_policy(path, 4).names) == 4


def test_validate_prints_the_warnings_and_stays_ok(tmp_path: Path) -> None:
    wgq = write(tmp_path / "wg" / "wg0.conf", b"\xff\xfe").parent
    path = write(tmp_path / "p.toml", f'[name_import]\nwg_quick = ["{wgq}"]\nnetworkd = []\n')
    code, message = validate_command(str(path), 4)
    assert code == 0
    assert message.splitlines()[1:] == [
        f"  warning: names: {wgq}/wg0.conf:1: not UTF-8 text; skipped"]
    write(wgq / "wg1.conf", f"[Peer]\n# Name = z\nPublicKey = {b64(1)}\n")
    code, message = validate_command(str(path), 4)
    assert message.splitlines()[0].endswith("1 name(s) (1 imported)")
