# Helpers sourced by every scenario (bash, in the guest, as root).
#
#  ┌──────────── netns wgh-a ────────────┐      ┌──────────── netns wgh-b ────────────┐
#  │ wg0 192.168.77.1/24  (peer B)       │      │ wg0 192.168.77.2/24  (peer A)       │
#  │ veth0 10.9.0.1/24 ──────────────────┼──────┼── veth0 10.9.0.2/24                 │
#  └─────────────────────────────────────┘      └─────────────────────────────────────┘
set -euo pipefail
set -E
# Only the command's first line: a failing `python3 - <<'PY'` would otherwise print its
# whole script and push what the script printed out of the excerpt run.sh shows.
trap 'echo "FAIL: exit $? at ${BASH_SOURCE[0]##*/}:$LINENO: ${BASH_COMMAND%%$'"'"'\n'"'"'*}"' ERR
H=/mnt/kmod/harness
wghctl() { python3 "$H/guest/wghctl.py" "$@"; }
# nx NETNS CMD...: run CMD in NETNS; "wghctl" there means the genl client.
nx() {
	local ns=$1
	shift
	[[ $1 == wghctl ]] && set -- python3 "$H/guest/wghctl.py" "${@:2}"
	ip netns exec "$ns" "$@"
}
na() { nx wgh-a "$@"; }
nb() { nx wgh-b "$@"; }
step() { echo "== $*"; }
# Ping ADDR through the tunnel from namespace NS until a reply comes, for up to
# LIMIT s (default 15: a handshake initiation that was lost, say to a peer removed
# just after, is retried only after REKEY_TIMEOUT, 5 s, plus jitter). Says how long
# it took; on failure prints both ends' `wg show` and counters.
tunnel_up() {
	local ns=$1 addr=$2 limit=${3:-15} t0=$SECONDS n
	while ((SECONDS - t0 < limit)); do
		if nx "$ns" ping -c 1 -W 1 "$addr" >/dev/null 2>&1; then
			echo "$ns -> $addr: a reply after $((SECONDS - t0)) s"
			return 0
		fi
	done
	echo "$ns -> $addr: no reply in $limit s"
	for n in wgh-a wgh-b; do
		echo "$n:"
		nx "$n" wg show wg0 || true
		nx "$n" wghctl stats wg0 || true
	done
	return 1
}
die() { echo "FAIL: $*"; exit 1; }

# setup_pair [default_mode]: load the patched module and build the topology above.
# Sets KEY_A and KEY_B (public keys).
setup_pair() {
	step "modprobe wireguard ${1:+default_mode=$1}"
	modprobe wireguard ${1:+default_mode=$1}
	grep -q . /sys/module/wireguard/parameters/default_mode ||
		die "the loaded wireguard has no default_mode parameter (stock module?)"
	setup_topology
}

# setup_topology: the topology above, with whichever wireguard is loaded (ab_stock.sh
# loads Debian's stock module too). Sets KEY_A and KEY_B (public keys).
setup_topology() {
	ip netns add wgh-a
	ip netns add wgh-b
	ip -n wgh-a link add veth0 type veth peer name veth0 netns wgh-b
	ip -n wgh-a addr add 10.9.0.1/24 dev veth0
	ip -n wgh-b addr add 10.9.0.2/24 dev veth0
	local priv_a priv_b
	priv_a=$(wg genkey)
	priv_b=$(wg genkey)
	KEY_A=$(wg pubkey <<<"$priv_a")
	KEY_B=$(wg pubkey <<<"$priv_b")
	for n in a b; do
		ip -n "wgh-$n" link set lo up
		ip -n "wgh-$n" link set veth0 up
		ip -n "wgh-$n" link add wg0 type wireguard
	done
	na wg set wg0 private-key <(echo "$priv_a") listen-port 51820 \
		peer "$KEY_B" endpoint 10.9.0.2:51820 allowed-ips 192.168.77.2/32
	nb wg set wg0 private-key <(echo "$priv_b") listen-port 51820 \
		peer "$KEY_A" endpoint 10.9.0.1:51820 allowed-ips 192.168.77.1/32
	ip -n wgh-a addr add 192.168.77.1/24 dev wg0
	ip -n wgh-b addr add 192.168.77.2/24 dev wg0
	ip -n wgh-a link set wg0 up
	ip -n wgh-b link set wg0 up
}

# steer_flows NETNS: RPS on that namespace's veth0 over every CPU, so that the
# datagrams of one flow are received on one CPU whichever CPU sent them, as a NIC's
# RSS does. (Without it, veth hands each packet to the backlog of the CPU that sent
# it, and a flow sent from two CPUs is received on two at once, out of order.)
steer_flows() {
	local mask
	mask=$(printf '%x' $(((1 << $(nproc)) - 1)))
	ip netns exec "$1" bash -c "echo $mask >/sys/class/net/veth0/queues/rx-0/rps_cpus"
}

teardown_pair() {
	ip netns del wgh-a 2>/dev/null || true
	ip netns del wgh-b 2>/dev/null || true
}

# Fails on kernel warnings, oopses and refcount/leak reports in dmesg.
check_dmesg() {
	if dmesg | grep -E -i 'WARNING:|BUG:|Oops|Call Trace|refcount_t|general protection|leak'; then
		die "the kernel log has warnings (above)"
	fi
	echo "dmesg: no warning"
}

# Unloads the module; fails if it cannot be (a leaked reference keeps it).
unload_module() {
	teardown_pair
	local i
	for i in $(seq 50); do
		modprobe -r wireguard 2>/dev/null && break
		sleep 0.1
	done
	! grep -q '^wireguard ' /proc/modules || die "wireguard.ko does not unload: $(grep '^wireguard ' /proc/modules)"
	echo "rmmod: clean"
}

# stats_when_quiet [DEV]: A's record of B in /tmp/a.json and B's of A in /tmp/b.json
# (DEV's, wg0 by default), read
# once the tunnel is quiet: the same readings twice, 1 s apart (up to 10 tries). Read
# while a packet is in flight, or while one end sends (iperf3's last segments, its
# control connection closing, a keepalive) between the two ends' readings, one end has
# counted it and the other not, and tx == rx cannot hold: seen on 6.1, B's tx 650
# against A's rx 651 (B read first), and in mode_flip's UDP phase A's tx 117,095
# against B's rx 117,096 (A read first, 1 s after iperf3 had ended).
stats_when_quiet() {
	local i dev=${1:-wg0}
	for i in $(seq 10); do
		nb wghctl stats "$dev" >/tmp/b.json
		na wghctl stats "$dev" >/tmp/a.json
		sleep 1
		nb wghctl stats "$dev" >/tmp/b2.json
		na wghctl stats "$dev" >/tmp/a2.json
		if cmp -s /tmp/a.json /tmp/a2.json && cmp -s /tmp/b.json /tmp/b2.json; then
			return 0
		fi
		echo "the counters still moved (reading $i)"
	done
}

# iperf3 server in wgh-b, one-shot; arguments go to iperf3 (e.g. -J).
start_iperf_server() {
	nb iperf3 -s -1 -D -B 192.168.77.2 -I "/tmp/iperf3-$RANDOM.pid" "$@"
	local i
	for i in $(seq 100); do
		nb ss -tlnH 'sport = 5201' | grep -q . && return 0
		sleep 0.1
	done
	die "iperf3 server did not start"
}
