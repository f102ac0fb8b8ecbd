#!/bin/bash
# Issue 12, finding 8, end to end: the daemon (`wghybrid run --backend kernel`, from the
# host's repository) against a kernel whose peer really stalls. The module is the
# patched one plus kmod/harness/faults/stall.patch (run.sh builds it for this scenario
# only, /opt/wghybrid/fault-stall.ko): once a peer's rx_queue overflows while its NAPI
# is threaded (CVE-2026-52945's trigger), that peer drops every later packet (counted
# in its drops) and accepts none, in both modes and whatever threaded NAPI is after;
# only a re-created peer is healthy. Topology as threaded_stall.sh: the daemon runs in
# B (wgh-b), manages B's wg0 with threaded_napi = "on", B's peer (A) pinned vanilla by
# an override; the flood of threaded_stall (NAPI kthread pinned to CPU 0 under a
# SCHED_FIFO loop for 5 s, UDP from A on CPU 1) overflows the peer queue.
# Steps (each named; a failure says "FAIL: <step>: ..."):
#   1. with `[stall] recover = false`, the daemon reports the stall (event "detected")
#      and it lasts: 15 s on, A's pings still get no answer (the fault is real, and
#      nothing but the daemon's recovery ends it);
#   2. the policy reloaded with recover = true: the daemon turns threaded NAPI off
#      (which does not end this fault), then re-creates the peer; it says "recovered";
#      A's pings are answered again; B's peer has a new epoch and is still vanilla;
#   3. threaded NAPI stays off although the policy says "on"; status says why;
#   4. the module unloads (nothing leaked), no warning in the kernel log.
. /mnt/kmod/harness/guest/daemon_lib.sh
SOCK=/run/wghybrid-stall.sock
STATE=/var/lib/wghybrid-stall
FAULT=/opt/wghybrid/fault-stall.ko
sub() { SUB=$1; step "$1"; }
wghb() { nb "$WGHYBRID" --socket "$SOCK" "$@"; }
fail() {
	echo "--- daemon log (tail):"; tail -30 /tmp/daemon-stall.log
	echo "--- B:"; nb wghctl stats wg0 2>&1 || true
	die "$SUB: $*"
}
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; teardown_pair' EXIT
(($(nproc) >= 2)) || die "needs 2 CPUs (run.sh gives -smp 2)"
[[ -e $FAULT ]] || die "no $FAULT (run.sh builds it for a scenario that names it)"

sub "the module with the stall fault"
modprobe wireguard # its dependencies
rmmod wireguard
insmod "$FAULT" default_mode=vanilla
setup_topology
nb wghctl set-device wg0 1
na wghctl set-device wg0 1
nb bash -c 'echo 2 >/sys/class/net/veth0/queues/rx-0/rps_cpus'
tunnel_up wgh-a 192.168.77.2 || fail "no tunnel"

policy() {
	cat >/tmp/stall.toml <<-EOF2
	name = "stall-e2e"
	interval = 0.5
	smoothing = 1.0
	[placement]
	threaded_napi = "on"
	[stall]
	window = 5
	min_drops = 64
	retry = 30
	recover = $1
	EOF2
}
policy false
sub "the daemon starts in B, turns threaded NAPI on"
# Not through a shell function: $! must be the daemon itself (ip netns exec execs).
ip netns exec wgh-b "$WGHYBRID" run --backend kernel --policy /tmp/stall.toml \
	--state-dir "$STATE" --socket "$SOCK" --log-level info >>/tmp/daemon-stall.log 2>&1 &
DAEMON_PID=$!
for i in $(seq 120); do wghb status >/dev/null 2>&1 && break; sleep 0.25; done
wghb status >/dev/null 2>&1 || fail "the daemon does not answer"
wghb override set wg0 "$KEY_A" --mode vanilla --reason stall-e2e >/dev/null || fail "override refused"
for i in $(seq 40); do [[ $(nb cat /sys/class/net/wg0/threaded) == 1 ]] && break; sleep 0.25; done
[[ $(nb cat /sys/class/net/wg0/threaded) == 1 ]] || fail "threaded NAPI not turned on"
napi_pids=$(ps -eo pid=,comm= | awk '$2 ~ /^napi\/wg0/ { print $1 }')
[[ -n $napi_pids ]] || fail "no napi/wg0-N thread"
for p in $napi_pids; do taskset -pc 0 "$p" >/dev/null; done
tunnel_up wgh-a 192.168.77.2 || fail "no reply through the tunnel before the flood"
epoch0=$(nb wghctl stats wg0 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["epoch"])')

