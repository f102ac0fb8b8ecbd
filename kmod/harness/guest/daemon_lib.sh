# Helpers for the daemon scenarios (bash, in the guest, as root): a gateway with one
# WireGuard device and four client tunnels, and the daemon from the host's repository.
#
#  ┌──────────────── netns gw ────────────────┐        ┌─── netns cN (N = 1..4) ───┐
#  │ wg0 192.168.77.1/24, port 51820          │        │ wg0 192.168.77.1N/24      │
#  │   peers c1..c4 (allowed 192.168.77.1N)   │        │   peer gw                 │
#  │ vethN 10.9.N.1/24 ───────────────────────┼────────┼── veth0 10.9.N.2/24       │
#  └──────────────────────────────────────────┘        └───────────────────────────┘
#
# c1 carries the heavy iperf3 stream, c2..c4 pings. The daemon runs in gw, from the
# repository shared at the host's path, with the target tree's Python and the venv
# kmod/rootfs.sh made (/usr/local/bin/wghybrid there).
. /mnt/kmod/harness/guest/lib.sh
REPO=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
[[ -n $REPO && -d $REPO/wghybrid ]] ||
	die "the repository is not shared with the guest (wgh.repo=$REPO)"
WGHYBRID=/usr/local/bin/wghybrid
SOCK=/run/wghybrid-e2e.sock
STATE=/var/lib/wghybrid-e2e
kstate() { ip netns exec gw python3 "$H/guest/daemon_kstate.py" "$@"; }
ng() { ip netns exec gw "$@"; }
nc() { local n=$1; shift; ip netns exec "c$n" "$@"; }
wgh() { ng "$WGHYBRID" --socket "$SOCK" "$@"; }

# setup_gateway [default_mode]: sets KEY_GW and KEY_C1..KEY_C4.
setup_gateway() {
	step "modprobe wireguard ${1:+default_mode=$1}"
	modprobe wireguard ${1:+default_mode=$1}
	ip netns add gw
	ip -n gw link set lo up
	ip -n gw link add wg0 type wireguard
	local priv_gw n priv
	priv_gw=$(wg genkey)
	KEY_GW=$(wg pubkey <<<"$priv_gw")
	ng wg set wg0 private-key <(echo "$priv_gw") listen-port 51820
	for n in 1 2 3 4; do
		ip netns add "c$n"
		ip -n "c$n" link set lo up
		ip -n gw link add "veth$n" type veth peer name veth0 netns "c$n"
		ip -n gw addr add "10.9.$n.1/24" dev "veth$n"
		ip -n "c$n" addr add "10.9.$n.2/24" dev veth0
		ip -n gw link set "veth$n" up
		ip -n "c$n" link set veth0 up
		priv=$(wg genkey)
		printf -v "KEY_C$n" '%s' "$(wg pubkey <<<"$priv")"
		local key_var="KEY_C$n"
		ip -n "c$n" link add wg0 type wireguard
		nc "$n" wg set wg0 private-key <(echo "$priv") listen-port 51820 \
			peer "$KEY_GW" endpoint "10.9.$n.1:51820" allowed-ips 192.168.77.0/24
		ng wg set wg0 peer "${!key_var}" endpoint "10.9.$n.2:51820" \
			allowed-ips "192.168.77.1$n/32"
		ip -n "c$n" addr add "192.168.77.1$n/24" dev wg0
		ip -n "c$n" link set wg0 up
	done
	ip -n gw addr add 192.168.77.1/24 dev wg0
	ip -n gw link set wg0 up
	for n in 1 2 3 4; do nc "$n" ping -c 1 -W 2 192.168.77.1 >/dev/null || die "tunnel c$n is down"; done
	echo "4 tunnels up: c1 $KEY_C1, c2 $KEY_C2, c3 $KEY_C3, c4 $KEY_C4"
}

teardown_gateway() {
	local ns
	for ns in gw c1 c2 c3 c4; do ip netns del "$ns" 2>/dev/null || true; done
}

# start_daemon POLICY: the daemon in gw, logging to /tmp/daemon.log; sets DAEMON_PID.
start_daemon() {
	# Not through a shell function: $! must be the daemon itself (ip netns exec execs).
	ip netns exec gw "$WGHYBRID" run --backend kernel --policy "$1" --state-dir "$STATE" \
		--socket "$SOCK" --log-level info >>/tmp/daemon.log 2>&1 &
	DAEMON_PID=$!
	local i
	for i in $(seq 120); do
		wgh status >/dev/null 2>&1 && { echo "daemon $DAEMON_PID answers after $((i / 4)) s"; return 0; }
		kill -0 "$DAEMON_PID" 2>/dev/null || { tail -20 /tmp/daemon.log; die "the daemon exited"; }
		sleep 0.25
	done
	tail -20 /tmp/daemon.log
	die "the daemon does not answer on $SOCK"
}
