#!/bin/bash
# PENDING: this scenario FAILS on the current module (trixie, 6.12.118+deb13-amd64,
# 2026-12-07), so it is kept out of scenarios/. Run it by copying it there:
#   cp kmod/harness/pending/nesting.sh kmod/harness/scenarios/ &&
#   WGHYBRID_KMOD_TARGET=trixie kmod/harness/run.sh nesting
#
# What fails: with every peer inline, the innermost tunnel (wg3, the 4th level)
# never completes a handshake: "wgh-a -> 192.168.80.2: no reply in 30 s", while
# wg0, wg1 and wg2 answer (192.168.77.2, .78.2, .79.2: a reply after 0-1 s). Each
# try is dropped by the kernel below the module, in iptunnel_xmit() of wg0's send:
#
#   wgh-a -> 192.168.79.2: a reply after 0 s
#   wgh-a -> 192.168.80.2: no reply in 30 s
#   (A's wg0 peer: tx_packets 16, drops 0; B's wg0 peer: rx_packets 13, drops 0)
#   FAIL: exit 1 at nesting.sh:100: return 1
#   --- dmesg during nesting:
#   [  230.026800] ip_tunnel_core: Dead loop on virtual device wg0, fix it urgently!
#   [  235.240202] ip_tunnel_core: Dead loop on virtual device wg0, fix it urgently!
#   ... every ~5 s (REKEY_TIMEOUT: wg3's handshake initiation retried)
#
# Why: Debian's 6.12.118 has IP_TUNNEL_RECURSION_LIMIT 5 (include/net/ip_tunnels.h:
# "tunnel recursion involves route lookups and full IP output, consuming much more
# stack per level, so a lower limit is needed"); iptunnel_xmit() drops the packet
# when dev_recursion_level() > 5 and itself increments the level, as
# __dev_queue_xmit() does around ndo_start_xmit. Inline encapsulation is synchronous,
# so each nested WireGuard level adds 2: wg3's handshake initiation, sent from the
# handshake worker at level 0, reaches iptunnel_xmit() for wg2 at 1... for wg0 at 6
# > 5 (a data packet sent into wg3 through __dev_queue_xmit starts 1 higher). Vanilla
# hands every level to a worker, where the level starts again at 0, so the same
# topology should work in vanilla (this scenario runs inline first and stops at its
# failure; a vanilla-first run is noted below when there is one). The dropped
# packet is counted by WireGuard as sent (tx_packets) and nowhere as dropped
# (udp_tunnel_xmit_skb() returns nothing): A's wg0 tx 16 against B's rx 13, drops 0
# at both, so "every packet sent was received or counted dropped"
# does not hold either; only wg0's netdev tx_errors counts it.
#
# Vanilla first (the same file with "for mode in vanilla inline", 2026-12-07): vanilla
# PASSES all four levels (wg3 answers at once, ping both ways, iperf3 through wg3
# 2,359,296 bytes in 3 s, every level counting, tx == rx at each level, no transmit
# nested); switched to inline, the established wg3 session stops too ("no reply in
# 30 s", "Dead loop on virtual device wg0" about once a second: now data packets),
# and A's wg0 counted tx 2295 against B's rx 2271 with drops 0 at both.
# Not yet validated: the inline "nested" check (never reached) and so the $stack chain
# measure, which has only read 0 in vanilla.
#
# Four levels of WireGuard over WireGuard between two namespaces: wg1 runs over wg0's
# addresses, wg2 over wg1's, wg3 over wg2's. Inline makes encapsulation synchronous: a
# packet sent into wg3 is encrypted and sent into wg2 in the same call, and so on down
# to veth, so each level stacks a whole UDP/IP output path on the sender's stack (the
# kernel allows 8 levels of nested transmits, XMIT_RECURSION_LIMIT).
#
#  ┌──────────── netns wgh-a ────────────┐      ┌──────────── netns wgh-b ────────────┐
#  │ wg3 192.168.80.1  over ↓ :51823     │      │ wg3 192.168.80.2  over ↓ :51823     │
#  │ wg2 192.168.79.1  over ↓ :51822     │      │ wg2 192.168.79.2  over ↓ :51822     │
#  │ wg1 192.168.78.1  over ↓ :51821     │      │ wg1 192.168.78.2  over ↓ :51821     │
#  │ wg0 192.168.77.1  over ↓ :51820     │      │ wg0 192.168.77.2  over ↓ :51820     │
#  │ veth0 10.9.0.1/24 ──────────────────┼──────┼── veth0 10.9.0.2/24                 │
#  └─────────────────────────────────────┘      └─────────────────────────────────────┘
#  MTU 1420, 1340, 1260, 1180 (80 bytes of IPv4 + WireGuard per level)
#
# Per mode, inline then vanilla (every peer of every level): ping both ways and 3 s
# of iperf3 through wg3; every level's peers in that mode and counting; kprobe events
# on wg_xmit (each level's ndo_start_xmit) and veth_xmit with the stack pointer show
# the nesting: inline, one send into wg3 reaches veth in one call chain through all
# four levels (how many bytes of stack that takes is reported); vanilla, each level
# hands off to a worker (no chain deeper than one wg_xmit). Then no kernel warning
# (a stack overflow would be a guard-page oops: Debian has VMAP_STACK and
# SCHED_STACK_END_CHECK, but no lockdep or KASAN), and the module unloads.
. /mnt/kmod/harness/guest/lib.sh
. "$H/guest/kprobes.sh"
LEVELS=4
addr() { echo "192.168.$((77 + $1)).$2"; } # addr LEVEL END(1=A, 2=B)
setup_pair inline                           # level 0: lib.sh's wg0 over veth0
for l in $(seq 1 $((LEVELS - 1))); do
	pa=$(wg genkey)
	pb=$(wg genkey)
	ka=$(wg pubkey <<<"$pa")
	kb=$(wg pubkey <<<"$pb")
	for end in 1 2; do
		ns=wgh-$([[ $end == 1 ]] && echo a || echo b)
		ip -n "$ns" link add "wg$l" type wireguard
		ip -n "$ns" link set "wg$l" mtu $((1420 - 80 * l))
		ip -n "$ns" addr add "$(addr "$l" "$end")/24" dev "wg$l"
	done
	na wg set "wg$l" private-key <(echo "$pa") listen-port $((51820 + l)) \
		peer "$kb" endpoint "$(addr $((l - 1)) 2):$((51820 + l))" allowed-ips "$(addr "$l" 2)/32"
	nb wg set "wg$l" private-key <(echo "$pb") listen-port $((51820 + l)) \
		peer "$ka" endpoint "$(addr $((l - 1)) 1):$((51820 + l))" allowed-ips "$(addr "$l" 1)/32"
	ip -n wgh-a link set "wg$l" up
	ip -n wgh-b link set "wg$l" up