sub "the flood overflows B's peer queue"
start_iperf_server
(exec timeout 40 taskset -c 1 ip netns exec wgh-a iperf3 -c 192.168.77.2 -u -b 0 -P 2 -l 1200 -t 6 >/tmp/stall-flood.txt 2>&1) &
flood=$!
timeout 5 taskset -c 0 chrt -f 10 bash -c 'while :; do :; done' || true
wait $flood || true
# From now on A pings B 10 times a second: every request is a packet B drops while
# it is stalled, and an answer once it is not.
(exec ip netns exec wgh-a ping -i 0.1 -W 1 -D 192.168.77.2 >/tmp/stall-ping.txt 2>&1) &

sub "recover = false: reported, and the stall lasts"
grep_log() { grep -q -- "$1" /tmp/daemon-stall.log; }
for i in $(seq 60); do grep_log "stall detected" && break; sleep 0.5; done
grep_log "stall detected" || fail "no 'stall detected' in 30 s"
grep -m1 -- "stall detected" /tmp/daemon-stall.log
n0=$(grep -c 'bytes from' /tmp/stall-ping.txt || true)
sleep 15
n1=$(grep -c 'bytes from' /tmp/stall-ping.txt || true)
echo "   answers to A's pings over 15 s: $((n1 - n0))"
((n1 - n0 <= 2)) || fail "the peer answered $((n1 - n0)) pings: the fault did not stall it"
grep_log "stall threaded-napi-off\|stall recreated" && fail "recover = false, yet it acted"
[[ $(nb cat /sys/class/net/wg0/threaded) == 1 ]] || fail "threaded NAPI changed with recover = false"

sub "recover = true: threaded NAPI off, the peer re-created, recovered"
policy true
wghb policy reload >/dev/null || fail "reload refused"
for i in $(seq 120); do grep_log "stall recovered" && break; sleep 0.5; done
grep -E -- "stall (threaded-napi-off|recreated|recovered)" /tmp/daemon-stall.log | sed 's/^/   /'
grep_log "stall threaded-napi-off" || fail "threaded NAPI was not turned off"
grep_log "stall recreated" || fail "the peer was not re-created"
grep_log "stall recovered" || fail "not recovered within 60 s of the reload"
n2=$(grep -c 'bytes from' /tmp/stall-ping.txt || true)
sleep 3
n3=$(grep -c 'bytes from' /tmp/stall-ping.txt || true)
echo "   answers to A's pings over 3 s after: $((n3 - n2))"
((n3 - n2 >= 15)) || fail "A's pings are not answered again ($((n3 - n2)) in 3 s)"
read -r epoch1 mode1 < <(nb wghctl stats wg0 | python3 -c 'import json,sys; r = json.load(sys.stdin)[0]; print(r["epoch"], r["mode"])')
[[ $epoch1 != "$epoch0" ]] || fail "B's peer has its old epoch: not re-created"
[[ $mode1 == 0 ]] || fail "B's peer is mode $mode1 after re-creation, the override says vanilla"

sub "threaded NAPI stays off although the policy says on"
sleep 3
[[ $(nb cat /sys/class/net/wg0/threaded) == 0 ]] || fail "threaded NAPI is on again"
wghb --json status | grep -q "stalled" || fail "status does not say why threaded NAPI is off"

sub "the daemon stops; the module unloads"
kill -TERM "$DAEMON_PID" 2>/dev/null || true
for i in $(seq 40); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.25; done
kill -0 "$DAEMON_PID" 2>/dev/null && fail "the daemon did not stop in 10 s"
kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true
unload_module
check_dmesg
