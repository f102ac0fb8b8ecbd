#!/bin/bash
# Build the patched wireguard.ko for a target, from nothing.
#
#   WGHYBRID_KMOD_TARGET=trixie kmod/build.sh   -> kmod/build/trixie/wireguard.ko (last line)
#
# Steps: fetch.sh (resolve the kernel version, download, unpack; cached), rootfs.sh
# (the target's Debian tree with its kernel's compiler and headers; cached), then
# assemble.sh (drivers/net/wireguard + kmod/patches/LINE + the uapi header) and make
# in the target's tree, against the headers installed there. Environment:
#   WGHYBRID_KMOD_TARGET  trixie (default) or bookworm (kmod/targets/)
#   WGHYBRID_KMOD_CACHE   download/unpack/tree cache (default /var/cache/wghybrid-kmod)
#   WGHYBRID_KMOD_KERNEL  debian (default) or debug: against kmod/debugkernel.sh's tree
#   WGHYBRID_KMOD_BUILD   output folder (default kmod/build/TARGET, TARGET-debug for debug)
#   WGHYBRID_KMOD_FAULT   NAME: also apply kmod/harness/faults/NAME.patch after the series,
#                         a fault for a test (never shipped; default folder
#                         kmod/build/TARGET-fault-NAME)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_target
sfx=${KERNEL/#debian/}
fault=${WGHYBRID_KMOD_FAULT:-}
fpatch=""
if [[ -n $fault ]]; then
	[[ $fault =~ ^[a-z0-9_]+$ ]] || kdie "WGHYBRID_KMOD_FAULT is a name of kmod/harness/faults/, not '$fault'"
	fpatch=$KMOD/harness/faults/$fault.patch
	[[ -f $fpatch ]] || kdie "no fault $fpatch"
	sfx+=${sfx:+-}fault-$fault
fi
out=${WGHYBRID_KMOD_BUILD:-$KMOD/build/$TARGET${sfx:+-$sfx}}
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9 # one build at a time in one output folder (harness runs may go side by side)
top=${WGHYBRID_KMOD_TOP:-$("$KMOD/fetch.sh" | tail -1)}
# shellcheck source=/dev/null
. "$top/target.env"
rootfs=$("$KMOD/rootfs.sh" "$top" | tail -1)
kd=""
if [[ $KERNEL == debug ]]; then
	kd=$(WGHYBRID_KMOD_TOP=$top "$KMOD/debugkernel.sh" | tail -1)
	REL=$(cat "$kd/release")
fi

# Skip the build when nothing that goes into it has changed.
stamp=$(cat "$top/target.env" "$KMOD/patches/$LINE"/*.patch "$KMOD/include/uapi/linux/wghybrid.h" \
	"$KMOD/assemble.sh" "$0" <(echo "$kd") ${fpatch:+"$fpatch"} 2>/dev/null | sha256sum | cut -c1-16)
if [[ -e "$out/wireguard.ko" && $(cat "$out/.stamp" 2>/dev/null) == "$stamp" ]]; then
	echo "$out/wireguard.ko"
	exit 0
fi
rm -f "$out/.stamp" "$out/wireguard.ko"
src="$out/wireguard"
"$KMOD/assemble.sh" "$top/src/linux-source-$LINE/drivers/net/wireguard" "$LINE" "$src" ||
	kdie "$TARGET: the series does not apply to $V"
if [[ -n $fpatch ]]; then
	patch -p4 --forward --no-backup-if-mismatch --batch -s -d "$src" <"$fpatch" ||
		kdie "$TARGET: the fault $fault does not apply after the series"
fi
if [[ $KERNEL == debug ]]; then
	kmsg "$TARGET: make -C <debug kernel $REL> M=wireguard ($CC)"
	WGHYBRID_KMOD_TOP=$top "$KMOD/debugkernel.sh" make "$src" -s -j"$(nproc)" modules >"$out/make.log" 2>&1 ||
		{ cat "$out/make.log" >&2; kdie "$TARGET: build failed"; }
else
	kmsg "$TARGET: make -C /usr/src/linux-headers-$REL M=wireguard ($CC, in the $SUITE tree)"
	WGH_BIND="$src:/mnt/build" in_chroot "$rootfs" \
		make -s -C "/usr/src/linux-headers-$REL" M=/mnt/build -j"$(nproc)" modules >"$out/make.log" 2>&1 ||
		{ cat "$out/make.log" >&2; kdie "$TARGET: build failed"; }
fi
grep -v "Skipping BTF generation" "$out/make.log" >&2 || true
[[ -e "$src/wireguard.ko" ]] || kdie "$TARGET: make left no wireguard.ko"
strip --strip-debug -o "$out/wireguard.ko" "$src/wireguard.ko"
modinfo -F vermagic "$out/wireguard.ko" | grep -q "^$REL " ||
	kdie "$TARGET: vermagic is not $REL: $(modinfo -F vermagic "$out/wireguard.ko")"
echo "$stamp" >"$out/.stamp"
echo "$out/wireguard.ko"
