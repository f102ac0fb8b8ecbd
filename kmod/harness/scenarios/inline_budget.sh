#!/bin/bash
# An inline sender's budget is counted in datagrams (issue 12, finding 4).
#
# Whoever owns a peer's WGH_TX_DRAINING sends the lists at the head of its tx_queue
# for every CPU that sends into the tunnel; an inline sender (in someone else's
# syscall or softirq, BH off) sends at most WGH_TX_INLINE_BUDGET before it hands the
# rest to the TX worker. The series before the fix counted that budget in lists (16),
# and a list holds up to 128 staged packets plus one GSO packet's segments: one
# inline sender could transmit ~2,700 datagrams in one go. The budget is now 64
# datagrams, counted by whole lists: one call sends at most 63 plus one list.
#
# The queue holds many ready lists only when the TX worker cannot run, so this makes
# that happen (topology of guest/lib.sh):
#   1. A's crypt cpumask {0} and its peer's TX core 1.
#   2. A SCHED_FIFO loop takes CPU 1 (RT throttling off and, on 6.12, the fair
#      server's runtime 0 meanwhile): the TX worker cannot run. One process, on
#      CPU 0, does steps 2 to 4.
#   3. A sends 30 UDP GSO messages (UDP_SEGMENT, 47 segments of 1372 bytes): vanilla,
#      each is one list, encrypted by the crypt worker on CPU 0 and left in tx_queue.
#   4. A's peer goes inline and A sends 3 more: each inline sender meets the backlog.
#   5. CPU 1 is given back; the TX worker sends the rest.
# kprobe events (guest/kprobes.sh) on wgh_tx_drain (with its peer and budget
# arguments) and on wg_socket_send_skb_to_peer (one per datagram) show, per CPU, how
# many datagrams each drain call sent. Checks:
#   - some inline drain sent more than one list (the backlog was met: else the
#     check below could not fail);
#   - no inline drain sent more than 63 + 2 lists' datagrams (63 + 94: two messages'
#     segments may share one list; with the list budget it was 16 lists, 752);
#   - every datagram given to the tunnel was sent (kprobe count and tx_packets).
. /mnt/kmod/harness/guest/lib.sh
. "$H/guest/kprobes.sh"
(($(nproc) >= 2)) || die "needs 2 CPUs (run.sh gives -smp 2)"
SEGS=47 BACKLOG=30 INLINE_MSGS=3 BUDGET=64

setup_pair vanilla
na wghctl set-device wg0 0
na wghctl set-peer wg0 "$KEY_B" --core 1
tunnel_up wgh-a 192.168.77.2
kp_init
kp_add drain wireguard wgh_tx_drain "peer=%di:x64 budget=%si:u32"
kp_add send wireguard wg_socket_send_skb_to_peer "peer=%di:x64"
# A's record of B: one field.
field() { na wghctl stats wg0 | grep -o "\"$1\": [0-9]*" | grep -o '[0-9]*$'; }

step "CPU 1 taken by a SCHED_FIFO loop; $BACKLOG vanilla messages, then $INLINE_MSGS inline"
rt=$(cat /proc/sys/kernel/sched_rt_runtime_us)
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
fs=/sys/kernel/debug/sched/fair_server/cpu1/runtime
fs_saved=
[[ -f $fs ]] && fs_saved=$(cat $fs)
# CPU 1's softirqs deferred to ksoftirqd wait while it is taken, and RCU would
# report a stall after 21 s: the loop gets 40 s of CPU at most (RLIMIT_RTTIME),
# and the stall timeout is 60 s meanwhile.
stall=/sys/module/rcupdate/parameters/rcu_cpu_stall_timeout
stall_saved=$(cat $stall)
restore() {
	# The fair server first: with it at 0 and RT unthrottled, 6.12 refuses the
	# RT runtime back (EBUSY).
	[[ -z $fs_saved ]] || echo "$fs_saved" >$fs
	echo "$rt" >/proc/sys/kernel/sched_rt_runtime_us
	echo "$stall_saved" >$stall
}
trap restore EXIT
echo 60 >$stall
echo -1 >/proc/sys/kernel/sched_rt_runtime_us
[[ -z $fs_saved ]] || echo 0 >$fs
tx0=$(field tx_packets)
kp_start
# One process does the whole time CPU 1 is taken (a process start is slow under
# TCG): the loop, the vanilla backlog, the wait until the crypt worker has
# encrypted it (it charges each list to the peer's tx_cpu_ns, which stops
# moving), the switch to inline, the inline sends, the end of the loop.
na taskset -c 0 python3 - "$H/guest" "$KEY_B" "$BACKLOG" "$INLINE_MSGS" "$SEGS" <<'PY'
import os, resource, socket, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
import wghctl
key, backlog, inline_msgs, segs = sys.argv[2], *map(int, sys.argv[3:6])
g = wghctl.Genl()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 32, 1 << 24)  # SO_SNDBUFFORCE: the TX worker frees nothing meanwhile
s.setsockopt(socket.SOL_UDP, 103, 1372)  # UDP_SEGMENT: one GSO packet, one list
buf = b"\0" * (1372 * segs)

