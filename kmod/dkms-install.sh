#!/bin/bash
# Install the patched wireguard.ko with DKMS on a Debian gateway:
#
#   kmod/dkms-install.sh [KERNEL_RELEASE]      (default: uname -r)
#
# Needs `apt-get install dkms linux-headers-$(uname -r)`. The source is WireGuard
# from linux-source of debian-kernel.env's version with kmod/patches applied (the
# same tree kmod/build.sh builds), placed in /usr/src/wireguard-wghybrid-<version>.
# DKMS then rebuilds it for each new 6.1 kernel (AUTOINSTALL); a kernel the
# patches no longer apply to needs debian-kernel.env moved first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kernel=${1:-$(uname -r)}
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$here/dkms.conf")
name=wireguard-wghybrid
dst=${WGHYBRID_DKMS_SRC:-/usr/src}/$name-$ver
"$here/build.sh" --source "$dst"
cp "$here/dkms.conf" "$dst/dkms.conf"
dkms status -m "$name" -v "$ver" | grep -q . || dkms add -m "$name" -v "$ver"
dkms build -m "$name" -v "$ver" -k "$kernel" ${WGHYBRID_DKMS_ARGS:-}
[[ -n ${WGHYBRID_DKMS_NO_INSTALL:-} ]] || dkms install -m "$name" -v "$ver" -k "$kernel"