done
TOP=$((LEVELS - 1))
kp_init
kp_add wgx wireguard wg_xmit 'sp=$stack:x64'
modprobe veth
kp_add vethx veth veth_xmit 'sp=$stack:x64'

FAILS=0
check() {
	local name=$1 what=$2
	shift 2
	if "$@"; then echo "ok   $name: $what"; else echo "FAIL $name: $what"; FAILS=$((FAILS + 1)); fi
}
set_mode() {
	local l k
	for l in $(seq 0 $TOP); do
		k=$(nb wg show "wg$l" public-key)
		na wghctl set-peer "wg$l" "$k" --mode "$1"
		k=$(na wg show "wg$l" public-key)
		nb wghctl set-peer "wg$l" "$k" --mode "$1"
	done
}
# chains: from the trace, per CPU in order, runs of wg_xmit hits each deeper on the
# same stack (stack pointer lower by 512 bytes to 8 KiB: a nested transmit, not the
# next work item of the same worker) ending at a veth_xmit; prints the longest run's
# number of wg_xmit levels and the bytes of stack from the first wg_xmit to veth_xmit.
chains() {
	python3 - "$T/trace" <<'PY'
import re, sys
line = re.compile(r"\[(\d+)\]\s+\S+\s+[\d.]+:\s+(wgx|vethx):.*sp=(0x[0-9a-f]+)")
runs = {}  # cpu -> current run [(event, sp)]
best = (0, 0)
for text in open(sys.argv[1]):
    m = line.search(text)
    if not m:
        continue
    cpu, ev, sp = int(m.group(1)), m.group(2), int(m.group(3), 16)
    run = runs.setdefault(cpu, [])
    if run and not 512 <= run[-1][1] - sp <= 8192:
        run.clear()
    run.append((ev, sp))
    if ev == "vethx":
        levels = sum(1 for e, _ in run if e == "wgx")
        depth = run[0][1] - sp if levels else 0
        best = max(best, (levels, depth))
        run.clear()
print(*best)
PY
}

