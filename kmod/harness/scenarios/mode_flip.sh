#!/bin/bash
# Both ends of a tunnel switch mode (and TX core, and crypt cpumask) every 100 ms
# for 30 s under an iperf3 TCP stream: the stream survives, the counters never go
# back and agree at both ends, nothing is lost uncounted, dmesg stays clean, and the
# module unloads afterwards. Then 10 s more under a UDP stream, whose receiver
# counts datagrams out of order: there must be none.
. /mnt/kmod/harness/guest/lib.sh
setup_pair
na ping -c 2 -W 2 192.168.77.2 >/dev/null
start_iperf_server
step "iperf3 A -> B for 30 s while both peers flip every 100 ms"
na iperf3 -c 192.168.77.2 -t 30 -J >/tmp/iperf.json &
iperf=$!
na python3 "$H/guest/flip.py" wg0 "$KEY_B" 30 0.1 >/tmp/flip-a.json &
fa=$!
nb python3 "$H/guest/flip.py" wg0 "$KEY_A" 30 0.1 >/tmp/flip-b.json &
fb=$!
rc=0
wait $fa || rc=1
wait $fb || rc=1
wait $iperf || { echo "iperf3 failed:"; cat /tmp/iperf.json; rc=1; }
cat /tmp/flip-a.json /tmp/flip-b.json
((rc == 0)) || die "a flipper or iperf3 failed"
step "the tunnel still works"
na ping -c 3 -W 2 192.168.77.2
stats_when_quiet
python3 - <<'PY'
import json, sys
it = json.load(open("/tmp/iperf.json"))
got = it["end"]["sum_received"]["bytes"]
retr = it["end"]["sum_sent"].get("retransmits")
fa, fb = json.load(open("/tmp/flip-a.json")), json.load(open("/tmp/flip-b.json"))
(a,), (b,) = json.load(open("/tmp/a.json")), json.load(open("/tmp/b.json"))
print(f"iperf3: {got} bytes in 30 s ({got * 8 / 30e6:.1f} Mbit/s), {retr} retransmits")
print(f"flips: A {fa['flips']}, B {fb['flips']}")
print("A's peer B:", a)
print("B's peer A:", b)
errors = []
if min(fa["flips"], fb["flips"]) < 200:
    errors.append("fewer than 200 flips on a side")
if got < 1_000_000:
    errors.append("the stream moved less than 1 MB")
# Every data message one end sent reached the other's counters or was counted in its
# drops (veth does not lose here): switching loses nothing silently. A receiver may drop
# a few when its queues are full, as upstream's does: flip.py narrows the crypt cpumask
# to one CPU every other second, and under TCG a host busy elsewhere stalls that vCPU
# (seen on 6.12 with pytest running beside the guest: B dropped 152 of 269,796, exactly
# A's tx minus B's rx, and iperf3 counted 152 retransmits). Quiet runs drop none.
for (sn, s), (rn, r) in ((("A", a), ("B", b)), (("B", b), ("A", a))):
    if not r["rx_packets"] <= s["tx_packets"] <= r["rx_packets"] + r["drops"]:
        errors.append(f"{sn} sent {s['tx_packets']} pkts, {rn} got {r['rx_packets']} "
                      f"and dropped {r['drops']}")
    if r["rx_bytes"] > s["tx_bytes"] or (r["drops"] == 0 and r["rx_bytes"] != s["tx_bytes"]):
        errors.append(f"{sn} sent {s['tx_bytes']} B, {rn} got {r['rx_bytes']} B "
                      f"and dropped {r['drops']} pkts")
sent = a["tx_packets"] + b["tx_packets"]
if a["drops"] + b["drops"] > sent // 200:
    errors.append(f"more than 0.5 % dropped: {a['drops']} + {b['drops']} of {sent}")
if a["tx_bytes"] < got:
    errors.append("A tx_bytes below iperf3's bytes")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
PY
step "iperf3 UDP A -> B for 10 s while both peers flip every 100 ms"
steer_flows wgh-b
start_iperf_server -J
na iperf3 -c 192.168.77.2 -u -b 40M -l 1200 -t 10 -J --get-server-output >/tmp/udp.json &
iperf=$!
na python3 "$H/guest/flip.py" wg0 "$KEY_B" 10 0.1 >/tmp/flip-a.json &
fa=$!
nb python3 "$H/guest/flip.py" wg0 "$KEY_A" 10 0.1 >/tmp/flip-b.json &
fb=$!
rc=0
wait $fa || rc=1
wait $fb || rc=1
wait $iperf || { echo "iperf3 failed:"; cat /tmp/udp.json; rc=1; }
((rc == 0)) || die "a flipper or iperf3 failed"
stats_when_quiet
nb grep '^Udp:' /proc/net/snmp >/tmp/udp-snmp.txt
python3 - <<'PY'
import json, sys
doc = json.load(open("/tmp/udp.json"))
def find(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from find(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from find(v, key)
server = doc.get("server_output_json", {})
ooo = list(find(server, "out_of_order"))
packets = list(find(server.get("end", {}).get("sum", {}), "packets"))
lost = list(find(server.get("end", {}).get("sum", {}), "lost_packets"))
(a,), (b,) = json.load(open("/tmp/a.json")), json.load(open("/tmp/b.json"))
print(f"UDP: server saw packets {packets}, lost {lost}, out of order {ooo}")
print("B's UDP counters (datagrams lost outside WireGuard show as RcvbufErrors):")
print(open("/tmp/udp-snmp.txt").read().strip())
print(f"WireGuard: A drops {a['drops']}, B drops {b['drops']}; A tx {a['tx_packets']}, B rx {b['rx_packets']}")
errors = []
if not ooo:
    errors.append("iperf3's server reported no out_of_order count: "
                  + json.dumps(server)[:1500])
elif any(ooo):
    errors.append(f"datagrams arrived out of order: {ooo}")
if not packets or max(packets) < 1000:
    errors.append("fewer than 1000 datagrams arrived")
# Every datagram A sent is either received or counted as dropped by B: switching
# loses nothing silently. B may drop some: a fixed-rate flood meets a receiver whose
# crypt cpumask flip.py narrows to one CPU every other second, and its decrypt queue
# overflows (as upstream's does; seen on 6.12 under TCG: 461 and 1,389 of ~37,000).
# The exact no-loss check is the TCP phase above (zero drops, tx == rx).
if a["drops"]:
    errors.append(f"the sender dropped {a['drops']} packets")
if a["tx_packets"] != b["rx_packets"] + b["drops"]:
    errors.append(f"A's tx packets {a['tx_packets']} != B's rx {b['rx_packets']} + drops {b['drops']}")
if b["drops"] > a["tx_packets"] // 10:
    errors.append(f"B dropped more than a tenth: {b['drops']} of {a['tx_packets']}")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
PY
# After the unload: what tearing the devices down and unloading reports counts too.
unload_module
check_dmesg
