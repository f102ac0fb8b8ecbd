#!/bin/bash
# Issue 12, finding 8: the threaded-NAPI stall (CVE-2026-52945, upstream's "enable
# threaded NAPI" reverted from the stable kernels): with threaded NAPI on, once a
# peer's rx_queue held MAX_QUEUED_PACKETS (1024), wg_packet_rx_poll() was never
# called again for it and its decryption stalled for good. The daemon sets
# /sys/class/net/wg0/threaded to 1, as the reports did by hand.
#
#  ┌──────────── netns wgh-a ────────────┐      ┌──────────── netns wgh-b ────────────┐
#  │ wg0 192.168.77.1/24  (peer B)       │      │ wg0 192.168.77.2/24  (peer A)       │
#  │ veth0 10.9.0.1/24 ──────────────────┼──────┼── veth0 10.9.0.2/24  threaded=1     │
#  └─────────────────────────────────────┘      └─────────────────────────────────────┘
#
# B's wg0 has threaded NAPI (its peer's poll runs in a napi/wg0-N kthread). The
# flood is made to outrun the poll, as heavy load does on a gateway: the NAPI kthread
# is pinned to CPU 0, where a SCHED_FIFO busy loop runs for the first 5 s of the
# flood (RT throttling leaves the CPU's other tasks 5 %), while everything else of
# the tunnel runs on CPU 1 (B's veth0 steers the datagrams there with RPS, B's and
# A's crypt cpumasks are {1}, A's iperf3 is pinned there: an inline peer decrypts in
# CPU 1's softirq, a vanilla one in CPU 1's crypt worker). A floods B with UDP as
# fast as it can (two streams) for 6 s, so B's peer queue fills and overflows: drops
# counted at B (a vanilla peer's rx_queue holds every packet from its arrival to its
# poll, the device's decrypt ring only those not yet decrypted, so the peer queue is
# full first; an inline peer's holds them from their decryption to the poll). Then
# the flood stops and B's peer must still decrypt: 10 pings A -> B within 15 s get
# replies (each request decrypted by B) and B's rx_packets grow by at least 10.
# Phases:
#   vanilla   B's peer vanilla through the flood
#   inline    B's peer inline
#   switch    vanilla, switched to inline 2 s into the flood (the queue then holds
#             packets of both paths)
. /mnt/kmod/harness/guest/lib.sh
setup_pair vanilla
nb bash -c 'echo 1 >/sys/class/net/wg0/threaded'
[[ $(nb cat /sys/class/net/wg0/threaded) == 1 ]] || die "threaded NAPI did not turn on"
(($(nproc) >= 2)) || die "needs 2 CPUs (run.sh gives -smp 2)"
nb wghctl set-device wg0 1
na wghctl set-device wg0 1
nb bash -c 'echo 2 >/sys/class/net/veth0/queues/rx-0/rps_cpus'
tunnel_up wgh-a 192.168.77.2
napi_pids=$(ps -eo pid=,comm= | awk '$2 ~ /^napi\/wg0/ { print $1 }')
echo "B's NAPI kthread(s), pid: $(echo $napi_pids)"
[[ -n $napi_pids ]] || die "no napi/wg0-N thread: NAPI is not threaded"
for p in $napi_pids; do taskset -pc 0 "$p" >/dev/null; done
# counts: B's peer's "drops rx_packets".
counts() { nb wghctl stats wg0 | python3 -c "import json, sys; r = json.load(sys.stdin)[0]; print(r['drops'], r['rx_packets'])"; }

FAILS=0
phase() {
	local name=$1 mode=$2 switch_to=${3:-} d0 d1 rx0 rx1 rx
	step "$name: B's peer $mode${switch_to:+, switched to $switch_to 2 s into the flood}, threaded NAPI"
	nb wghctl set-peer wg0 "$KEY_A" --mode "$mode"
	if ! tunnel_up wgh-a 192.168.77.2; then
		echo "FAIL $name: no reply through the tunnel before the flood (stalled since before?)"
		FAILS=$((FAILS + 1))
		return
	fi
	read -r d0 rx < <(counts)
	start_iperf_server
	# iperf3 waits for its results on a TCP connection through the tunnel: a stalled
	# peer would keep it waiting (TCP backs off for minutes), so it has 40 s.
	(exec timeout 40 taskset -c 1 ip netns exec wgh-a iperf3 -c 192.168.77.2 -u -b 0 -P 2 -l 1200 -t 6 >/tmp/stall-$name.txt 2>&1) &
	local ip=$!
	# timeout stays an ordinary task (on either CPU), so that it can end the loop.
	timeout 5 taskset -c 0 chrt -f 10 bash -c 'while :; do :; done' &
	local hog=$!
	if [[ -n $switch_to ]]; then
		sleep 2
		nb wghctl set-peer wg0 "$KEY_A" --mode "$switch_to"
	fi
	wait $hog || true
	wait $ip || true # its results come through the tunnel: a stall would fail it
	grep -E 'SUM.*receiver' /tmp/stall-$name.txt | sed 's/^/   /' || true
	sleep 1
	read -r d1 rx0 < <(counts)
	echo "   B dropped $((d1 - d0)) packets during the flood (the peer queue was full)"
	if ((d1 - d0 == 0)); then
		echo "FAIL $name: the flood never filled B's peer queue: the check would say nothing"
		FAILS=$((FAILS + 1))
		return
	fi
	local ok=1
	na ping -c 10 -i 0.2 -w 15 192.168.77.2 >/tmp/stall-ping.txt || ok=0
	grep -E 'packets transmitted' /tmp/stall-ping.txt | sed 's/^/   /' || true
	read -r d1 rx1 < <(counts)
	echo "   B's rx_packets: +$((rx1 - rx0)) after the flood"
	((rx1 - rx0 >= 10)) || ok=0
	if ((ok)); then
		echo "ok   $name: B's peer still decrypts after its queue overflowed"
	else
		echo "FAIL $name: B's peer stopped decrypting after its queue overflowed"
		nb wghctl stats wg0
		FAILS=$((FAILS + 1))
	fi
}

phase vanilla vanilla
phase inline inline
phase switch vanilla inline
((FAILS == 0)) || die "$FAILS threaded-NAPI checks failed"
unload_module
check_dmesg
