# traffic MODE: ping and iperf3 through one tunnel with both peers in MODE; the
# counters of both ends must move with the traffic and account for every packet
# (received or counted as dropped), and the crypt workers must (vanilla) or must not
# (inline) have run.
. /mnt/kmod/harness/guest/lib.sh
mode=$1
setup_pair
na wghctl set-peer wg0 "$KEY_B" --mode "$mode"
nb wghctl set-peer wg0 "$KEY_A" --mode "$mode"

# Count calls of the crypt workers with the function profiler, if the kernel has it.
T=/sys/kernel/debug/tracing
profile=0
if [[ -e $T/function_profile_enabled ]] &&
	echo 'wg_packet_encrypt_worker wg_packet_decrypt_worker' >$T/set_ftrace_filter 2>/dev/null; then
	profile=1
	echo 0 >$T/function_profile_enabled
	echo 1 >$T/function_profile_enabled
fi

step "ping both ways"
na ping -c 5 -i 0.2 -W 2 192.168.77.2
nb ping -c 5 -i 0.2 -W 2 192.168.77.1
step "iperf3 A -> B, 3 s"
start_iperf_server
na iperf3 -c 192.168.77.2 -t 3 -J >/tmp/iperf.json
sent=$(python3 -c 'import json; print(json.load(open("/tmp/iperf.json"))["end"]["sum_received"]["bytes"])')
echo "iperf3: $sent bytes received"

workers=-1
if ((profile)); then
	echo 0 >$T/function_profile_enabled
	workers=$(cat $T/trace_stat/function* | awk '/wg_packet_(en|de)crypt_worker/ {n += $2} END {print n + 0}')
	echo "crypt worker calls during the traffic: $workers"
	echo >$T/set_ftrace_filter
fi

step "stats"
# The receiver first: then B's rx <= A's tx holds even if A sends a keepalive between
# the two readings (counters only grow, and nothing arrives before it is sent).
nb wghctl stats wg0 >/tmp/b.json
na wghctl stats wg0 >/tmp/a.json
python3 - "$mode" "$sent" "$KEY_A" "$KEY_B" "$workers" <<'PY'
import json, sys
mode, sent, key_a, key_b, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
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
for (sn, s), (rn, r) in ((("A", a), ("B", b)), (("B", b), ("A", a))):
    check(r["rx_packets"] <= s["tx_packets"] <= r["rx_packets"] + r["drops"],
          f"{sn} tx_packets {s['tx_packets']} between {rn} rx_packets {r['rx_packets']} "
          f"and rx + drops ({r['drops']})")
sent_pkts = a["tx_packets"] + b["tx_packets"]
check(a["drops"] + b["drops"] <= sent_pkts // 200,
      f"at most 0.5 % dropped ({a['drops']} + {b['drops']} of {sent_pkts})")
check(a["tx_cpu_ns"] < 60 * 10**9, "CPU ns is plausible (< 60 s)")
if workers >= 0:
    if mode == "inline":
        check(workers == 0, f"no crypt worker ran for inline peers ({workers} calls)")
    else:
        check(workers > 0, f"crypt workers ran for vanilla peers ({workers} calls)")
for e in errors:
    print("FAIL:", e)
sys.exit(1 if errors else 0)
PY
check_dmesg
unload_module
