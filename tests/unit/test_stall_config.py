"""Re-creating a stalled peer (kernel backend): its configuration is read back whole from
upstream WireGuard's GET_DEVICE replies (wghybrid.dataplane._genl.peer_config), and the
[stall] policy table is validated like every other."""

from __future__ import annotations

import base64

import pytest

from wghybrid.dataplane._genl import peer_config
from wghybrid.policy.load import PolicyError, parse_policy

pytestmark = pytest.mark.unit


class Nla(dict):
    """What pyroute2 hands back: get_attr by name, dict access for struct fields."""

    def __init__(self, attrs: dict, **fields: object) -> None:
        super().__init__(**fields)
        self.attrs = attrs

    def get_attr(self, name: str) -> object:
        return self.attrs.get(name)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def key_nla(raw: bytes) -> Nla:
    return Nla({}, key=raw, value=b64(raw).encode())


def peer(raw: bytes, *ips: str, psk: bytes | None = None, endpoint: tuple | None = None,
         keepalive: int = 0) -> Nla:
    attrs: dict[str, object] = {"WGPEER_A_PUBLIC_KEY": key_nla(raw),
                                "WGPEER_A_ALLOWEDIPS": [Nla({}, addr=ip) for ip in ips]}
    if psk is not None:
        attrs["WGPEER_A_PRESHARED_KEY"] = key_nla(psk)
    if endpoint is not None:
        attrs["WGPEER_A_ENDPOINT"] = Nla({}, addr=endpoint[0], port=endpoint[1])
    attrs["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] = keepalive
    return Nla(attrs)


def device(*peers: Nla) -> Nla:
    return Nla({"WGDEVICE_A_PEERS": list(peers)})


A, B = b"\x01" * 32, b"\x02" * 31 + b"\0"


def test_a_peer_split_over_messages_is_read_whole() -> None:
    msgs = [
        device(peer(A, "10.0.0.1/32"),
               peer(B, "10.1.0.0/24", "10.2.0.0/24", psk=b"\x07" * 32,
                    endpoint=("192.0.2.7", 51820), keepalive=25)),
        # WireGuard continues a peer with many allowed IPs in the next message: its key
        # again, and more allowed IPs.
        device(peer(B, "fd00::/64")),
    ]
    assert peer_config(msgs, B) == {
        "public_key": b64(B),
        "allowed_ips": ["10.1.0.0/24", "10.2.0.0/24", "fd00::/64"],
        "preshared_key": b64(b"\x07" * 32),
        "endpoint_addr": "192.0.2.7",
        "endpoint_port": 51820,
        "persistent_keepalive": 25,
    }


def test_no_preshared_key_no_endpoint_no_keepalive_are_left_out() -> None:
    msgs = [device(peer(A, "10.0.0.1/32", psk=bytes(32), endpoint=("0.0.0.0", 0)))]
    assert peer_config(msgs, A) == {"public_key": b64(A), "allowed_ips": ["10.0.0.1/32"]}


def test_an_unknown_peer_is_none() -> None:
    assert peer_config([device(peer(A))], B) is None
    assert peer_config([], A) is None


@pytest.mark.parametrize("text,where", [
    ("[stall]\nwindow = 2", "stall.window"),
    ("[stall]\nwindow = \"15\"", "stall.window"),
    ("[stall]\nmin_drops = 0", "stall.min_drops"),
    ("[stall]\nmin_drops = 1.5", "stall.min_drops"),
    ("[stall]\nretry = 1", "stall.retry"),
    ("[stall]\nrecover = 1", "stall.recover"),
    ("[stall]\nwindw = 10", "stall.windw"),
    ("stall = 3", "stall"),
])
def test_bad_stall_settings_are_named(text: str, where: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(text, online_cores=4)
    assert where in str(err.value)


def test_stall_settings_are_read() -> None:
    p = parse_policy("[stall]\nwindow = 30\nmin_drops = 10\nrecover = false\nretry = 60\n"
                     "detect = true", online_cores=4)
    assert (p.stall.window, p.stall.min_drops, p.stall.recover, p.stall.retry,
            p.stall.detect) == (30.0, 10, False, 60.0, True)


def test_the_devices_kept_off_round_trip_through_the_state_file(tmp_path) -> None:
    from wghybrid.daemon.state import DaemonState, NapiOff, StateStore

    store = StateStore(tmp_path)
    state = DaemonState(napi_off=(NapiOff("wg0", "off since peer x stalled"),))
    store.save(state)
    assert store.load() == state
    # A state file written before the key existed still loads.
    store.path.write_text('{"version": 1, "overrides": [], "unmanaged": []}')
    assert store.load() == DaemonState()


@pytest.mark.parametrize("value,says", [
    ('{"interface": "wg0"}', "not a list"),
    ('[["wg0"]]', "threaded_napi_off entry is malformed"),
    ('[{"interface": ""}]', "interface is empty"),
    ('[{"interface": "wg\\u00070"}]', "control character"),
    ('[{"interface": "wg0", "reason": 7}]', "reason is not a string"),
    ('[' + ", ".join(['{"interface": "wg0"}'] * 4097) + ']', "more than 4096"),
])
def test_a_bad_threaded_napi_off_entry_is_named(tmp_path, value: str, says: str) -> None:
    from wghybrid.daemon.state import StateError, StateStore

    store = StateStore(tmp_path)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_text('{"version": 1, "overrides": [], "unmanaged": [], '
                          f'"threaded_napi_off": {value}}}')
    with pytest.raises(StateError) as err:
        store.load()
    assert says in str(err.value) and str(store.path) in str(err.value)


STALL_SCENARIO = """
name = "stall-file"
cores = 4
duration = 100
[[group]]
name = "site"
count = 3
gbps = 1.0
"""


def test_a_scenario_names_its_stalls() -> None:
    from wghybrid.sim import parse_scenario

    sc = parse_scenario(STALL_SCENARIO + '[[stall]]\ntunnel = "site-1"\nat = 30\n'
                        '[[stall]]\ntunnel = "site-2"\nat = 0\nkind = "until-recreated"\n')
    assert [(s.index, s.at, s.napi) for s in sc.stalls] == [(1, 30.0, True), (2, 0.0, False)]
    assert parse_scenario(STALL_SCENARIO).stalls == ()


@pytest.mark.parametrize("stall,says", [
    ('^stall = 3', "stall: expected an array of tables"),
    ('[[stall]]\ntunnel = "site-9"\nat = 1', "stall[0].tunnel: no tunnel named 'site-9'"),
    ('[[stall]]\nat = 1', "stall[0].tunnel: missing"),
    ('[[stall]]\ntunnel = "site-0"', "stall[0].at: missing"),
    ('[[stall]]\ntunnel = "site-0"\nat = 101', "stall[0].at: 101 is above the maximum"),
    ('[[stall]]\ntunnel = "site-0"\nat = -1', "stall[0].at: -1 is below the minimum"),
    ('[[stall]]\ntunnel = "site-0"\nat = 1\nkind = "forever"', "stall[0].kind: 'forever'"),
    ('[[stall]]\ntunnel = "site-0"\nat = 1\nwhen = 2', "stall[0].when: unknown key"),
    ('[[stall]]\ntunnel = "site-0"\nat = 1\n[[stall]]\ntunnel = "site-0"\nat = 2',
     "stall[1].tunnel: 'site-0' stalls twice"),
    ("\n".join(['[[stall]]\ntunnel = "site-0"\nat = 1'] * 4), "at most one per tunnel"),
])
def test_a_bad_stall_in_a_scenario_is_named(stall: str, says: str) -> None:
    from wghybrid.sim import parse_scenario
    from wghybrid.sim.scenario import ScenarioError

    text = stall[1:] + STALL_SCENARIO if stall.startswith("^") else STALL_SCENARIO + stall
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, source="s.toml")
    assert str(err.value).startswith("s.toml: ") and says in str(err.value)


def test_a_scenario_stall_begins_on_time_and_ends_as_its_kind_says() -> None:
    from wghybrid.model import SetThreadedNapi, raw_key
    from wghybrid.sim import parse_scenario
    from wghybrid.sim.gateway import SimGateway

    sc = parse_scenario(STALL_SCENARIO + '[[stall]]\ntunnel = "site-1"\nat = 30\n'
                        '[[stall]]\ntunnel = "site-2"\nat = 30\nkind = "until-recreated"\n')
    gw = SimGateway(sc)
    gw.advance(29.0)
    assert not gw.stalled.any()
    gw.advance(30.5)
    rx = gw.rx_packets.copy()
    gw.advance(40.0)
    assert gw.stalled.tolist() == [False, True, True]
    assert gw.rx_packets[1] - rx[1] < 1e-6 * rx[1] and gw.rx_packets[0] > rx[0]
    gw.apply(SetThreadedNapi("wg0", False))
    assert gw.stalled.tolist() == [False, False, True]
    gw.recreate_peer("wg0", raw_key(gw.keys[2]))
    assert not gw.stalled.any()
    gw.advance(100.0)
    assert not gw.stalled.any(), "a stall begins once"
