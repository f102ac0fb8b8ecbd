#!/bin/bash
# CPU hotplug under traffic, in each mode: both devices' crypt cpumask is {1} and both
# peers' TX core is 1, an iperf3 stream A -> B and a ping B -> A run, and CPU 1 is
# taken offline, then brought back. The uapi header promises the fallback: "If no CPU
# of the mask is online, every online CPU is used" and "A core that goes offline falls
# back to upstream's choice until it is online again".
#
#  ┌──────────── netns wgh-a ────────────┐      ┌──────────── netns wgh-b ────────────┐
#  │ wg0 192.168.77.1/24  (peer B)       │      │ wg0 192.168.77.2/24  (peer A)       │
#  │ veth0 10.9.0.1/24 ──────────────────┼──────┼── veth0 10.9.0.2/24                 │
#  └─────────────────────────────────────┘      └─────────────────────────────────────┘
#  crypt cpumask {1} and TX core 1 at both ends; CPU 1: online -> offline -> online
#
# Checked, per mode (names below): data keeps arriving at B with CPU 1 offline, and
# A gets B's packets; in vanilla the crypt and TX workers ran meanwhile (on CPU 0: the
# fallback); the stream and the ping end well; the mask and core read back unchanged;
# after CPU 1 is back (and the tunnel quiet), vanilla work runs only on CPU 1 again;
# every packet sent was received or counted dropped (at most 0.5 %). Then: no kernel
# warning, the module unloads. (Debian's production kernel: no lockdep or KASAN.)
. /mnt/kmod/harness/guest/lib.sh
. "$H/guest/kprobes.sh"
CPU=/sys/devices/system/cpu/cpu1/online
[[ -w $CPU ]] || die "CPU 1 cannot be taken offline here (no $CPU; CONFIG_HOTPLUG_CPU?)"
(($(nproc) >= 2)) || die "needs 2 CPUs (run.sh gives -smp 2)"
setup_pair
kp_init
kp_add enc wireguard wg_packet_encrypt_worker
kp_add dec wireguard wg_packet_decrypt_worker
kp_add tx wireguard wg_packet_tx_worker
trap 'echo 1 >$CPU 2>/dev/null || true' EXIT

FAILS=0
check() { # check NAME WHAT CMD...: CMD's status decides
	local name=$1 what=$2
	shift 2
	if "$@"; then echo "ok   $name: $what"; else echo "FAIL $name: $what"; FAILS=$((FAILS + 1)); fi
}
# rx NETNS: the one peer's rx_packets there.
rx() { nx "$1" wghctl stats wg0 | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["rx_packets"])'; }
# flows N LIMIT: within LIMIT s (polled), B's rx_packets grows by N (A's stream) and
# A's by N/20 (B's ACKs and pings), both measured over the same interval.
flows() {
	local n=$1 limit=$2 t0=$SECONDS a0 b0 a b
	a0=$(rx wgh-a)
	b0=$(rx wgh-b)
	while :; do # each reading starts python: seconds under TCG
		a=$(rx wgh-a)
		b=$(rx wgh-b)
		((b - b0 >= n && a - a0 >= n / 20 || SECONDS - t0 >= limit)) && break
	done
	echo "   in $((SECONDS - t0)) s: B +$((b - b0)) packets, A +$((a - a0))"
	((b - b0 >= n && a - a0 >= n / 20))
}
quiet() {
	local i
	for i in $(seq 10); do
		na wghctl stats wg0 >/tmp/q1 && nb wghctl stats wg0 >>/tmp/q1
		sleep 1
		na wghctl stats wg0 >/tmp/q2 && nb wghctl stats wg0 >>/tmp/q2
		cmp -s /tmp/q1 /tmp/q2 && return 0
	done
	die "the counters did not stand still in 10 s"
}
set_cpu1() { # 0 or 1; the write returns once the CPU is down or up
	echo "$1" >$CPU
	[[ $(cat $CPU) == "$1" && $(cat /sys/devices/system/cpu/online) == "$([[ $1 == 1 ]] && echo 0-1 || echo 0)" ]] ||
		die "CPU 1 online is $(cat $CPU), online CPUs $(cat /sys/devices/system/cpu/online)"
	echo "   CPU 1 online=$1 (online CPUs: $(cat /sys/devices/system/cpu/online))"
}
pos() { (($(hits_total "$1") > 0)); }
only_on() { local n; n=$(hits_total "$1"); ((n > 0 && $(hits_on "$1" "$2") == n)); }
none() { (($(hits_total "$1") == 0)); }

