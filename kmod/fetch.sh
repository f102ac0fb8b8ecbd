#!/bin/bash
# Fetch Debian's kernel packages pinned in debian-kernel.env into a cache and unpack them.
#
#   kmod/fetch.sh            prints the cache folder of this version on its last line
#
# WGHYBRID_KMOD_CACHE (default /var/cache/wghybrid-kmod) holds, per version V:
#   debs/V/*.deb            what `apt-get download` fetched
#   V/image  V/headers      the image and headers packages, dpkg -x'ed (never installed)
#   V/src                   drivers/net/wireguard and tools/testing/selftests/wireguard
#                           from linux-source-6.1, pristine (patches are applied elsewhere)
# Each step is skipped when its result is already there, so a second run is instant.
# A fresh machine needs `apt-get update` first (this script runs it when apt knows no V).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=debian-kernel.env
. "$here/debian-kernel.env"
REL="$ABI-amd64"
CACHE=${WGHYBRID_KMOD_CACHE:-/var/cache/wghybrid-kmod}
top="$CACHE/$V"
debs="$CACHE/debs/$V"
mkdir -p "$debs" "$top"
exec 8>"$CACHE/.fetch.lock"
flock 8 # one fetcher at a time; the others wait and then find everything there

say() { echo "[kmod/fetch] $*" >&2; }

pkgs=("linux-source-6.1" "linux-image-$REL" "linux-headers-$REL"
      "linux-headers-$ABI-common" "linux-kbuild-6.1")
missing=()
for p in "${pkgs[@]}"; do
	compgen -G "$debs/${p}_*.deb" >/dev/null || missing+=("$p=$V")
done
if ((${#missing[@]})); then
	if ! apt-cache show "linux-source-6.1=$V" >/dev/null 2>&1; then
		say "apt does not know linux-source-6.1=$V: running apt-get update"
		apt-get update -qq
	fi
	say "apt-get download ${missing[*]}"
	(cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >&2)
fi

if [[ ! -e "$top/image/.done" ]]; then
	rm -rf "$top/image"
	dpkg -x "$debs"/linux-image-"$REL"_*.deb "$top/image"
	depmod -b "$top/image" "$REL"
	touch "$top/image/.done"
fi
if [[ ! -e "$top/headers/.done" ]]; then
	rm -rf "$top/headers"
	for p in linux-headers-"$REL" linux-headers-"$ABI"-common linux-kbuild-6.1; do
		dpkg -x "$debs/${p}"_*.deb "$top/headers"
	done
	# The arch headers include the common ones by absolute path; point it at our copy,
	# and their scripts/ and tools/ are symlinks into /usr/lib/linux-kbuild-6.1: same.
	hdr="$top/headers/usr/src/linux-headers-$REL"
	sed -i "s#^include /usr/src/#include $top/headers/usr/src/#" "$hdr/Makefile"
	for l in $(find "$top/headers/usr/src" -maxdepth 2 -type l); do
		t=$(readlink "$l")
		case "$t" in /*) ln -sfn "$top/headers$t" "$l" ;; esac
	done
	touch "$top/headers/.done"
fi
if [[ ! -e "$top/src/.done" ]]; then
	rm -rf "$top/src"
	mkdir -p "$top/src"
	dpkg -x "$debs"/linux-source-6.1_*.deb "$top/src/deb"
	say "extracting wireguard from linux-source-6.1.tar.xz"
	tar -xJf "$top/src/deb/usr/src/linux-source-6.1.tar.xz" -C "$top/src" \
		linux-source-6.1/drivers/net/wireguard \
		linux-source-6.1/tools/testing/selftests/wireguard \
		linux-source-6.1/include/uapi/linux/wireguard.h
	rm -rf "$top/src/deb"
	touch "$top/src/.done"
fi
echo "$top"
