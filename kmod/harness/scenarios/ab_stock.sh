#!/bin/bash
# by-hand: a measurement, not a test: left out of "all" (CI_SCENARIOS, run.sh's default).
# Issue 12, "Vanilla costs what upstream costs": in ONE boot, trials interleaved round by
# round: Debian's stock wireguard.ko (/opt/wghybrid/stock-wireguard.ko, run.sh), the
# patched module with vanilla peers, the patched module with inline peers. Each round
# runs the three in another order (the six permutations in turn, so each mode is first,
# second and third equally often and drift of the host cancels). Each trial loads its
# module, builds the same topology (lib.sh: two netns joined by veth, one tunnel), waits
# for the handshake, then runs one iperf3 TCP stream A -> B for WGH_AB_SECONDS (10) and
# reads /proc/stat around the client: the guest's busy CPU time (every state but idle and
# iowait, over all CPUs: softirq, kworkers and iperf3 included). The module is unloaded
# (rmmod, checked) after each trial. One machine-readable line per trial, "AB trial=...";
# bench/kmod_ab.py parses them and judges (qemu TCG timings are not hardware timings:
# only the same-run ratios mean something).
. /mnt/kmod/harness/guest/lib.sh
rounds=${WGH_AB_ROUNDS:-6}
secs=${WGH_AB_SECONDS:-10}
STOCK=/opt/wghybrid/stock-wireguard.ko
[[ -e $STOCK ]] || die "no stock module at $STOCK"
# The stock module's dependencies (the patched one has the same); they stay loaded
# across trials, so no trial pays for loading them.
modprobe -a $(modinfo -F depends "$STOCK" | tr , ' ')
orders=("stock vanilla inline" "inline vanilla stock" "vanilla inline stock"
	"stock inline vanilla" "inline stock vanilla" "vanilla stock inline")
hz=$(getconf CLK_TCK)
echo "AB config rounds=$rounds seconds=$secs kernel=$(uname -r) cpus=$(nproc) hz=$hz"

load() {
	if [[ $1 == stock ]]; then
		insmod "$STOCK"
		[[ ! -e /sys/module/wireguard/parameters/default_mode ]] ||
			die "the module loaded from $STOCK has default_mode: not the stock one"
	else
		modprobe wireguard default_mode="$1"
		[[ $(</sys/module/wireguard/parameters/default_mode) == "$1" ]] ||
			die "default_mode is not $1"
	fi
}

unload() {
	teardown_pair
	local i
	for i in $(seq 100); do # the namespaces' devices go away asynchronously
		rmmod wireguard 2>/dev/null && break
		sleep 0.1
	done
	! grep -q '^wireguard ' /proc/modules || die "wireguard.ko does not unload: $(grep '^wireguard ' /proc/modules)"
}

# sample: B's veth0 and wg0 rx bytes, the time (ns), /proc/stat's aggregate line (user
# nice system idle iowait irq softirq steal), one process for all.
sample() {
	nb awk 'FNR == 1 && FILENAME ~ /statistics/ { printf "%s ", $1 }
		$1 == "cpu" { print t, $2, $3, $4, $5, $6, $7, $8, $9; exit }' t="$(date +%s%N)" \
		/sys/class/net/veth0/statistics/rx_bytes /sys/class/net/wg0/statistics/rx_bytes /proc/stat
}

declare -A srcv
trial=0
for ((r = 1; r <= rounds; r++)); do
	pos=0
	for mode in ${orders[$(((r - 1) % ${#orders[@]}))]}; do
		trial=$((trial + 1)) pos=$((pos + 1))
		step "trial $trial: round $r, #$pos, $mode"
		load "$mode"
		setup_topology
		tunnel_up wgh-a 192.168.77.2
		start_iperf_server
		# The window: WGH_AB_SECONDS inside the stream, after 2 s of ramp-up (iperf3's
		# start and end, the same in every mode, would dilute the difference). Bytes: B's
		# veth0 received (the encrypted stream, counted by veth, not by the module
		# measured), and B's wg0 (decrypted). Both readings run the same command.
		na iperf3 -c 192.168.77.2 -t $((secs + 4)) -J >/tmp/ab.json &
		client=$!
		sleep 2
		read -r v0 g0 t0 u0 n0 s0 i0 w0 q0 sq0 st0 < <(sample)
		sleep "$secs"
		read -r v1 g1 t1 u1 n1 s1 i1 w1 q1 sq1 st1 < <(sample)
		wait $client || die "iperf3 failed: $(tail -n 5 /tmp/ab.json)"
		read -r ibytes retrans < <(python3 -c 'import json, sys
e = json.load(open("/tmp/ab.json"))["end"]
print(e["sum_received"]["bytes"], e["sum_sent"].get("retransmits", -1))')
		user=$((u1 - u0 + n1 - n0)) system=$((s1 - s0)) irq=$((q1 - q0)) softirq=$((sq1 - sq0))
		steal=$((st1 - st0)) idle=$((i1 - i0 + w1 - w0))
		busy=$((user + system + irq + softirq + steal))
		if [[ $mode != stock ]]; then # both ends' peers really are in that mode
			want=$([[ $mode == inline ]] && echo 1 || echo 0)
			for n in wgh-a wgh-b; do
				got=$(nx "$n" wghctl stats wg0 | python3 -c 'import json, sys; print(*[r["mode"] for r in json.load(sys.stdin)])')
				[[ $got == "$want" ]] || die "$n: peer mode $got, not $want ($mode)"
			done
		fi
		srcv[$mode]=$(cat /sys/module/wireguard/srcversion 2>/dev/null || echo none)
		echo "AB trial=$trial round=$r pos=$pos mode=$mode bytes=$((v1 - v0)) wg_bytes=$((g1 - g0)) elapsed_ns=$((t1 - t0)) iperf_bytes=$ibytes retrans=$retrans busy=$busy user=$user system=$system irq=$irq softirq=$softirq steal=$steal idle=$idle hz=$hz srcversion=${srcv[$mode]}"
		unload
	done
done
# The stock module is another module than the patched one (same name, same parameters
# otherwise): their srcversions differ.
[[ ${srcv[stock]} == none || ( ${srcv[stock]} != "${srcv[vanilla]}" && ${srcv[vanilla]} == "${srcv[inline]}" ) ]] ||
	die "srcversions: stock ${srcv[stock]}, vanilla ${srcv[vanilla]}, inline ${srcv[inline]}"
echo "AB done trials=$trial"
check_dmesg
