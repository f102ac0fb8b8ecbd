#!/bin/bash
# The daemon (`wghybrid run --backend kernel`, from the host's repository) drives the
# patched module in the gateway namespace of kmod/harness/guest/daemon_lib.sh: four
# tunnels, one carrying a sustained iperf3 stream, three carrying pings. Every check
# reads the modes back from the kernel (genl, daemon_kstate.py), not from the daemon.
# Each sub-step is named: a failure says "FAIL: <step>: ...".
. /mnt/kmod/harness/guest/daemon_lib.sh
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; teardown_gateway' EXIT
sub() { SUB=$1; step "$1"; }
fail() {
	echo "--- daemon log (tail):"; tail -40 /tmp/daemon.log
	echo "--- wghybrid status:"; wgh status 2>&1 || true
	echo "--- kernel:"; kstate modes wg0 2>&1 || true
	echo "--- iperf3:"; tail -5 /tmp/iperf-c1.log 2>/dev/null || true
	die "$SUB: $*"
}

setup_gateway vanilla
cat >/tmp/e2e.toml <<'EOF'
# The e2e policy: TCG's tunnels carry 20-200 Mbit/s (less on a loaded host), pings a few
# kbit/s, so thresholds of a few Mbit/s; short
# interval, dwell and latent heat so that the scenario is quick.
name = "e2e"
interval = 0.5
smoothing = 1.0
[classify]
promote_gbps = 0.01
demote_gbps = 0.002
# Under TCG the iperf3 tunnel's own work takes about half a vCPU: the rest of its core
# goes to iperf3 and the namespaces' forwarding in the same guest. Its core is
# saturated, so from 0.3 of a core the tunnel counts as capped by it (a censored
# reading: the controller offers it vanilla, the one mode that can give it more).
inline_saturation = 0.3
# 8 s: a restarted daemon changes nothing for min(min_dwell, 15 s) while its readings
# settle, and the restart step below holds the modes for 5 s.
min_dwell = 8.0
latent_heat = 1.0
[placement]
vanilla_pool_min = 1
EOF
# Background jobs run `ip netns exec` itself (it execs), so that kill reaches them.
ip netns exec gw python3 "$H/guest/daemon_kstate.py" watch wg0 /tmp/transitions.jsonl &
for n in 2 3 4; do ip netns exec "c$n" ping -q -i 0.2 192.168.77.1 >/dev/null & done

sub "daemon starts on the kernel backend"
start_daemon /tmp/e2e.toml
grep -q "backend kernel" /tmp/daemon.log || fail "the daemon does not say it runs on the kernel"

sub "light tunnels go inline"
kstate wait wg0 40 "$KEY_C2=inline" "$KEY_C3=inline" "$KEY_C4=inline" || fail "light tunnels not inline"

sub "the capped heavy tunnel is offered vanilla, and kept in the mode that serves it"
ng iperf3 -s -D -B 192.168.77.1 -I /tmp/iperf3.pid
for i in $(seq 40); do ng ss -tlnH 'sport = 5201' | grep -q . && break; sleep 0.25; done
ip netns exec c1 iperf3 -c 192.168.77.1 -t 600 -i 5 >/tmp/iperf-c1.log 2>&1 &
IPERF=$!
kstate wait wg0 60 "$KEY_C1=vanilla" || fail "the capped iperf3 tunnel was never offered vanilla"
grep -q "peer wg0/${KEY_C1:0:8}.* mode vanilla  # more-than-inline" /tmp/daemon.log ||
	fail "the daemon did not log why it made the tunnel vanilla"
# Then the controller keeps whichever mode delivers more for less CPU: under TCG the whole
# guest is CPU-bound, so vanilla may give the tunnel no more than inline did, on more
# CPU, and it goes back inline once its dwell is over. Either way it settles: one mode
# for 12 s, no flapping.
heavy=""; stable=0
for i in $(seq 60); do
	now=$(kstate modes wg0 | awk -v k="$KEY_C1" '$1 == k {print $2}')
	if [[ -n "$heavy" && "$now" == "$heavy" ]]; then
		stable=$((stable + 1))
		((stable >= 12)) && break
	else
		heavy=$now; stable=0
	fi
	sleep 1
done
((stable >= 12)) || fail "the heavy tunnel's mode did not settle (flapping)"
echo "the heavy tunnel settled $heavy"
kstate hold wg0 3 "$KEY_C1=$heavy" "$KEY_C2=inline" "$KEY_C3=inline" "$KEY_C4=inline" ||
	fail "the modes did not stay put"

sub "wghybrid status shows it"
# The controller may change its mind on c1 at any time (that is its job): compare the
# status with the kernel read on both sides of it, until both reads agree.
for i in $(seq 5); do
	k1=$(kstate modes wg0 | sort)
	wgh status >/tmp/status.txt
	wgh --json status >/tmp/status.json
	k2=$(kstate modes wg0 | sort)
	[[ "$k1" == "$k2" ]] && break
