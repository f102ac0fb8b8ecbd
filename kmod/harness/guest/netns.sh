# netns MODE: upstream's tools/testing/selftests/wireguard/netns.sh, unchanged, from
# the same linux-source package, with every peer it creates starting in MODE. With
# WireGuard's debug messages on, its last check (every peer and keypair created was
# also destroyed) is a leak check. Set WGH_NETNS_MODULE=stock to run it against
# Debian's own wireguard.ko instead (what a failing part is compared with).
. /mnt/kmod/harness/guest/lib.sh
mode=$1
if [[ ${WGH_NETNS_MODULE:-patched} == stock ]]; then
	modprobe -a udp_tunnel ip6_udp_tunnel libchacha20poly1305 libcurve25519-generic curve25519-x86_64
	insmod /opt/wghybrid/stock-wireguard.ko
else
	modprobe wireguard default_mode="$mode"
	[[ $(</sys/module/wireguard/parameters/default_mode) == "$mode" ]] || die "default_mode is not $mode"
fi
echo 'module wireguard +p' >/sys/kernel/debug/dynamic_debug/control
step "upstream netns.sh, ${WGH_NETNS_MODULE:-patched} module, default_mode=$mode"
# Each line of its output gets the seconds since the start, to see where time goes.
bash /opt/wghybrid/netns.sh 2>&1 | while IFS= read -r line; do printf '%4d %s\n' "$SECONDS" "$line"; done
echo 'module wireguard -p' >/sys/kernel/debug/dynamic_debug/control
check_dmesg
unload_module
