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
# The rootfs is the host's cache, shared read-write: keep every write of a run
# in memory.
for d in /tmp /run /var/tmp /var/log /var/lib /var/cache /root /etc/wireguard; do
	mkdir -p "$d" 2>/dev/null
	mount -t tmpfs tmpfs "$d"
done
# The repository at the host's path (its .venv has that path written in it).
repo=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
bind_repo() {
	[[ -n $repo ]] && mountpoint -q /mnt/repo || return 0
	mkdir -p "$repo" && mount --bind /mnt/repo "$repo"
}
bind_repo
hostname wghybrid-guest
ip link set lo up
R=/mnt/results
H=/mnt/kmod/harness
names=$(sed -n 's/.*wgh\.scenarios=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
for kv in $(sed -n 's/.*wgh\.env=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' '); do
	export "${kv?}"
done
echo "guest: $(nproc) CPUs, scenarios: $names" >/dev/console
for s in $names; do
	start=$SECONDS
	dmesg -c >/dev/null
	timeout -k 5 900 bash "$H/scenarios/$s.sh" >"$R/$s.log" 2>&1 </dev/null
	rc=$?
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
done
sync
busybox poweroff -f