for mode in inline vanilla; do
	step "$mode: every peer of the $LEVELS levels"
	set_mode "$mode"
	for l in $(seq 0 $TOP); do tunnel_up wgh-a "$(addr "$l" 2)" 30; done
	kp_start
	check "$mode/ping-ab" "ping A -> B through wg$TOP" na ping -c 5 -i 0.2 -W 2 "$(addr $TOP 2)"
	check "$mode/ping-ba" "ping B -> A through wg$TOP" nb ping -c 5 -i 0.2 -W 2 "$(addr $TOP 1)"
	nb iperf3 -s -1 -D -B "$(addr $TOP 2)" -I /tmp/iperf3-nest.pid
	for i in $(seq 100); do nb ss -tlnH 'sport = 5201' | grep -q . && break; sleep 0.1; done
	if na iperf3 -c "$(addr $TOP 2)" -t 3 -J >/tmp/iperf.json; then
		got=$(python3 -c 'import json; print(json.load(open("/tmp/iperf.json"))["end"]["sum_received"]["bytes"])')
	else
		got=0
	fi
	echo "   iperf3 through wg$TOP: $got bytes in 3 s"
	kp_stop
	check "$mode/iperf3" "iperf3 through wg$TOP moved 100 kB or more" eval "((got >= 100000))"
	((($(kp_lost)) == 0)) || echo "   (the trace buffer overwrote $(kp_lost) events)"
	read -r levels depth < <(chains)
	echo "   deepest chain of nested transmits: $levels wg_xmit levels down to veth_xmit, $depth bytes of stack"
	if [[ $mode == inline ]]; then
		check "$mode/nested" "one send into wg$TOP reaches veth through $LEVELS nested wg_xmit" \
			eval "((levels == LEVELS))"
	else
		check "$mode/handed-off" "no transmit nests in another (workers in between)" eval "((levels <= 1))"
	fi
	for l in $(seq 0 $TOP); do
		na wghctl stats "wg$l" >/tmp/a.json
		nb wghctl stats "wg$l" >/tmp/b.json
		check "$mode/wg$l" "wg$l: both ends in $mode, packets both ways" python3 - "$mode" <<'PY'
import json, sys
want = {"vanilla": 0, "inline": 1}[sys.argv[1]]
(a,), (b,) = json.load(open("/tmp/a.json")), json.load(open("/tmp/b.json"))
print(f"   A tx {a['tx_packets']} rx {a['rx_packets']} drops {a['drops']}; "
      f"B tx {b['tx_packets']} rx {b['rx_packets']} drops {b['drops']}")
ok = a["mode"] == want and b["mode"] == want
ok &= min(a["tx_packets"], a["rx_packets"], b["tx_packets"], b["rx_packets"]) > 0
raise SystemExit(0 if ok else 1)
PY
	done
done
kp_remove
((FAILS == 0)) || die "$FAILS nesting checks failed"
unload_module
check_dmesg
