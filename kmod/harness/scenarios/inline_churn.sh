#!/bin/bash
# Peer removal, re-creation and fresh handshakes (new keypairs) while inline traffic
# flows: A removes and re-adds its peer B 30 times under a UDP stream in both
# directions; each time B's side completes a new handshake with A's new peer. No
# crash, no kernel warning, the tunnel works afterwards, A's peer has a new epoch
# and fresh counters, and the module unloads (no leaked peer or keypair reference).
. /mnt/kmod/harness/guest/lib.sh
setup_pair inline
na ping -c 2 -W 2 192.168.77.2 >/dev/null
epoch0=$(na wghctl stats wg0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["epoch"])')
start_iperf_server
ip netns exec wgh-a iperf3 -s -1 -D -B 192.168.77.1 -p 5202 -I /tmp/iperf3-a.pid
sleep 1
step "traffic both ways for 20 s while A removes and re-adds peer B 30 times"
# A -> B: pings of 1200 bytes every 2 ms, which go on through ENOKEY in the instants
# when A has no peer (iperf3 would stop there); B -> A: a UDP stream.
(
	end=$((SECONDS + 20))
	while ((SECONDS < end)); do
		na ping -q -s 1200 -i 0.002 -c 200 -W 1 192.168.77.2 >>/tmp/ab.txt 2>&1 || true
	done
) &
ab=$!
nb timeout -k 2 60 iperf3 -c 192.168.77.1 -p 5202 -u -b 10M -t 20 -J >/tmp/ba.json &
ba=$!
for i in $(seq 30); do
	sleep 0.5
	na wg set wg0 peer "$KEY_B" remove
	na wg set wg0 peer "$KEY_B" endpoint 10.9.0.2:51820 allowed-ips 192.168.77.2/32
	na ping -c 1 -W 1 192.168.77.2 >/dev/null 2>&1 || true # handshake now
done
# The streams are load, not the check (a sender may see ENOKEY while A has no peer).
wait $ab
grep -c transmitted /tmp/ab.txt | sed 's/^/ping rounds A -> B: /'
wait $ba || echo "iperf3 B -> A ended with an error"
step "the tunnel works, the peer is new"
na ping -c 3 -W 2 192.168.77.2
na wghctl stats wg0 | python3 -c '
import json, sys
(r,) = json.load(sys.stdin)
print(r)
assert r["mode"] == 1, "the re-added peer is not inline (default_mode)"
assert r["epoch"] != int(sys.argv[1]), "the re-added peer kept the old epoch"
assert 0 < r["tx_packets"] < 100000, "counters did not restart"
' "$epoch0"
# How much flowed depends on how fast the guest runs (a starved one churned through
# with A peerless most of the time): B's counters are checked against the echo
# replies A's pings got back, each of which B received and sent through the tunnel.
replies=$(awk '/ transmitted, / { for (i = 2; i <= NF; i++) if ($i == "received,") n += $(i - 1) } END { print n + 0 }' /tmp/ab.txt)
echo "echo replies A got from B: $replies"
nb wghctl stats wg0 | python3 -c '
import json, sys
(r,) = json.load(sys.stdin)
replies = int(sys.argv[1])
print("B, peer A:", r)
assert replies >= 100, f"only {replies} echo replies came back: the load did not run"
assert r["rx_packets"] >= replies and r["tx_packets"] >= replies, "B counted fewer packets than it answered"
assert r["drops"] == 0, "B dropped packets"
' "$replies"
# After the unload: what tearing the devices down and unloading reports counts too.
unload_module
check_dmesg
