#!/bin/bash
# PID 1 of the guest: run the scenarios named on the kernel command line
# (wgh.scenarios=a,b,c), each in its own process with a time limit, writing
# /mnt/results/NAME.log and /mnt/results/NAME.status (PASS or FAIL), then power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t debugfs debugfs /sys/kernel/debug
# The root is an overlay in memory (stage1.sh); /tmp and /run are emptied between
# scenarios.
for d in /tmp /run /var/tmp; do
	mkdir -p "$d" 2>/dev/null
	mount -t tmpfs tmpfs "$d"
done
# The repository at the host's path (the daemon scenarios run it from there with the
# tree's /opt/venv, kmod/rootfs.sh).
repo=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
bind_repo() {
	[[ -n $repo ]] && mountpoint -q /mnt/repo || return 0
	mkdir -p "$repo" && mount --bind /mnt/repo "$repo"
}
bind_repo
hostname wghybrid-guest
ip link set lo up
# Keep the netstamp static key on for the whole run. The key is on while any
# socket asks for SO_TIMESTAMP (29), so every `ping` that starts or exits first
# or last would otherwise live-patch net_timestamp_check() in the receive path,
# and qemu's TCG (7.2, two vCPU threads) has been caught running that site's
# int3 after it was removed: memory held the NOP (the oops' Code: bytes, read at
# the same address), the CPU kept trapping there, and kprobe_int3_handler() kept
# backing it up to retry — a CPU stuck for good in the peer's NAPI poll.
# kmod/README.md, "The lockup that was the emulator", has the evidence. Real
# hardware cannot fetch an instruction its memory no longer holds; the
# scenarios test the module, not live patching under TCG. One open socket
# means no patching of that site after boot.
python3 -c 'import signal, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 29, 1)
signal.pause()' &
R=/mnt/results
H=/mnt/kmod/harness
names=$(sed -n 's/.*wgh\.scenarios=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
for kv in $(sed -n 's/.*wgh\.env=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' '); do
	export "${kv?}"
done
echo "guest: $(nproc) CPUs, scenarios: $names" >/dev/console
# What a scenario that overruns its limit is waiting for: every process with its
# state and wait channel, the kernel stack of each user process (a task sleeping in
# a loop, like napi_disable()'s, never trips the hung-task detector), and the
# blocked tasks as sysrq-w reports them (they land in the dmesg below).
dump_stuck() {
	echo "--- $1 did not finish in $2 s; processes then:"
	ps -eo pid,ppid,stat,wchan:28,etimes,args
	local p
	for p in $(ps -eo pid=,ppid= | awk '$2 != 2 && $1 != 2 && $1 > 1 { print $1 }'); do
		[[ -r /proc/$p/stack ]] || continue
		echo "--- kernel stack of $p ($(tr '\0\n' '  ' </proc/"$p"/cmdline 2>/dev/null | cut -c1-100)):"
		cat "/proc/$p/stack" 2>/dev/null
	done
	echo w >/proc/sysrq-trigger
}
limit=${WGH_SCENARIO_TIMEOUT:-900}
# kmemleak (the debug kernel, kmod/debugkernel.sh): scanned only here, after each
# scenario once its module is unloaded, so that its findings are that scenario's
# (run.sh fails a scenario whose NAME.kmemleak is not empty); what boot left
# unreferenced goes to boot.kmemleak. The periodic scan is off: it would report into
# the dmesg of whichever scenario runs at the time.
KML=/sys/kernel/debug/kmemleak
kmemleak_to() {
	[[ -w $KML ]] || return 0
	# An object is reported once it is older than 5 s and unreferenced in a scan.
	sleep 6
	echo scan >$KML
	cat $KML >"$1"
	echo clear >$KML
}
if [[ -w $KML ]]; then
	echo scan=off >$KML
	kmemleak_to "$R/boot.kmemleak"
fi
for s in $names; do
	start=$SECONDS
	dmesg -c >/dev/null
	timeout -k 5 "$limit" bash "$H/scenarios/$s.sh" >"$R/$s.log" 2>&1 </dev/null &
	pid=$!
	# The dump is taken 10 s before the limit, while the scenario's processes are
	# still there to be looked at.
	(sleep $((limit - 10)) && kill -0 $pid 2>/dev/null && dump_stuck "$s" "$((limit - 10))" >"/tmp/$s.stuck" 2>&1) &
	watchdog=$!
	wait $pid
	rc=$?
	kill $watchdog 2>/dev/null
	[[ -e /tmp/$s.stuck ]] && cat "/tmp/$s.stuck" >>"$R/$s.log"
	{ echo "--- dmesg during $s:"; dmesg; } >>"$R/$s.log"
	if ((rc == 0)); then echo PASS >"$R/$s.status"; else echo "FAIL (exit $rc)" >"$R/$s.status"; fi
	echo "guest: $s: $(cat "$R/$s.status") in $((SECONDS - start)) s" >/dev/console
	# The next scenario starts clean: no process or namespace of this one, an empty
	# /tmp, the module unloaded.
	for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do
		pids=$(ip netns pids "$ns" 2>/dev/null)
		[[ -n $pids ]] && kill -9 $pids 2>/dev/null
		ip netns del "$ns"
	done
	pkill -9 -x iperf3 2>/dev/null
	sleep 0.5
	umount -l /tmp && mount -t tmpfs tmpfs /tmp
	[[ $repo == /tmp/* ]] && bind_repo
	modprobe -r wireguard 2>/dev/null
	kmemleak_to "$R/$s.kmemleak"
done
sync
busybox poweroff -f
