#!/bin/bash
# Reading the counters of 10,000 peers: the daemon's bulk dump (WGH_CMD_GET_STATS via
# pyroute2 into numpy) against upstream WireGuard's own dump (`wg show wg0 dump`, and
# pyroute2's WireGuard dump), timed in one run by bench/kmod_dump.py. The ratio goes to
# the log and to /mnt/results/kmod_dump.json; the scenario fails if the methods disagree
# on the number of peers, not on speed (performance is reported, never asserted).
. /mnt/kmod/harness/guest/daemon_lib.sh
PEERS=${WGH_DUMP_PEERS:-10000}
trap 'ip netns del dump 2>/dev/null || true' EXIT
modprobe wireguard
ip netns add dump
ip -n dump link add wg0 type wireguard

step "configure $PEERS peers with wg setconf"
python3 - "$PEERS" "$(wg genkey)" >/tmp/wg0.conf <<'PY'
import base64, os, sys
n, priv = int(sys.argv[1]), sys.argv[2]
out = [f"[Interface]\nPrivateKey = {priv}\nListenPort = 51820\n"]
for i in range(n):
    key = base64.b64encode(os.urandom(32)).decode()
    ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    out.append(f"[Peer]\nPublicKey = {key}\nAllowedIPs = {ip}/32\n"
               f"Endpoint = 10.200.0.1:{20000 + i % 40000}\n")
print("\n".join(out))
PY
t0=$SECONDS
ip netns exec dump wg setconf wg0 /tmp/wg0.conf
rm -f /tmp/wg0.conf # it holds a private key
got=$(ip netns exec dump wg show wg0 peers | wc -l)
echo "$got peers in $((SECONDS - t0)) s"
((got == PEERS)) || die "wg setconf made $got peers, not $PEERS"

step "time the dumps"
ip netns exec dump wghybrid-python "$REPO/bench/kmod_dump.py" --dev wg0 \
	--out /mnt/results/kmod_dump.json
step "delete the device"
echo "daemon_dump: deleting a device of $PEERS peers" >/dev/console
t0=$SECONDS
ip -n dump link del wg0
echo "daemon_dump: deleted in $((SECONDS - t0)) s" >/dev/console
ip netns del dump
trap - EXIT
echo "deleted in $((SECONDS - t0)) s"
check_dmesg
unload_module
