#!/bin/bash
# Issue 12, finding 8, the daemon's last step against a stalled peer: the kernel
# backend's recreate_peer (wghybrid/dataplane/kernel.py, run from the host's repository
# with the tree's /opt/venv) removes a peer and adds it back through upstream
# WireGuard's family (pyroute2), then gives it back its mode and core through ours.
# Checked from outside the daemon (`wg show dump`, wghctl.py): the same preshared key,
# endpoint, allowed IPs and keepalive; the same mode and core; a new epoch (fresh
# counters); the tunnel answers both ways afterwards; no warning; the module unloads.
. /mnt/kmod/harness/guest/daemon_lib.sh
trap 'teardown_gateway' EXIT
setup_gateway vanilla
PY=/opt/venv/bin/python3
[[ -x $PY ]] || die "no /opt/venv in the guest tree (kmod/rootfs.sh)"

step "c2's peer at the gateway: a preshared key, a keepalive, two allowed IPs; inline on core 1"
psk=$(wg genpsk)
ng wg set wg0 peer "$KEY_C2" preshared-key <(echo "$psk") persistent-keepalive 7 \
	allowed-ips 192.168.77.12/32,10.99.0.0/16
nc 2 wg set wg0 peer "$KEY_GW" preshared-key <(echo "$psk")
ng python3 "$H/guest/wghctl.py" set-peer wg0 "$KEY_C2" --mode inline --core 1 ||
	die "set-peer failed"
nc 2 ping -c 3 -i 0.2 -W 2 192.168.77.1 >/dev/null || die "c2 does not answer with the preshared key"
# wg show dump, peer lines: key psk endpoint allowed-ips handshake rx tx keepalive
conf() { ng wg show wg0 dump | awk -v k="$1" '$1 == k {
	n = split($4, a, ","); s = ""; for (i = 1; i <= n; i++) s = s " " a[i]
	print $1, $2, $3, s, $8 }' | tr ' ' '\n' | sort | tr '\n' ' '; }
record() { ng python3 "$H/guest/wghctl.py" stats wg0 | "$PY" -c '
import json, sys
for r in json.load(sys.stdin):
    if r["key"] == sys.argv[1]:
        print(r["mode"], r["core"], r["epoch"], r["rx_packets"])' "$1"; }
before=$(conf "$KEY_C2")
read -r mode0 core0 epoch0 rx0 < <(record "$KEY_C2")
echo "before: $before"
echo "before: mode $mode0 core $core0 epoch $epoch0 rx_packets $rx0"
[[ $rx0 -gt 0 ]] || die "no packet accepted before"

step "recreate_peer"
ng env PYTHONPATH="$REPO" "$PY" - "$KEY_C2" <<'PYEOF' || die "recreate_peer failed"
import asyncio, base64, sys
from wghybrid.dataplane.kernel import open_dataplane

async def main() -> None:
    dp = await open_dataplane()
    try:
        print(await dp.recreate_peer("wg0", base64.b64decode(sys.argv[1])))
    finally:
        await dp.close()

asyncio.run(main())
PYEOF
after=$(conf "$KEY_C2")
read -r mode1 core1 epoch1 rx1 < <(record "$KEY_C2")
echo "after:  $after"
echo "after:  mode $mode1 core $core1 epoch $epoch1 rx_packets $rx1"
[[ "$after" == "$before" ]] || die "the configuration changed: before '$before', after '$after'"
[[ $mode1 == "$mode0" && $core1 == "$core0" ]] || die "mode/core $mode1/$core1, was $mode0/$core0"
[[ $epoch1 != "$epoch0" ]] || die "the same epoch: the peer was not re-created"

step "the tunnel answers both ways afterwards"
nc 2 ping -c 3 -i 0.2 -W 3 192.168.77.1 >/dev/null || die "c2 -> gateway: no answer after"
ng ping -c 3 -i 0.2 -W 3 192.168.77.12 >/dev/null || die "gateway -> c2: no answer after"
read -r mode2 core2 epoch2 rx2 < <(record "$KEY_C2")
[[ $rx2 -gt 0 && $epoch2 == "$epoch1" ]] || die "the new peer accepted nothing (rx $rx2)"
echo "after pings: rx_packets $rx2, mode $mode2, core $core2"
check_dmesg
teardown_gateway
unload_module
