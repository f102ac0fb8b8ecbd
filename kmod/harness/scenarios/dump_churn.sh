#!/bin/bash
# The bulk stats dump of 10,000 peers while peers are added and removed: the kernel marks
# a dump the peer list changed under with NLM_F_DUMP_INTR (genl_dump_check_consistent on
# device_update_gen, which every `wg set` moves), and the daemon's reader
# (wghybrid.dataplane) dumps again. Checked by guest/dump_churn.py, in one namespace:
#   - interrupted dumps are seen (the churn does reach the dump), and every dump that
#     was not interrupted holds each of the 10,000 peers that never changed exactly once
#     and no key twice;
#   - the daemon's sample() under the same churn returns whole samples (retrying
#     interrupted dumps, counted in dump_retries), or a TransientError after
#     DUMP_RETRIES interrupted dumps in a row, never anything else;
#   - once the churn stops, one dump equals `wg show wg0 peers` exactly.
. /mnt/kmod/harness/guest/daemon_lib.sh
PEERS=${WGH_DUMP_PEERS:-10000}
trap 'ip netns del churn 2>/dev/null || true' EXIT
modprobe wireguard
ip netns add churn
ip -n churn link add wg0 type wireguard

step "configure $PEERS peers with wg setconf"
python3 - "$PEERS" "$(wg genkey)" /tmp/base-keys >/tmp/wg0.conf <<'PY'
import base64, os, sys
n, priv, keys = int(sys.argv[1]), sys.argv[2], sys.argv[3]
out = [f"[Interface]\nPrivateKey = {priv}\nListenPort = 51820\n"]
with open(keys, "w") as f:
    for i in range(n):
        key = base64.b64encode(os.urandom(32)).decode()
        f.write(key + "\n")
        out.append(f"[Peer]\nPublicKey = {key}\nAllowedIPs = 10.{(i >> 16) & 255}."
                   f"{(i >> 8) & 255}.{i & 255}/32\n")
print("\n".join(out))
PY
ip netns exec churn wg setconf wg0 /tmp/wg0.conf
rm -f /tmp/wg0.conf # it holds a private key
got=$(ip netns exec churn wg show wg0 peers | wc -l)
((got == PEERS)) || die "wg setconf made $got peers, not $PEERS"

step "dumps under peer churn"
ip netns exec churn wghybrid-python "$H/guest/dump_churn.py" --dev wg0 \
	--base /tmp/base-keys --seconds "${WGH_CHURN_SECONDS:-30}"
ip -n churn link del wg0
ip netns del churn
trap - EXIT
check_dmesg
unload_module
