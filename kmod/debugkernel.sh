#!/bin/bash
# A debug kernel for a target: its own linux-source, built with kmod/debug/kernel.config
# and debug/LINE.config (KASAN, lockdep, PROVE_RCU, DEBUG_ATOMIC_SLEEP, kmemleak, ...:
# upstream WireGuard's selftest debug.config on a minimal configuration), to boot instead
# of Debian's kernel (WGHYBRID_KMOD_KERNEL=debug kmod/harness/run.sh ...).
#
#   WGHYBRID_KMOD_TARGET=trixie kmod/debugkernel.sh
#        builds it (once per hash of its inputs) and prints its folder on the last line:
#        image/boot/vmlinuz-REL, image/lib/modules/REL (the in-tree, unpatched
#        wireguard.ko only: everything else the guest needs is built in), release (REL)
#        and linux/ (the built tree, for building the patched module against)
#   kmod/debugkernel.sh make DIR ARGS...
#        make -C <the tree> M=DIR ARGS... with the target's compiler (kmod/build.sh)
#
# Built under $WGHYBRID_KMOD_CACHE/debug-kernel/SUITE-V-<hash of the configuration,
# the compiler and RECIPE>, in the target's Debian tree (kmod/rootfs.sh) with
# the target's compiler, plus flex, bison, bc and libelf-dev in an overlay of its own
# (buildroot-SUITE-<hash>/): the shared tree is never written. `nice -n 10 make -j2`:
# the machines it runs on are shared. From nothing it takes well over an hour on two
# busy cores (kmod/README.md, "The debug kernel").
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_target
top=${WGHYBRID_KMOD_TOP:-$("$KMOD/fetch.sh" | tail -1)}
# shellcheck source=/dev/null
. "$top/target.env"
rootfs=$("$KMOD/rootfs.sh" "$top" | tail -1)
# The configuration: what every line takes, and what this line only has.
configs=("$KMOD/debug/kernel.config" "$KMOD/debug/$LINE.config")
base=$CACHE/debug-kernel
mkdir -p "$base"

# The build root: the target's tree under an overlay holding the kernel's build tools.
BUILD_PKGS="flex bison bc libelf-dev"
br=$base/buildroot-$SUITE-$(printf '%s %s' "$rootfs" "$BUILD_PKGS" | sha256sum | cut -c1-12)
# in_buildroot CMD...: CMD in the build root (WGH_BIND as for in_chroot). Its packages
# layer ($br/upper) is written only when it is made (WGH_BR_SETUP=1); every other
# call gets a layer of its own in memory on top, so that builds may run side by side.
in_buildroot() {
	WGH_BIND=${WGH_BIND:-} unshare -m --propagation private bash -c '
		set -e
		br=$1 rootfs=$2; shift 2
		if [[ ${WGH_BR_SETUP:-} == 1 ]]; then
			layers="lowerdir=$rootfs,upperdir=$br/upper,workdir=$br/work"
		else
			mount -t tmpfs tmpfs "$br/work"
			mkdir "$br/work/u" "$br/work/w"
			layers="lowerdir=$br/upper:$rootfs,upperdir=$br/work/u,workdir=$br/work/w"
		fi
		mount -t overlay overlay -o "$layers" "$br/merged"
		. "$KMOD/lib.sh"
		in_chroot "$br/merged" "$@"' in_buildroot "$br" "$rootfs" "$@"
}
export KMOD WGH_BIND
(
	flock 9
	if [[ ! -e $br/.done ]]; then
		rm -rf "$br"
		mkdir -p "$br/upper" "$br/work" "$br/merged"
		kmsg "$TARGET: build root $br: apt-get install $BUILD_PKGS"
		# The tree's linux-headers packages were installed without their image package
		# (rootfs.sh), which apt takes for a broken system: they go from the build
		# root, which builds against its own kernel tree.
		WGH_BR_SETUP=1 in_buildroot sh -c "dpkg -r --force-depends \$(dpkg-query -W -f '\${Package}\n' 'linux-headers-*' 'linux-kbuild-*') &&
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $BUILD_PKGS" >&2 ||
			kdie "$TARGET: the kernel's build tools did not install"
		rm -rf "$br/work" && mkdir "$br/work"
		touch "$br/.done"
	fi
) 9>"$base/.buildroot-$SUITE.lock"

# The kernel's inputs: the source (V), the configuration, the compiler and how it is
# built (RECIPE: bumped whenever a change to this script changes what it builds).
RECIPE=1
key=$(cat "${configs[@]}" <(echo "$V $CC $RECIPE") | sha256sum | cut -c1-12)
kd=$base/$SUITE-$V-$key
tree=$kd/linux

if [[ ${1:-} == make ]]; then
	dir=${2:?usage: kmod/debugkernel.sh make DIR ARGS...}
	shift 2
	[[ -e $kd/.done ]] || kdie "$TARGET: no debug kernel at $kd (run kmod/debugkernel.sh)"
	WGH_BIND="$tree:/mnt/linux $dir:/mnt/build" in_buildroot \
		make -C /mnt/linux CC="$CC" HOSTCC="$CC" M=/mnt/build "$@"
	exit
fi

exec 9>"$base/.$SUITE-$V-$key.lock"
flock 9 # one builder of one kernel; the others wait and then find it done
if [[ ! -e $kd/.done ]]; then
	t0=$SECONDS
	rm -rf "$kd"
	mkdir -p "$kd"
	kmsg "$TARGET: extracting linux-source-$LINE ($V) into $kd"
	tar -xJf <(dpkg-deb --fsys-tarfile "$DEBS/linux-source-${LINE}_"*.deb |
		tar -xO "./usr/src/linux-source-$LINE.tar.xz") -C "$kd"
	mv "$kd/linux-source-$LINE" "$tree"
	cat "${configs[@]}" >"$tree/.wgh-allconfig"
	mk() { WGH_BIND="$tree:/mnt/linux" in_buildroot nice -n 10 make -C /mnt/linux CC="$CC" HOSTCC="$CC" "$@"; }
	mk -s KCONFIG_ALLCONFIG=.wgh-allconfig allnoconfig >&2
	# Every line of the configuration must have taken (an option renamed or with an
	# unmet dependency is dropped silently by Kconfig).
	bad=$(grep -hE '^CONFIG_' "${configs[@]}" | while IFS= read -r l; do
		grep -qxF -- "$l" "$tree/.config" || echo "$l"
	done)
	[[ -z $bad ]] || kdie "$TARGET: not in the debug kernel's .config: $(echo $bad)"
	kmsg "$TARGET: building the debug kernel (make -j2 bzImage modules, $CC; log in $kd/make.log)"
	mk -j2 bzImage modules >"$kd/make.log" 2>&1 || { tail -40 "$kd/make.log" >&2; kdie "$TARGET: the debug kernel did not build"; }
	rel=$(mk -s kernelrelease)
	mk -s INSTALL_MOD_PATH=/mnt/linux/.wgh-image modules_install >&2
	mv "$tree/.wgh-image" "$kd/image"
	mkdir -p "$kd/image/boot"
	cp "$tree/arch/x86/boot/bzImage" "$kd/image/boot/vmlinuz-$rel"
	echo "$rel" >"$kd/release"
	kmsg "$TARGET: debug kernel $rel built in $((SECONDS - t0)) s"
	touch "$kd/.done"
fi
echo "$kd"
