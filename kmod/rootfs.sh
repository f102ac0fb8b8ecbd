#!/bin/bash
# The target's Debian tree: the qemu guest's root filesystem and the module's build
# chroot in one (the module is built with the compiler the target's kernel was built
# with, the guest runs the target's release, and DKMS in the guest finds the same
# headers a gateway has).
#
#   kmod/rootfs.sh TOP     TOP: kmod/fetch.sh's folder of one kernel version;
#                          prints the tree's folder on the last line
#
# Built once per target and package list under $WGHYBRID_KMOD_CACHE/rootfs-SUITE-<hash>
# (debootstrap, then the build tools, then a Python venv for the daemon scenarios in
# /opt/venv with the package's dependencies from PyPI), and then, once per kernel
# version, that version's linux-headers packages installed with dpkg, as on a gateway.
# The guest never writes it (its root is an overlay, kmod/harness/guest/stage1.sh).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_target
top=${1:?usage: kmod/rootfs.sh TOP}
# shellcheck source=/dev/null
. "$top/target.env"
host_mirrors

# What the scenarios and upstream's netns.sh use inside the guest, what building the
# module needs (the kernel's compiler $CC; the headers' own dependencies are added
# below from their control files) and DKMS.
PKGS=iproute2,wireguard-tools,iperf3,python3,python3-venv,kmod,iputils-ping,procps
PKGS+=,busybox-static,iptables,ncat,bash,util-linux,ca-certificates
PKGS+=,make,libc6-dev,$CC,dkms,patch,xz-utils
# The daemon's run-time dependencies, for its scenarios (the repository itself is
# shared with the guest and put on PYTHONPATH).
pydeps=$(python3 -c 'import sys, tomllib
print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
	"$KMOD/../pyproject.toml")
key=$(printf '%s %s %s v3' "$SUITE" "$PKGS" "$pydeps" | sha256sum | cut -c1-12)
dir="$CACHE/rootfs-$SUITE-$key"
mkdir -p "$CACHE"
exec 9>"$CACHE/.rootfs-$SUITE.lock"
flock 9 # one builder per target; the others wait and then find it done
if [[ ! -e "$dir/.done" ]]; then
	rm -rf "$dir"
	kmsg "$TARGET: debootstrap $SUITE into $dir"
	debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$dir" "$MIRROR" \
		>"$CACHE/debootstrap-$SUITE.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap-$SUITE.log" >&2; kdie "$TARGET: debootstrap failed"; }
	cat >"$dir/etc/apt/sources.list" <<-LIST
		deb $MIRROR $SUITE main
		deb $MIRROR $SUITE-updates main
		deb $SECURITY $SUITE-security main
	LIST
	cp /etc/resolv.conf "$dir/etc/resolv.conf"
	# pip verifies the registry with the host's CA bundle (a host behind a TLS
	# proxy has its certificate there, not in Debian's).
	cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
	kmsg "$TARGET: python venv /opt/venv: $pydeps"
	# shellcheck disable=SC2086
	in_chroot "$dir" sh -c "python3 -m venv /opt/venv &&
		/opt/venv/bin/pip install -q --disable-pip-version-check $pydeps" >&2 ||
		kdie "$TARGET: pip install in the tree failed"
	# Upstream's netns.sh uses iptables' legacy back end, as its own qemu images do.
	in_chroot "$dir" update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
	# The daemon as the scenarios call it: the repository (wgh.repo= on the guest's
	# command line) on the venv's PYTHONPATH.
	cat >"$dir/usr/local/bin/wghybrid" <<-'SH'
		#!/bin/sh
		repo=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
		PYTHONPATH=$repo PYTHONDONTWRITEBYTECODE=1 exec /opt/venv/bin/python -m wghybrid "$@"
	SH
	cat >"$dir/usr/local/bin/wghybrid-python" <<-'SH'
		#!/bin/sh
		repo=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
		PYTHONPATH=$repo PYTHONDONTWRITEBYTECODE=1 exec /opt/venv/bin/python "$@"
	SH
	chmod +x "$dir/usr/local/bin/wghybrid" "$dir/usr/local/bin/wghybrid-python"
	mkdir -p "$dir/opt/wghybrid" "$dir/mnt/build"
	touch "$dir/.done"
fi

# This kernel's headers, installed as a gateway installs them. dpkg, not apt: the
# headers of trixie depend on the image package (initramfs and all), which the
# tree does not need: its kernel is booted by qemu. Their other dependencies are
# installed from the archive first.
if ! in_chroot "$dir" dpkg-query -W -f '${Version}\n' "linux-headers-$REL" 2>/dev/null | grep -qx "$V"; then
	kmsg "$TARGET: installing the headers of $V ($REL) in the tree"
	deps=$(for p in $HEADERS; do dpkg-deb -f "$DEBS/${p}_"*.deb Depends; done |
		tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' |
		grep -vE '^(linux-headers-|linux-kbuild-|linux-image-|$)' | sort -u | paste -sd' ')
	# shellcheck disable=SC2086
	in_chroot "$dir" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $deps" \
		>&2 || kdie "$TARGET: the headers' dependencies ($deps) did not install"
	files=()
	for p in $HEADERS; do files+=("/mnt/debs/$(basename "$DEBS/${p}_"*.deb)"); done
	WGH_BIND="$DEBS:/mnt/debs" in_chroot "$dir" dpkg -i --force-depends "${files[@]}" >&2 ||
		kdie "$TARGET: dpkg -i of the headers failed"
fi
echo "$dir"
