# traffic MODE: ping and iperf3 through one tunnel with both peers in MODE; the
# counters of both ends must move with the traffic and account for every packet
# (received or counted as dropped), and the crypt workers must (vanilla) or must not
# (inline) have run, as counted by kprobe events on them; in vanilla mode each crypt
# worker reads the clock at most about once per packet (kprobe events on its clock
# calls).
. /mnt/kmod/harness/guest/lib.sh
mode=$1
setup_pair
na wghctl set-peer wg0 "$KEY_B" --mode "$mode"
nb wghctl set-peer wg0 "$KEY_A" --mode "$mode"

# Count calls of the crypt workers with kprobe events (Debian's kernels have
# CONFIG_KPROBE_EVENTS, not the function profiler). Each is a work function, called
# through a pointer, so it cannot be inlined: it must be in /proc/kallsyms, and the
# probe on it must register, or the check could not fail.
T=/sys/kernel/tracing
workers="wg_packet_encrypt_worker wg_packet_decrypt_worker"
mountpoint -q $T || mount -t tracefs tracefs $T || die "cannot mount tracefs at $T"
for f in $workers; do
	grep -qE "\s$f\s+\[wireguard\]" /proc/kallsyms || die "$f is not a symbol of wireguard.ko (inlined?)"
	echo "p:wgh/$f wireguard:$f" >>$T/kprobe_events || die "no kprobe event on wireguard:$f"
done
# Clock readings of the workers (issue 12: upstream's workers read no clock; a
# vanilla peer's may read it about once per packet, chained, not twice). A kprobe
# event on every call of the clock in each worker, found in the module's
# relocations: local_clock() on 6.12; on 6.1 local_clock() is an inline that calls
# sched_clock_cpu(), which is notrace, so a probe on the function is refused there,
# but its call sites in the module can be probed. And one on __cond_resched()
# recording its caller (the return address, at +0 of the stack on entry), counted
# per call site by a hist trigger (the module's cond_resched() calls are
# static-call sites, which kprobes refuse).
# The call-site probes are int3s in the module's text, armed and removed while the
# other vCPU runs that code: on 6.1 (Debian's qemu 7.2, TCG) this once wedged the guest
# in traffic_inline, a CPU looping on an int3 memory no longer held (the emulator's
# stale translation, "The lockup that was the emulator" in kmod/README.md), which took
# the rest of bookworm's scenarios with it. So they are armed only where the check
# applies (vanilla) and, in CI, only on 6.12; WGH_CLOCK_CHECK=1 in the guest's
# environment runs them on 6.1 as well (they passed there by hand: the numbers in the
# issue-12 note).
clock_check=0
if [[ $mode == vanilla && ( $(uname -r) != 6.1.* || ${WGH_CLOCK_CHECK:-0} == 1 ) ]]; then
	clock_check=1
fi
: >/tmp/clock-sites
((clock_check == 0)) && echo "clock-read check: not run here (mode $mode, kernel $(uname -r))"
((clock_check == 0)) || python3 - "$(modinfo -n wireguard)" $workers wg_packet_tx_worker >/tmp/clock-sites <<'PY'
import lzma, re, shutil, subprocess, sys
ko, funcs = sys.argv[1], set(sys.argv[2:])
if ko.endswith(".xz"):  # DKMS on trixie installs wireguard.ko.xz
    with lzma.open(ko) as src, open("/tmp/wireguard.ko", "wb") as dst:
        shutil.copyfileobj(src, dst)
    ko = "/tmp/wireguard.ko"
fn, start = None, 0
for line in subprocess.run(["objdump", "-dr", "--no-show-raw-insn", ko], check=True,
                           capture_output=True, text=True).stdout.splitlines():
    m = re.match(r"([0-9a-f]+) <([^>]+)>:$", line)
    if m:
        fn, start = m.group(2), int(m.group(1), 16)
        continue
    m = re.match(r"\s+([0-9a-f]+): R_X86_64_PLT32\s+(local_clock|sched_clock_cpu)-0x4$", line)
    if m and fn in funcs:
        print(fn, hex(int(m.group(1), 16) - 1 - start))  # the call's opcode byte
PY
n=0
while read -r f off; do
	n=$((n + 1))
	echo "p:wgh/clock_${n}_$f wireguard:$f+$off" >>$T/kprobe_events ||
		die "no kprobe event on the clock call at wireguard:$f+$off"
done </tmp/clock-sites
echo "clock call sites probed: $(awk '{print $1 "+" $2}' /tmp/clock-sites | paste -sd' ')"
echo 'p:wgh/resched __cond_resched caller=+0($stack):x64' >>$T/kprobe_events ||
	die "no kprobe event on __cond_resched"
