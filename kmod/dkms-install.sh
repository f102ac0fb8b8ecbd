#!/bin/bash
# Install the patched wireguard.ko with DKMS for one Debian kernel (by default the
# running one), built from that kernel's own WireGuard source:
#
#   kmod/dkms-install.sh [--kernel REL] [--kernel-version V]
#                        [--source-deb FILE | --source-dir DIR] [--check]
#
#   --kernel REL          the kernel release (default: uname -r)
#   --kernel-version V    its Debian package version (default: from dpkg's
#                         linux-image-REL, or `uname -v` for the running kernel)
#   --source-deb FILE     linux-source-LINE_V_all.deb to take the source from (default:
#                         the installed linux-source-LINE if it is at V, else
#                         `apt-get download linux-source-LINE=V`)
#   --source-dir DIR      an unpacked linux-source-LINE tree of the kernel's version
#                         (its Makefile's VERSION.PATCHLEVEL.SUBLEVEL is checked)
#   --check               stop after assembling the patched source (no dkms call)
#
# Refused, with one line saying why (exit 2 bad usage, 3 unsupported kernel, 4 series
# does not apply, 5 something missing): a kernel whose line (6.1, 6.12, ...) has no
# series in kmod/patches/, a PREEMPT_RT kernel, a source of another version than the
# kernel's, a series that does not apply (the patch and its hunks are named), missing
# headers. Needs `apt-get install dkms linux-headers-REL`. Every change to the system
# is printed as "[#] command".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=wireguard-wghybrid
kernel="" kver="" sdeb="" sdir="" check=0
die() { echo "dkms-install: $2" >&2; exit "$1"; }
while (($#)); do
	case $1 in
	--kernel) kernel=${2:?}; shift 2 ;;
	--kernel-version) kver=${2:?}; shift 2 ;;
	--source-deb) sdeb=${2:?}; shift 2 ;;
	--source-dir) sdir=${2:?}; shift 2 ;;
	--check) check=1; shift ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die 2 "unknown argument '$1' (--help lists them)" ;;
	esac
done
running=$(uname -r)
kernel=${kernel:-$running}
[[ $kernel =~ ^[0-9]+\.[0-9]+\.[0-9]+[A-Za-z0-9.+~-]*$ ]] || die 2 "'$kernel' is not a kernel release"
case $kernel in
*-rt-*) die 3 "kernel $kernel is a PREEMPT_RT kernel: the inline path is written and tested for Debian's standard kernels only" ;;
esac

# The Debian version of the kernel: the version of its image package, or what the
# running kernel says of itself ("... Debian 6.12.118-1 (2026-11-20)").
if [[ -z $kver ]]; then
	kver=$(dpkg-query -W -f '${Version}' "linux-image-$kernel" "linux-image-$kernel-unsigned" 2>/dev/null | head -1 || true)
	if [[ -z $kver && $kernel == "$running" ]]; then
		kver=$(uname -v | sed -n 's/.* Debian \([0-9][^ ]*\) .*/\1/p')
	fi
	[[ -n $kver ]] || die 5 "cannot tell the Debian version of kernel $kernel (linux-image-$kernel is not installed): pass --kernel-version"
fi
[[ $kver =~ ^[0-9]+\.[0-9]+\.[0-9]+-[A-Za-z0-9.+~]+$ ]] || die 2 "'$kver' is not a Debian kernel version (like 6.12.118-1)"
line=$(cut -d. -f1,2 <<<"$kver")
[[ $kernel == "$line".* ]] || die 3 "kernel $kernel is not of linux $line (its version $kver)"
if [[ ! -d $here/patches/$line ]]; then
	die 3 "linux $line (kernel $kernel, Debian $kver) has no wghybrid series; the supported lines are: $(cd "$here/patches" && ls | paste -sd' ')"
