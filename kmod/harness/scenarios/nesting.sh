#!/bin/bash
# Four levels of WireGuard over WireGuard with inline peers (issue 12, finding 9).
#
# On the series before the fix this FAILED on Debian's 6.12.118: with every peer
# inline, the innermost tunnel (wg3) never completed a handshake, each try dropped by
# the kernel below the module, in iptunnel_xmit() of wg0's send ("ip_tunnel_core: Dead
# loop on virtual device wg0, fix it urgently!" every ~5 s), and those packets were
# counted as sent (A's wg0 tx 2295 against B's rx 2271, drops 0 at both). Debian's
# 6.12.118 has IP_TUNNEL_RECURSION_LIMIT 5: iptunnel_xmit() drops a packet when
# dev_recursion_level() > 5 and itself adds 1 to the level, as __dev_queue_xmit()
# does around ndo_start_xmit, so synchronous inline encapsulation added 2 per level:
# a packet sent into wg3 reached wg0's iptunnel_xmit() at level 7. Now an inline
# sender above that level hands its packets to the vanilla path (hybrid.h,
# wgh_tx_inline_allowed()), whose workers start again at level 0. 6.1.192 has no
# IP_TUNNEL_RECURSION_LIMIT (its only limit, XMIT_RECURSION_LIMIT 8, is counted in
# __dev_queue_xmit() alone, 1 per level), so four levels passed there before the fix.
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
# Per mode, inline then vanilla (every peer of every level): every level's tunnel
# answers, ping both ways and 3 s of iperf3 through wg3; every level's peers in that
# mode and counting; once quiet, at every level each end's tx packets reached the
# other's rx or its drops (rx <= tx <= rx + drops: nothing the stack dropped is
# counted as sent); kprobe events on wg_xmit (each level's ndo_start_xmit) and
# veth_xmit with the stack pointer show the nesting: inline, a send into wg3 still
# nests through all four wg_xmit (on 6.12 the last one hands off; the bytes of stack
# the chain takes are printed); vanilla, each level hands off to a worker (no chain deeper
# than one wg_xmit); one on wg_packet_encrypt_worker counts hand-offs: inline, on
# 6.12, wg0's packets, sent into at level 7, go to the vanilla path (workers ran),
# on 6.1 no level is above 5 (none ran). Then no "Dead loop" and no warning in the
# kernel log (a stack overflow would be a guard-page oops: Debian has VMAP_STACK and
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
kp_add enc wireguard wg_packet_encrypt_worker

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
# chains: from the trace, per CPU in order, runs of wg_xmit and veth_xmit hits each
# deeper on the same stack (stack pointer lower by 512 bytes to 8 KiB: a nested
# transmit, not the next work item of the same context); prints the most wg_xmit
# levels nested in one run and the bytes of stack from its first hit to its deepest
# (a run ends at veth_xmit, or where a level hands its packets to the workers), then
# the most wg_xmit levels of a run that reached veth_xmit. The first can also count a
# softirq's send nested on the stack of a send it interrupted (seen in vanilla: 2);
# the second cannot, as a send handed to a worker never reaches veth in that run.
chains() {
	python3 - "$T/trace" <<'PY'
import re, sys
line = re.compile(r"\[(\d+)\]\s+\S+\s+[\d.]+:\s+(wgx|vethx):.*sp=(0x[0-9a-f]+)")
runs = {}  # cpu -> current run [(event, sp)]
best, to_veth = (0, 0), 0
for text in open(sys.argv[1]):
    m = line.search(text)
    if not m:
        continue
    cpu, ev, sp = int(m.group(1)), m.group(2), int(m.group(3), 16)
    run = runs.setdefault(cpu, [])
    if run and not 512 <= run[-1][1] - sp <= 8192:
        run.clear()
    run.append((ev, sp))
    levels = sum(1 for e, _ in run if e == "wgx")
    best = max(best, (levels, run[0][1] - sp if levels else 0))
    if ev == "vethx":
        to_veth = max(to_veth, levels)
        run.clear()
print(*best, to_veth)
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
	read -r levels depth to_veth < <(chains)
	echo "   deepest chain of nested transmits: $levels wg_xmit levels, $depth bytes of stack; to veth_xmit: $to_veth levels"
	if [[ $mode == inline ]]; then
		check "$mode/nested" "a send into wg$TOP nests through all $LEVELS wg_xmit (6.12: the last hands off)" \
			eval "((levels >= LEVELS))"
		enc=$(hits_total enc)
		echo "   crypt encrypt worker runs (hand-offs to the vanilla path): $enc"
		case $(uname -r) in
		6.1.*) check "$mode/no-handoff" "6.1: no level above the limit, no hand-off" eval "((enc == 0))" ;;
		*) check "$mode/handoff" "6.12: wg0 (sent into at level 7 > 5) handed off" eval "((enc > 0))" ;;
		esac
	else
		check "$mode/handed-off" "no transmit reaches veth nested in another (workers in between)" \
			eval "((to_veth <= 1))"
	fi
	for l in $(seq 0 $TOP); do
		stats_when_quiet "wg$l"
		check "$mode/wg$l" "wg$l: both ends in $mode, packets both ways, each sent one received or dropped" \
			python3 - "$mode" <<'PY'
import json, sys
want = {"vanilla": 0, "inline": 1}[sys.argv[1]]
(a,), (b,) = json.load(open("/tmp/a.json")), json.load(open("/tmp/b.json"))
print(f"   A tx {a['tx_packets']} rx {a['rx_packets']} drops {a['drops']}; "
      f"B tx {b['tx_packets']} rx {b['rx_packets']} drops {b['drops']}")
ok = a["mode"] == want and b["mode"] == want
ok &= min(a["tx_packets"], a["rx_packets"], b["tx_packets"], b["rx_packets"]) > 0
for s, r in ((a, b), (b, a)):
    ok &= r["rx_packets"] <= s["tx_packets"] <= r["rx_packets"] + r["drops"]
raise SystemExit(0 if ok else 1)
PY
	done
done
kp_remove
((FAILS == 0)) || die "$FAILS nesting checks failed"
unload_module
! dmesg | grep -F 'Dead loop' || die "the kernel dropped nested transmits (above)"
check_dmesg