done
cat /tmp/status.txt
heavy=$(awk -v k="$KEY_C1" '$1 == k {print $2}' <<<"$k2")
python3 - "$heavy" "$KEY_C1" "$KEY_C2" "$KEY_C3" "$KEY_C4" <<'PY' || fail "status disagrees with the kernel"
import json, sys
mode, heavy, *light = sys.argv[1:]
st = json.load(open("/tmp/status.json"))
assert st["backend"] == "kernel", st["backend"]
peers = {p["public_key"]: p for i in st["interfaces"] for p in i["peers"]}
assert peers[heavy]["mode"] == mode, (mode, peers[heavy])
for k in light:
    assert peers[k]["mode"] == "inline", peers[k]
print(f"status: heavy {mode}/{peers[heavy]['class']}, light inline; heavy at",
      round((peers[heavy]["rx_bps"] + peers[heavy]["tx_bps"]) / 1e6, 1), "Mbit/s")
PY
grep -q "$(cut -c1-8 <<<"$KEY_C1")" /tmp/status.txt || fail "the pretty status does not list the heavy tunnel"

sub "an override pins a tunnel and the kernel follows"
wgh override set wg0 "$KEY_C2" --mode vanilla --reason e2e || fail "override refused"
kstate wait wg0 10 "$KEY_C2=vanilla" || fail "the kernel did not follow the override"
kstate hold wg0 3 "$KEY_C2=vanilla" || fail "the pinned tunnel moved"
wgh override clear wg0 "$KEY_C2" || fail "override not cleared"
kstate wait wg0 30 "$KEY_C2=inline" || fail "the light tunnel did not return inline after the override"

sub "SIGHUP reloads the policy"
sed -i 's/^name = "e2e"/name = "e2e-reloaded"/' /tmp/e2e.toml
kill -HUP "$DAEMON_PID"
for i in $(seq 40); do grep -q "policy 'e2e-reloaded' loaded" /tmp/daemon.log && break; sleep 0.25; done
grep -q "policy 'e2e-reloaded' loaded" /tmp/daemon.log || fail "no log line for the reload"
wgh --json policy show | grep -q e2e-reloaded || fail "the API does not show the reloaded policy"
kill -0 "$DAEMON_PID" || fail "the daemon died on SIGHUP"

sub "SIGKILL and restart leave the kernel's modes unchanged"
kstate modes wg0 | sort >/tmp/before.txt
kill -KILL "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null || true
start_daemon /tmp/e2e.toml
# The light tunnels are settled: the restarted daemon keeps them as it finds them. The
# heavy one is not checked here: a restarted daemon remembers no estimate, so a capped
# tunnel that vanilla did not help may be offered vanilla once more (counted below).
kstate hold wg0 5 "$KEY_C2=inline" "$KEY_C3=inline" "$KEY_C4=inline" ||
	fail "the restarted daemon changed modes"
kstate modes wg0 | sort >/tmp/after.txt
grep -v "^$KEY_C1 " /tmp/before.txt | cut -d' ' -f1,2 >/tmp/b
grep -v "^$KEY_C1 " /tmp/after.txt | cut -d' ' -f1,2 >/tmp/a
diff /tmp/b /tmp/a || fail "modes differ across the restart"

sub "the heavy tunnel returns inline after the stream stops"
kill "$IPERF" 2>/dev/null; wait "$IPERF" 2>/dev/null || true
t0=$SECONDS
kstate wait wg0 60 "$KEY_C1=inline" || fail "the heavy tunnel stayed vanilla"
echo "back inline $((SECONDS - t0)) s after the stream stopped (min_dwell 8 s)"

sub "no transition storm"
sleep 1
kstate transitions /tmp/transitions.jsonl | tee /tmp/counts.json
python3 - "$KEY_C1" "$KEY_C2" "$KEY_C3" "$KEY_C4" <<'PY' || fail "too many transitions"
import json, sys
c1, c2, c3, c4 = sys.argv[1:]
n = json.load(open("/tmp/counts.json"))
# c1: inline while idle at the start, vanilla under the stream, inline again if vanilla
# gave it no more (under TCG it does not); what vanilla gave is remembered for 600 s
# (KNOWN_FOR), so within the ~6-minute stream the capped tunnel is offered vanilla again
# only by the restarted daemon (which remembers nothing): 1 + 2 * 2 = 5; the limit keeps
# room for one more retry on a slow host: 9. c2: inline, vanilla (override), inline.
# c3, c4: inline once.
limits = {c1: 9, c2: 3, c3: 1, c4: 1}
bad = {k[:8]: (n.get(k, 0), lim) for k, lim in limits.items() if n.get(k, 0) > lim}
assert not bad, f"(transitions, limit) per peer: {bad}"
assert n.get(c3) == 1 and n.get(c4) == 1, n
print("transitions per peer:", {k[:8]: v for k, v in n.items()})
PY
logged=$(grep -c '\[#\] peer wg0/.* mode' /tmp/daemon.log || true)
echo "daemon logged $logged mode changes"

sub "the daemon stops cleanly"
kill -TERM "$DAEMON_PID"
for i in $(seq 40); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.25; done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "still running 10 s after SIGTERM"
echo "--- daemon log:"
cat /tmp/daemon.log
check_dmesg
trap - EXIT
kill $(jobs -p) 2>/dev/null || true
wait 2>/dev/null || true
teardown_gateway
unload_module