echo 'hist:keys=caller.sym-offset:size=2048' >$T/events/wgh/resched/trigger ||
	die "no hist trigger on the __cond_resched event"
echo 1 >$T/events/wgh/enable || die "the kprobe events do not enable"
# calls FUNCTION: its probe's hits so far (kprobe_profile: name, hits, misses).
calls() { awk -v f="$1" '$1 == f || $1 == "wgh/" f { print $2 }' $T/kprobe_profile; }
# clock_reads FUNCTION: the hits of each clock call site in it, one a line.
clock_reads() { awk -v f="$1" '$1 ~ "^(wgh/)?clock_[0-9]+_" f "$" { print $2 }' $T/kprobe_profile; }
# rescheds FUNCTION: its calls of __cond_resched(), from the hist trigger.
rescheds() {
	sed -n "s/.*caller: *\[[0-9a-f]*\] *$1+0x[0-9a-f]*\/.*hitcount: *\([0-9]*\).*/\1/p" \
		$T/events/wgh/resched/hist | awk '{ n += $1 } END { print n + 0 }'
}

step "ping both ways"
na ping -c 5 -i 0.2 -W 2 192.168.77.2
nb ping -c 5 -i 0.2 -W 2 192.168.77.1
step "iperf3 A -> B, 3 s"
start_iperf_server
na iperf3 -c 192.168.77.2 -t 3 -J >/tmp/iperf.json
sent=$(python3 -c 'import json; print(json.load(open("/tmp/iperf.json"))["end"]["sum_received"]["bytes"])')
echo "iperf3: $sent bytes received"

echo 0 >$T/events/wgh/enable
enc=$(calls wg_packet_encrypt_worker)
dec=$(calls wg_packet_decrypt_worker)
echo "crypt worker calls during the traffic (kprobe events): encrypt $enc, decrypt $dec"
[[ $enc =~ ^[0-9]+$ && $dec =~ ^[0-9]+$ ]] || die "the kprobe counts are unreadable: '$enc' '$dec'"
# Per worker: runs, cond_resched() calls, clock readings per call site. Chained
# readings (each ends a packet's interval and starts the next one's; a run starts its
# clock once, and again after each cond_resched()) are at most the busiest site's
# count (the reading per packet or list) + the runs + the cond_resched() calls.
# Two readings per packet (or list), bracketing each, come to about twice the busiest.
clock_errors=()
for f in $workers wg_packet_tx_worker; do
	runs=$(calls "$f")
	sites=$(clock_reads "$f" | paste -sd' ')
	res=$(rescheds "$f")
	reads=0 busiest=0
	for c in $sites; do
		reads=$((reads + c))
		if ((c > busiest)); then busiest=$c; fi
	done
	limit=$((busiest + ${runs:-0} + res))
	echo "$f: ${runs:-unprobed} runs, $res cond_resched() calls, clock readings per call site: ${sites:-none} (total $reads; busiest + runs + cond_resched() = $limit)"
	if [[ $f == wg_packet_tx_worker || $clock_check != 1 ]]; then continue; fi
	((reads > 0)) || clock_errors+=("$f: no clock reading counted (do the probes count?)")
	((reads <= limit)) || clock_errors+=("$f read the clock $reads times, more than one chained reading per packet allows ($limit: busiest site $busiest + $runs runs + $res cond_resched())")
done
# The TX worker checks need_resched() after each list it sends, as upstream's does,
# and yields when it is set; the series before issue 12's fix checked only every 64
# lists, so it yielded at most once per 64 lists (seen: never, on both lines). Printed,
# not checked: how often the scheduler asks depends on the load, and the fixed series
# yielded 243 times for 2,182 lists (6.12) and 174 for 1,740 (6.1) on a busy host, but
# only 170 for 7,923 (limit 123) on a quieter one, too close for a check that must not
# fail by chance. The lists: the encryption worker's busiest clock call site.
if ((clock_check)); then
	lists=$(clock_reads wg_packet_encrypt_worker | sort -n | tail -n 1)
	tx_res=$(rescheds wg_packet_tx_worker)
	echo "TX worker: $tx_res cond_resched() calls for ${lists:-0} lists encrypted (once per 64 lists would be $((${lists:-0} / 64)); not checked)"
