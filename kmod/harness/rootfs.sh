#!/bin/bash
# Build (once) the guest's Debian root filesystem and print its folder on the last line.
# Cached under $WGHYBRID_KMOD_CACHE/rootfs-<hash of the package list>: changing the list
# below builds a new one; a second run is instant.
set -euo pipefail
CACHE=${WGHYBRID_KMOD_CACHE:-/var/cache/wghybrid-kmod}
# What the scenarios and upstream's netns.sh use inside the guest.
PKGS=iproute2,wireguard-tools,iperf3,python3,kmod,iputils-ping,procps,busybox-static,iptables,ncat,bash,util-linux
SUITE=bookworm
key=$(printf '%s %s v2' "$SUITE" "$PKGS" | sha256sum | cut -c1-12)
dir="$CACHE/rootfs-$key"
mkdir -p "$CACHE"
exec 9>"$CACHE/.rootfs.lock"
flock 9 # one builder at a time; the others wait and then find it done
if [[ ! -e "$dir/.done" ]]; then
	rm -rf "$dir"
	mkdir -p "$CACHE"
	echo "[kmod/rootfs] debootstrap $SUITE into $dir" >&2
	debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$dir" >"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
	# Upstream's netns.sh uses iptables' legacy back end, as its own qemu images do.
	chroot "$dir" update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
	mkdir -p "$dir/opt/wghybrid"
	touch "$dir/.done"
fi
echo "$dir"
