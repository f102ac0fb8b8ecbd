#!/bin/bash
# Issue 12, finding 5: after a vanilla -> inline switch under load, the peer's NAPI
# poll runs on the CPU that received the packets. The uapi header promises inline
# peers "decryption in the softirq that received the datagram, with the peer's NAPI
# scheduled on that same core".
#
#  ┌──────────── netns wgh-a ────────────┐      ┌──────────── netns wgh-b ────────────┐
#  │ wg0 192.168.77.1/24  (peer B)       │      │ wg0 192.168.77.2/24  (peer A)       │
#  │ veth0 10.9.0.1/24 ──────────────────┼──────┼── veth0 10.9.0.2/24  RPS -> CPU R   │
#  └─────────────────────────────────────┘      └─────────────────────────────────────┘
#
# For R = 1, then R = 0 (each vCPU in turn the receiving one, the other, O, the one
# of B's crypt cpumask): B's veth0 steers every datagram to CPU R (RPS, as a NIC's
# RSS queue would), B's crypt cpumask is {O}, so in vanilla B's decrypt worker runs on
# O and schedules the peer's NAPI there. A floods B with UDP (iperf3 pinned to O, A's
# crypt workers on both CPUs: both vCPUs busy), and B's peer is switched to inline
# in the middle of it. Kprobe events (guest/kprobes.sh; the trace clock "global", so
# that the two CPUs' events are in one order) record each call of wg_packet_receive
# (the datagram received: the CPU is the receiving one) and of wg_packet_rx_poll
# (with its napi pointer: B's peer's NAPI is the one polled most, A receives almost
# nothing), with a marker in the trace when the switch returned. Checked:
#   before   vanilla: B's datagrams received on R, B's polls on O (so the probes tell
#            the two apart, and a poll left on the old CPU would be seen)
#   after    from 1 s after the switch to the end of the flood: every poll of B's
#            NAPI on R
# "During" (the first second after the switch) is reported, not checked: packets
# the vanilla path queued before the switch are still polled where it scheduled.
# The check fails when the polls stay on the other CPU: WGH_NAPI_SWITCH_TO=vanilla
# "switches" to vanilla instead (the decrypt worker keeps scheduling the NAPI on O),
# and "after" fails (kmod/README.md, napi_locality, has the numbers).
. /mnt/kmod/harness/guest/lib.sh
. "$H/guest/kprobes.sh"
(($(nproc) >= 2)) || die "needs 2 CPUs (run.sh gives -smp 2)"
setup_pair vanilla
kp_init
echo 32768 >$T/buffer_size_kb # a flood of ~10 s: up to ~100k events on one CPU
echo global >$T/trace_clock
kp_add rcv wireguard wg_packet_receive 'wg=%di:x64'
kp_add poll wireguard wg_packet_rx_poll 'napi=%di:x64'
tunnel_up wgh-a 192.168.77.2

FAILS=0
run_cpu() {
	local r=$1 o=$((1 - $1))
	step "receiving CPU $r: B's RPS -> CPU $r, B's crypt cpumask {$o}, vanilla; switched to ${WGH_NAPI_SWITCH_TO:-inline} under a UDP flood"
	nb wghctl set-peer wg0 "$KEY_A" --mode vanilla
	nb wghctl set-device wg0 "$o"
	nb bash -c "echo $((1 << r)) >/sys/class/net/veth0/queues/rx-0/rps_cpus"
	start_iperf_server
	kp_start
	# The flood runs until stopped: 3 s, the switch (a Python start: seconds under TCG
	# on a busy host), 4 s more.
	(exec taskset -c "$o" ip netns exec wgh-a iperf3 -c 192.168.77.2 -u -b 100M -l 1200 -t 600 >/tmp/napi-iperf.txt 2>&1) &
	local ip=$!
	sleep 3
	nb wghctl set-peer wg0 "$KEY_A" --mode "${WGH_NAPI_SWITCH_TO:-inline}"
	echo "wgh-switched" >$T/trace_marker
	sleep 4
	kill -INT $ip
	wait $ip || true
	sleep 1
	kp_stop
	(($(kp_lost) == 0)) || die "the trace buffer overwrote $(kp_lost) events"
	grep -E 'receiver' /tmp/napi-iperf.txt | sed 's/^/   /' || true
	if python3 - "$r" "$o" $T/trace <<'PY'; then :; else FAILS=$((FAILS + 1)); fi
import collections, re, sys
r, o = int(sys.argv[1]), int(sys.argv[2])
ev = re.compile(r"\[(\d+)\].*?\s(\d+\.\d+): (rcv|poll): .*?(?:wg|napi)=(0x[0-9a-f]+)")
mark = re.compile(r"\s(\d+\.\d+): tracing_mark_write: wgh-switched")
events, t_switch = [], None
for line in open(sys.argv[3]):
    m = mark.search(line)
    if m:
        t_switch = float(m.group(1))
        continue
    m = ev.search(line)
    if m:
        events.append((float(m.group(2)), int(m.group(1)), m.group(3), m.group(4)))
if t_switch is None:
    print("FAIL: no switch marker in the trace")
    sys.exit(1)
# B's device and B's peer's NAPI: the ones with the most events (the flood's).
dev = collections.Counter(e[3] for e in events if e[2] == "rcv").most_common(1)[0][0]
napi = collections.Counter(e[3] for e in events if e[2] == "poll").most_common(1)[0][0]
def cpus(kind, key, lo, hi):
    c = collections.Counter(e[1] for e in events if e[2] == kind and e[3] == key and lo <= e[0] < hi)
    return {cpu: c[cpu] for cpu in sorted(c)}
inf = float("inf")
windows = {"before": (-inf, t_switch), "during": (t_switch, t_switch + 1),
           "after": (t_switch + 1, inf)}
got = {}
for w, (lo, hi) in windows.items():
    got[w] = (cpus("rcv", dev, lo, hi), cpus("poll", napi, lo, hi))
    print(f"   {w:6}: B's datagrams received per CPU {got[w][0]}, B's NAPI polls per CPU {got[w][1]}")
old_polls = [e[0] for e in events if e[2] == "poll" and e[3] == napi and e[1] == o and e[0] >= t_switch]
print(f"   the last poll of B's NAPI on CPU {o} came "
      + (f"{(max(old_polls) - t_switch) * 1000:.0f} ms after the switch" if old_polls else "before the switch"))
errors = []
rb, pb = got["before"]
if sum(rb.values()) < 100 or rb.get(r, 0) != sum(rb.values()):
    errors.append(f"before: the datagrams were not all received on CPU {r}: {rb}")
if sum(pb.values()) < 20 or pb.get(o, 0) < sum(pb.values()) // 2:
    errors.append(f"before: vanilla polls were not (mostly) on the decrypt CPU {o}: {pb}")
ra, pa = got["after"]
if sum(ra.values()) < 100:
    errors.append(f"after: fewer than 100 datagrams received after the switch: {ra}")
elif ra.get(r, 0) != sum(ra.values()):
    errors.append(f"after: datagrams not all received on CPU {r}: {ra}")
if sum(pa.values()) == 0:
    errors.append("after: no poll of B's NAPI after the switch")
elif pa.get(r, 0) != sum(pa.values()):
    errors.append(f"after: B's NAPI polled on CPU {o} {pa.get(o, 0)} times of {sum(pa.values())} "
                  f"while every datagram was received on CPU {r}: locality not kept")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
PY
}

run_cpu 1
run_cpu 0
kp_remove
echo local >$T/trace_clock
((FAILS == 0)) || die "$FAILS locality checks failed"
unload_module
check_dmesg