run_mode() {
	local mode=$1 iperf pinger
	step "$mode: crypt cpumask {1}, TX core 1 at both ends"
	na wghctl set-device wg0 1
	nb wghctl set-device wg0 1
	na wghctl set-peer wg0 "$KEY_B" --mode "$mode" --core 1
	nb wghctl set-peer wg0 "$KEY_A" --mode "$mode" --core 1
	tunnel_up wgh-a 192.168.77.2
	start_iperf_server
	# Both run until stopped below (under TCG on a busy host each reading of the
	# counters takes seconds, so no fixed duration is sure to cover the phases);
	# exec: $! is the process itself.
	(exec ip netns exec wgh-a iperf3 -c 192.168.77.2 -t 3600 >/tmp/iperf-$mode.txt 2>&1) &
	iperf=$!
	(exec ip netns exec wgh-b ping -q -i 0.05 -W 2 192.168.77.1 >/tmp/ping-$mode.txt 2>&1) &
	pinger=$!
	check "$mode/flowing" "data flows both ways before the unplug" flows 200 20

	step "$mode: CPU 1 offline under traffic"
	set_cpu1 0
	kp_start
	check "$mode/offline" "data keeps flowing both ways with CPU 1 offline" flows 1000 20
	kp_stop
	local ev
	for ev in enc dec tx; do echo "   $ev while offline: $(kp_cpus $ev)"; done
	if [[ $mode == vanilla ]]; then
		check "$mode/fallback-enc" "encrypt workers ran with the mask's only CPU offline" pos enc
		check "$mode/fallback-dec" "decrypt workers ran with the mask's only CPU offline" pos dec
		check "$mode/fallback-tx" "the TX worker ran with its core offline" pos tx
	fi

	step "$mode: CPU 1 online again"
	set_cpu1 1
	check "$mode/online" "data flows both ways with CPU 1 back" flows 1000 20
	check "$mode/stream" "the iperf3 stream is still running" kill -0 $iperf
	kill -INT $iperf $pinger
	wait $iperf $pinger || true
	echo "   ping: $(grep -o '[0-9]* packets transmitted.*loss' /tmp/ping-$mode.txt)"
	check "$mode/ping" "the ping lost under 10 %" eval \
		"(( \$(sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' /tmp/ping-$mode.txt | cut -d. -f1) < 10 ))"

	step "$mode: the configuration survived; work back on CPU 1"
	quiet
	check "$mode/mask" "A's crypt cpumask reads {1}" eval "na wghctl get wg0 | grep -q '\"crypt_cpus\": \[1\]'"
	check "$mode/core" "both records read core 1" eval \
		"na wghctl stats wg0 | grep -q '\"core\": 1,' && nb wghctl stats wg0 | grep -q '\"core\": 1,'"
	kp_start
	start_iperf_server
	na iperf3 -c 192.168.77.2 -t 2 >/dev/null
	nb ping -q -c 20 -i 0.02 -W 2 192.168.77.1 >/dev/null
	quiet
	kp_stop
	for ev in enc dec tx; do echo "   $ev after: $(kp_cpus $ev)"; done
	if [[ $mode == vanilla ]]; then
		check "$mode/back-enc" "encrypt workers only on CPU 1 again" only_on enc 1
		check "$mode/back-dec" "decrypt workers only on CPU 1 again" only_on dec 1
		check "$mode/back-tx" "the TX worker only on CPU 1 again" only_on tx 1
	else
		check "$mode/no-workers" "no crypt worker ran for inline peers" eval "none enc && none dec"
	fi

	# Read again once both ends stand still between two readings (lib.sh): quiet() above
	# ran seconds ago, and B's passive keepalive, 10 s after its last ping reply, can
	# fall between A's reading and B's (seen on a busy host: B's tx 26,889 against A's rx
	# 26,888, 32 bytes apart, one keepalive).
	stats_when_quiet
	check "$mode/counted" "each end's tx reached the other's rx or its drops; at most 0.5 % dropped" \
		python3 - <<'PY'
import json
(a,), (b,) = json.load(open("/tmp/a.json")), json.load(open("/tmp/b.json"))
print("   A's peer B:", {k: v for k, v in a.items() if k != "key"})
print("   B's peer A:", {k: v for k, v in b.items() if k != "key"})
ok = all(r["rx_packets"] <= s["tx_packets"] <= r["rx_packets"] + r["drops"]
         for s, r in ((a, b), (b, a)))
ok &= a["drops"] + b["drops"] <= (a["tx_packets"] + b["tx_packets"]) // 200
raise SystemExit(0 if ok else 1)
PY
}

run_mode vanilla
run_mode inline
kp_remove
trap - EXIT
((FAILS == 0)) || die "$FAILS hotplug checks failed"
unload_module
check_dmesg