def send(n):
    for _ in range(n):
        if s.sendto(buf, socket.MSG_DONTWAIT, ("192.168.77.2", 9)) != len(buf):
            sys.exit("a short send")

def take_cpu1():
    os.sched_setaffinity(0, {1})
    resource.setrlimit(resource.RLIMIT_RTTIME, (40_000_000, 41_000_000))
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))

hog = subprocess.Popen(["bash", "-c", "while :; do :; done"], preexec_fn=take_cpu1)
try:
    t0 = time.monotonic()
    # Fields 39 and 41 of its stat: the CPU it last ran on, its policy (1: FIFO).
    while open(f"/proc/{hog.pid}/stat").read().rsplit(")", 1)[1].split()[36:39:2] != ["1", "1"]:
        if time.monotonic() - t0 > 10:
            sys.exit("the SCHED_FIFO loop did not start on CPU 1")
        time.sleep(0.05)
    t0 = time.monotonic()
    send(backlog)
    prev = None
    for _ in range(200):
        time.sleep(0.1)
        cur = wghctl.stats(g, "wg0")[0]["tx_cpu_ns"]
        if cur == prev:
            break
        prev = cur
    else:
        sys.exit("the crypt worker did not finish the backlog in 20 s")
    wghctl.set_peer(g, "wg0", key, mode="inline")
    send(inline_msgs)
    took = time.monotonic() - t0
    if hog.poll() is not None:
        sys.exit(f"the loop on CPU 1 ended before the inline sends ({took:.1f} s): "
                 "a TX worker that ran meanwhile would make the check say nothing")
    print(f"CPU 1 was taken for {took:.1f} s")
finally:
    hog.kill()
    hog.wait()
PY
restore
sleep 2 # the TX worker sends what was handed to it
kp_stop
tx1=$(field tx_packets)
(($(kp_lost) == 0)) || die "the trace buffer overwrote $(kp_lost) events"

# A's peer is the one that sent most (B sends a few ICMP errors). Per CPU, the
# sends of A's peer after each drain call of A's peer (BH is off in an inline
# drain, so nothing else drains on that CPU meanwhile).
peer=$(awk '$0 ~ / send: / { for (i = 1; i <= NF; i++) if ($i ~ /^peer=/) print substr($i, 6) }' $T/trace | sort | uniq -c | sort -rn | awk 'NR == 1 { print $2 }')
read -r inline_drains inline_max inline_multi worker_drains worker_max sends < <(awk -v peer="$peer" -v segs="$SEGS" '
	function close_run(c) {
		if (!(c in kind)) return
		if (kind[c] == "inline") { n_in++; if (run[c] > in_max) in_max = run[c]; if (run[c] > segs) multi++ }
		else { n_w++; if (run[c] > w_max) w_max = run[c] }
		delete kind[c]
	}
	$0 ~ /^#/ { next }
	{
		for (i = 1; i <= NF; i++) if ($i ~ /^\[[0-9]+\]$/) { cpu = $i; break }
		p = ""; b = ""
		for (j = i; j <= NF; j++) { if ($j ~ /^peer=/) p = substr($j, 6); if ($j ~ /^budget=/) b = substr($j, 8) }
		if (p != peer) next
	}
	/ drain: / { close_run(cpu); kind[cpu] = (b == "4294967295" ? "worker" : "inline"); run[cpu] = 0; next }
	/ send: / { total++; if (cpu in kind) run[cpu]++ }
	END { for (c in kind) close_run(c); printf "%d %d %d %d %d %d\n", n_in, in_max, multi, n_w, w_max, total }' $T/trace)
cp $T/trace /mnt/results/inline_budget.trace 2>/dev/null || true
kp_remove
want=$(((BACKLOG + INLINE_MSGS) * SEGS))
bound=$((BUDGET - 1 + 2 * SEGS))
echo "inline drains: $inline_drains; the most datagrams one sent: $inline_max (bound $bound);" \
	"$inline_multi sent more than one list; TX worker drains: $worker_drains, the longest $worker_max"
echo "datagrams sent: $sends by kprobe, tx_packets +$((tx1 - tx0)); given to the tunnel: $want"
((inline_multi > 0)) || die "no inline drain met the backlog: this check could not fail"
((inline_max <= bound)) || die "an inline sender sent $inline_max datagrams in one call (bound $bound)"
((sends >= want && tx1 - tx0 >= want)) || die "datagrams were lost: $sends sent, tx_packets +$((tx1 - tx0)), $want given"
check_dmesg
unload_module
