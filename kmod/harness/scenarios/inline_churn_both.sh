#!/bin/bash
# Harder than inline_churn: both ends remove and re-add each other (A every round,
# B every third), at random intervals of 0-0.2 s, for 45 s and at least 9 rounds,
# under two UDP streams each way (as fast as they go) and a flood ping, so that
# peers die, are re-created and complete handshakes (new keypairs) while packets
# are being encrypted, sent, decrypted and polled inline on every CPU. No crash,
# no kernel warning or soft lockup, the tunnel works afterwards with both peers
# still inline, and the module unloads (no leaked peer or keypair reference).
. /mnt/kmod/harness/guest/lib.sh
setup_pair inline
na ping -c 2 -W 2 192.168.77.2 >/dev/null
for p in 5202 5203; do ip netns exec wgh-a iperf3 -s -D -B 192.168.77.1 -p $p; done
for p in 5204 5205; do ip netns exec wgh-b iperf3 -s -D -B 192.168.77.2 -p $p; done
sleep 1
step "traffic both ways for 45 s while both ends remove and re-add each other"
end=$((SECONDS + 45))
# The load runs as long as the churn does (a slow guest may need more than 45 s for
# 9 rounds). iperf3 stops at the first ENOKEY (no peer for a moment): restart it.
# A client is given 20 s for its 5 s (it can wait for ever on its control
# connection): one that overruns is counted, and the tunnel check below says
# whether the tunnel still works.
overran() { echo x >>/tmp/overran; sleep 0.05; }
touch /tmp/churning /tmp/overran
for p in 5202 5203; do
	(while [[ -e /tmp/churning ]]; do
		rc=0
		nb timeout -k 2 20 iperf3 -c 192.168.77.1 -p $p -u -b 200M -l 1300 -t 5 >/dev/null 2>&1 || rc=$?
		case $rc in 0) ;; 124 | 137) overran ;; *) sleep 0.05 ;; esac
	done) &
done
for p in 5204 5205; do
	(while [[ -e /tmp/churning ]]; do
		rc=0
		na timeout -k 2 20 iperf3 -c 192.168.77.2 -p $p -u -b 200M -l 1300 -t 5 >/dev/null 2>&1 || rc=$?
		case $rc in 0) ;; 124 | 137) overran ;; *) sleep 0.05 ;; esac
	done) &
done
(while [[ -e /tmp/churning ]]; do
	na ping -q -f -s 1200 -c 2000 -W 1 192.168.77.2 >/dev/null 2>&1 || true
done) &
a=0 b=0
while ((SECONDS < end || a < 9)); do
	na wg set wg0 peer "$KEY_B" remove
	na wg set wg0 peer "$KEY_B" endpoint 10.9.0.2:51820 allowed-ips 192.168.77.2/32
	a=$((a + 1))
	sleep "0.$((RANDOM % 3))"
	if ((a % 3 == 0)); then
		nb wg set wg0 peer "$KEY_A" remove
		nb wg set wg0 peer "$KEY_A" endpoint 10.9.0.1:51820 allowed-ips 192.168.77.1/32
		b=$((b + 1))
	fi
done
rm /tmp/churning
wait
echo "A re-created its peer $a times, B $b times; iperf3 clients that overran 20 s: $(wc -l </tmp/overran)"
step "the tunnel works both ways, both peers are inline"
tunnel_up wgh-a 192.168.77.2 || die "no way from A to B through the tunnel after the churn"
tunnel_up wgh-b 192.168.77.1 || die "no way from B to A through the tunnel after the churn"
for ns in wgh-a wgh-b; do
	nx "$ns" wghctl stats wg0 | python3 -c '
import json, sys
(r,) = json.load(sys.stdin)
print(sys.argv[1], r)
assert r["mode"] == 1, "the re-created peer is not inline (default_mode)"
assert r["tx_packets"] > 0 and r["rx_packets"] > 0, "no traffic since the last re-creation"
' "$ns"
done
# After the unload: what tearing the devices down and unloading reports counts too.
unload_module
check_dmesg