fi
echo '!hist:keys=caller.sym-offset:size=2048' >$T/events/wgh/resched/trigger
while read -r p; do echo "-:${p%% *}" >>$T/kprobe_events; done < <(sed 's/^p://' $T/kprobe_events)
for e in "${clock_errors[@]}"; do echo "FAIL: $e"; done
((${#clock_errors[@]} == 0)) || exit 1

step "stats"
# Both ends once the tunnel is quiet (lib.sh): the checks below cannot hold in both
# directions at once while a packet is in flight.
# With them, upstream's own byte counters (`wg show wg0 transfer`: received, sent),
# read between two quiet readings that agree, so that no message came in between.
for i in $(seq 3); do
	stats_when_quiet
	xfer_a=$(na wg show wg0 transfer | cut -f2,3)
	xfer_b=$(nb wg show wg0 transfer | cut -f2,3)
	cp /tmp/a.json /tmp/a1.json
	cp /tmp/b.json /tmp/b1.json
	stats_when_quiet
	cmp -s /tmp/a.json /tmp/a1.json && cmp -s /tmp/b.json /tmp/b1.json && break
done
python3 - "$mode" "$sent" "$KEY_A" "$KEY_B" "$enc" "$dec" "$xfer_a" "$xfer_b" <<'PY'
import json, sys
mode, sent, key_a, key_b = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
enc, dec = int(sys.argv[5]), int(sys.argv[6])
xfer = {"A": [int(v) for v in sys.argv[7].split()], "B": [int(v) for v in sys.argv[8].split()]}
want = {"vanilla": 0, "inline": 1}[mode]
a, = json.load(open("/tmp/a.json"))   # A's record of peer B
b, = json.load(open("/tmp/b.json"))   # B's record of peer A
print("A's peer B:", a)
print("B's peer A:", b)
errors = []
def check(cond, what):
    if not cond:
        errors.append(what)
check(a["key"] == key_b and b["key"] == key_a, "records carry the peers' keys")
check(a["mode"] == want and b["mode"] == want, f"mode is {want}")
check(a["core"] == -1 and b["core"] == -1, "core is -1")
check(a["epoch"] != 0 and b["epoch"] != 0, "epoch is set")
check(a["tx_bytes"] >= sent, f"A tx_bytes {a['tx_bytes']} >= iperf3 bytes {sent}")
check(b["rx_bytes"] >= sent, f"B rx_bytes {b['rx_bytes']} >= iperf3 bytes {sent}")
check(a["tx_packets"] >= sent // 1500, "A tx_packets >= bytes / MTU")
check(b["rx_packets"] >= sent // 1500, "B rx_packets >= bytes / MTU")
check(a["rx_packets"] > 0 and b["tx_packets"] > 0, "ACKs counted the other way")
for side, r in (("A", a), ("B", b)):
    check(r["tx_cpu_ns"] > 0 and r["rx_cpu_ns"] > 0, f"{side} CPU ns moved")
# Every data message one end sent reached the other's counters or its drops (veth loses
# nothing): rx <= tx <= rx + drops. A receiver may drop a few at a full decrypt queue, as
# upstream's does when its crypt workers fall behind: seen on 6.12 in CI in vanilla mode
# with no switching at all, B dropping 57 of A's 45,179 (exactly A's tx minus B's rx),
# the guest's vCPUs being threads of a host also running pytest. At most 0.5 %.
# The record's bytes are upstream's own peer counters, not a second count (issue 12,
# finding 10): the series that counted them again, data messages only, missed the
# handshake messages that upstream counts (148 + 92 bytes and more per handshake).
for side, r in (("A", a), ("B", b)):
    check([r["rx_bytes"], r["tx_bytes"]] == xfer[side],
          f"{side}'s record rx/tx bytes {r['rx_bytes']}/{r['tx_bytes']} are "
          f"`wg show transfer`'s {xfer[side][0]}/{xfer[side][1]}")
for (sn, s), (rn, r) in ((("A", a), ("B", b)), (("B", b), ("A", a))):
    check(r["rx_packets"] <= s["tx_packets"] <= r["rx_packets"] + r["drops"],
          f"{sn} tx_packets {s['tx_packets']} between {rn} rx_packets {r['rx_packets']} "
          f"and rx + drops ({r['drops']})")
sent_pkts = a["tx_packets"] + b["tx_packets"]
check(a["drops"] + b["drops"] <= sent_pkts // 200,
      f"at most 0.5 % dropped ({a['drops']} + {b['drops']} of {sent_pkts})")
check(a["tx_cpu_ns"] < 60 * 10**9, "CPU ns is plausible (< 60 s)")
# The same probes must see both workers run in vanilla mode (so they do count) and
# neither in inline mode.
if mode == "inline":
    check(enc == 0 and dec == 0, f"no crypt worker ran for inline peers ({enc} encrypt, "
          f"{dec} decrypt calls)")
else:
    check(enc > 0 and dec > 0, f"both crypt workers ran for vanilla peers ({enc} encrypt, "
          f"{dec} decrypt calls)")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
PY
# After the unload: what tearing the devices down and unloading reports counts too.
unload_module
check_dmesg
