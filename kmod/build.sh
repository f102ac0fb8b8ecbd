#!/bin/bash
# Build the patched wireguard.ko against Debian's kernel, from nothing.
#
#   kmod/build.sh                  -> kmod/build/wireguard.ko (debug info stripped)
#   kmod/build.sh --source DIR     only assemble the patched source tree in DIR
#                                  (what kmod/dkms-install.sh ships to DKMS)
#
# Steps: fetch.sh (apt-get download + unpack, cached), copy drivers/net/wireguard
# from linux-source, apply kmod/patches/*.patch in order (git format-patch
# output; patch -p4 because they are relative to the kernel tree), add the uapi
# header, build with the Debian headers of the pinned kernel. Environment:
#   WGHYBRID_KMOD_CACHE   download/unpack cache (default /var/cache/wghybrid-kmod)
#   WGHYBRID_KMOD_BUILD   output folder (default kmod/build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=debian-kernel.env
. "$here/debian-kernel.env"
REL="$ABI-amd64"

out=${WGHYBRID_KMOD_BUILD:-$here/build}
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9 # one build at a time in one output folder (harness runs may go side by side)
top=$("$here/fetch.sh" | tail -1)

assemble() {
	local dst=$1 p
	rm -rf "$dst"
	mkdir -p "$(dirname "$dst")"
	cp -r "$top/src/linux-source-6.1/drivers/net/wireguard" "$dst"
	for p in "$here"/patches/*.patch; do
		patch -p4 -s --forward --no-backup-if-mismatch -d "$dst" <"$p" ||
			{ echo "[kmod/build] $(basename "$p") does not apply to $V" >&2; exit 1; }
	done
	mkdir -p "$dst/include/uapi/linux"
	cp "$here/include/uapi/linux/wghybrid.h" "$dst/include/uapi/linux/"
}

if [[ ${1:-} == --source ]]; then
	assemble "$2"
	exit 0
fi

src="$out/wireguard"
# Skip the build when nothing that goes into it has changed.
stamp=$(cat "$here/debian-kernel.env" "$here"/patches/*.patch "$here/include/uapi/linux/wghybrid.h" \
	"$0" | sha256sum | cut -c1-16)
if [[ -e "$out/wireguard.ko" && $(cat "$out/.stamp" 2>/dev/null) == "$stamp" ]]; then
	echo "$out/wireguard.ko"
	exit 0
fi
rm -f "$out/.stamp"
assemble "$src"
hdr="$top/headers/usr/src/linux-headers-$REL"
echo "[kmod/build] make -C linux-headers-$REL M=$src" >&2
make -s -C "$hdr" M="$src" -j"$(nproc)" modules 2>&1 |
	grep -v "Skipping BTF generation" >&2 || true
[[ -e "$src/wireguard.ko" ]] || { echo "[kmod/build] build failed" >&2; exit 1; }
strip --strip-debug -o "$out/wireguard.ko" "$src/wireguard.ko"
modinfo -F vermagic "$out/wireguard.ko" | grep -q "^$REL " ||
	{ echo "[kmod/build] vermagic is not $REL" >&2; exit 1; }
echo "$stamp" >"$out/.stamp"
echo "$out/wireguard.ko"