fi
hdr=/lib/modules/$kernel/build
((check)) || [[ -e $hdr/Makefile ]] || die 5 "no headers for $kernel ($hdr): apt-get install linux-headers-$kernel"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The source: linux-source-LINE at exactly the kernel's version.
if [[ -n $sdir ]]; then
	[[ -z $sdeb ]] || die 2 "--source-deb and --source-dir: one of them"
	[[ -f $sdir/Makefile && -d $sdir/drivers/net/wireguard ]] ||
		die 5 "$sdir is not a linux source tree with drivers/net/wireguard"
	up=$(awk -F' *= *' '$1 == "VERSION" {v = $2} $1 == "PATCHLEVEL" {p = $2}
		$1 == "SUBLEVEL" {s = $2} END {print v "." p "." s}' "$sdir/Makefile")
	[[ $up == "${kver%-*}" ]] ||
		die 5 "$sdir is linux $up, but kernel $kernel is ${kver%-*} ($kver): the source must be the kernel's own version"
	wgsrc=$sdir/drivers/net/wireguard
elif [[ -z $sdeb ]]; then
	have=$(dpkg-query -W -f '${Version}' "linux-source-$line" 2>/dev/null || true)
	if [[ $have == "$kver" && -e /usr/src/linux-source-$line.tar.xz ]]; then
		tarball=/usr/src/linux-source-$line.tar.xz
	else
		echo "[#] apt-get download linux-source-$line=$kver" >&2
		(cd "$work" && apt-get download -q "linux-source-$line=$kver" >&2) ||
			die 5 "linux-source-$line=$kver is not available from apt: install it, or pass --source-deb"
		sdeb=$(compgen -G "$work/linux-source-${line}_*.deb")
	fi
fi
if [[ -n $sdeb ]]; then
	[[ -r $sdeb ]] || die 5 "cannot read $sdeb"
	pkg=$(dpkg-deb -f "$sdeb" Package 2>/dev/null) || die 5 "$sdeb is not a Debian package"
	ver=$(dpkg-deb -f "$sdeb" Version)
	[[ $pkg == "linux-source-$line" ]] || die 5 "$sdeb is $pkg, not linux-source-$line"
	[[ $ver == "$kver" ]] ||
		die 5 "$sdeb is linux-source-$line $ver, but kernel $kernel is $kver: the source must be the kernel's own version"
	dpkg-deb --fsys-tarfile "$sdeb" | tar -x -C "$work" "./usr/src/linux-source-$line.tar.xz"
	tarball=$work/usr/src/linux-source-$line.tar.xz
fi
if [[ -z $sdir ]]; then
	tar -xJf "$tarball" -C "$work" "linux-source-$line/drivers/net/wireguard"
	wgsrc=$work/linux-source-$line/drivers/net/wireguard
fi
ver=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$here/../wghybrid/__init__.py")-k$kver
[[ $ver != -k* ]] || die 5 "no version in $here/../wghybrid/__init__.py (run from a wghybrid source tree)"
dst=/usr/src/$name-$ver
"$here/assemble.sh" "$wgsrc" "$line" "$work/tree" || exit $?
if ((check)); then
	echo "dkms-install: the series for linux $line applies to the WireGuard of $kernel ($kver)"
	exit 0
fi
regex="^$(sed 's/[.+]/\\&/g' <<<"$kernel")\$"
sed -e "s/@VERSION@/$ver/" -e "s/@KERNEL_REGEX@/$(sed 's/[\\&/]/\\&/g' <<<"$regex")/" \
	"$here/dkms.conf" >"$work/tree/dkms.conf"
if dkms status -m "$name" -v "$ver" 2>/dev/null | grep -q .; then
	echo "[#] dkms remove -m $name -v $ver --all" >&2
	dkms remove -m "$name" -v "$ver" --all >&2
fi
echo "[#] cp -r <patched source> $dst" >&2
rm -rf "$dst"
cp -r "$work/tree" "$dst"
echo "[#] dkms add -m $name -v $ver" >&2
dkms add -m "$name" -v "$ver" >&2
echo "[#] dkms build -m $name -v $ver -k $kernel" >&2
dkms build -m "$name" -v "$ver" -k "$kernel" >&2
# --force: the in-tree module carries the same MODULE_VERSION ("1.0.0"), and DKMS
# will not replace a module of the same version without it.
echo "[#] dkms install -m $name -v $ver -k $kernel --force" >&2
dkms install -m "$name" -v "$ver" -k "$kernel" --force >&2
echo "dkms-install: wireguard $ver installed for $kernel: $(modinfo -k "$kernel" -n wireguard)"
[[ $kernel != "$running" ]] ||
	echo "dkms-install: load it with 'modprobe -r wireguard && modprobe wireguard' (tunnels go down meanwhile)"
