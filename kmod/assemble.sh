#!/bin/bash
# Assemble the patched WireGuard source tree of one kernel line.
#
#   kmod/assemble.sh WG_SRC LINE DST
#
# WG_SRC: a pristine drivers/net/wireguard (from linux-source-LINE); DST: made anew,
# WG_SRC with kmod/patches/LINE/*.patch applied in order (git format-patch output,
# relative to the kernel tree, hence -p4) and the uapi header added. Used by build.sh
# (the cache's source) and dkms-install.sh (the gateway's own linux-source). A line
# with no series, or a patch that does not apply, fails naming the patch and the hunks.
set -euo pipefail
src=${1:?usage: assemble.sh WG_SRC LINE DST} line=${2:?} dst=${3:?}
here=$(cd "$(dirname "$0")" && pwd)
series=$here/patches/$line
shopt -s nullglob
patches=("$series"/*.patch)
if ((${#patches[@]} == 0)); then
	echo "wghybrid has no patch series for linux $line (kmod/patches/ has: $(cd "$here/patches" && ls | paste -sd' '))" >&2
	exit 3
fi
[[ -f $src/main.c && -f $src/peer.c ]] || { echo "$src is not WireGuard's source (no main.c, peer.c)" >&2; exit 1; }
rm -rf "$dst"
mkdir -p "$(dirname "$dst")"
cp -r "$src" "$dst"
for p in "${patches[@]}"; do
	if ! out=$(patch -p4 --forward --no-backup-if-mismatch --batch -d "$dst" <"$p" 2>&1); then
		echo "kmod/patches/$line/$(basename "$p") does not apply to this WireGuard source:" >&2
		grep -E 'FAILED|can.t find file|Reversed|malformed|No file to patch' <<<"$out" |
			sed 's/^/    /' >&2 || sed 's/^/    /' <<<"$out" >&2
		rm -rf "$dst"
		exit 4
	fi
done
mkdir -p "$dst/include/uapi/linux"
cp "$here/include/uapi/linux/wghybrid.h" "$dst/include/uapi/linux/"
