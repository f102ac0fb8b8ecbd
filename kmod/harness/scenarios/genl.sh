#!/bin/bash
# The "wghybrid" generic netlink family from user space: every command, the errno of
# bad requests, unprivileged callers refused, and CAP_NET_ADMIN of a user namespace
# enough to read but not to change anything.
. /mnt/kmod/harness/guest/lib.sh
setup_pair
step "commands and bad requests, as root and as nobody"
na python3 "$H/guest/genl_check.py" "$KEY_B"

step "admin of a user namespace: reads allowed, changes refused (GENL_ADMIN_PERM)"
unshare --user --map-root-user --net bash -c '
	set -e
	ip link add wg9 type wireguard
	python3 '"$H"'/guest/wghctl.py get wg9
	python3 '"$H"'/guest/wghctl.py stats wg9
	! python3 '"$H"'/guest/wghctl.py set-device wg9 0 2>/tmp/err || exit 1
	grep -q EPERM /tmp/err && cat /tmp/err
	ip link del wg9'

step "default_mode parameter"
echo inline >/sys/module/wireguard/parameters/default_mode
[[ $(</sys/module/wireguard/parameters/default_mode) == inline ]] || die "default_mode not inline"
! echo bogus >/sys/module/wireguard/parameters/default_mode 2>/dev/null || die "bogus mode accepted"
ip -n wgh-a link add wg1 type wireguard
na wg set wg1 peer "$KEY_A" allowed-ips 10.99.0.1/32
na wghctl stats wg1 | grep -q '"mode": 1' || die "a new peer did not start inline"
na wghctl get wg1 | grep -q '"default_mode": 1' || die "GET_DEVICE default_mode is not inline"
echo "new peers start inline after the parameter is set"
echo vanilla >/sys/module/wireguard/parameters/default_mode

step "a stats dump of 2000 peers spans several messages, each peer once"
python3 - <<'PY' | na wg set wg1 $(cat)
import base64, os
print(" ".join(f"peer {base64.b64encode(os.urandom(32)).decode()}" for _ in range(2000)))
PY
na python3 - <<PY
import sys
sys.path.insert(0, "$H/guest")
import wghctl
g = wghctl.Genl()
msgs = g.request(wghctl.CMD_GET_STATS, wghctl.string(wghctl.A_IFNAME, "wg1"), dump=True)
recs = wghctl.stats(g, "wg1")
keys = {r["key"] for r in recs}
print(f"{len(recs)} records in {len(msgs)} messages, {len(keys)} distinct keys")
assert len(recs) == 2001 and len(keys) == 2001 and len(msgs) > 1 and not g.dump_intr
PY
# After the unload: what tearing the devices down and unloading reports counts too.
unload_module
check_dmesg
