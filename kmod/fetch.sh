#!/bin/bash
# Resolve the target's kernel, download its packages into the cache and unpack them.
#
#   WGHYBRID_KMOD_TARGET=trixie kmod/fetch.sh    prints the version's folder on its last line
#
# The kernel version is resolved here, from what the archive serves now: the newest
# version of linux-source-$LINE for which every package needed exists at that very
# version (the source, the image, the headers and the headers' own linux-headers-*
# and linux-kbuild-* dependencies). Superseded builds vanish from the security
# archive within days, so a fixed pin breaks fresh machines; the version last seen
# passing (kmod/targets/$TARGET.passing) is only printed beside it.
# WGHYBRID_KMOD_VERSION=V takes V instead (it must still be served).
#
# Under $WGHYBRID_KMOD_CACHE (default /var/cache/wghybrid-kmod):
#   apt/SUITE/                    the target's private apt (lists refreshed after 30 min)
#   debs/SUITE/V/*.deb            what `apt-get download` fetched
#   SUITE/V/target.env            SUITE LINE V REL HEADERS (the headers packages)
#   SUITE/V/image                 the image package, dpkg -x'ed (never installed), depmod'ed
#   SUITE/V/src                   drivers/net/wireguard, its selftests, the uapi
#                                 wireguard.h and the top Makefile (the version) from
#                                 linux-source-$LINE, pristine
# Each step is skipped when its result is there, so a second run is quick.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
load_target
apt_target
mkdir -p "$CACHE"
exec 8>"$CACHE/.fetch-$SUITE.lock"
flock 8 # one fetcher per target at a time; the others wait and then find it done

stamp=$APTDIR/lists/.updated
if [[ -z $(find "$stamp" -mmin -30 2>/dev/null) ]]; then
	kmsg "$TARGET: apt-get update ($MIRROR, $SECURITY; suites $SUITE, $SUITE-updates, $SUITE-security)"
	apt-get "${APT[@]}" update -qq >&2 || kdie "$TARGET: apt-get update failed"
	touch "$stamp"
fi

# The versions to try, newest first (apt-cache madison sorts them so).
if [[ -n ${WGHYBRID_KMOD_VERSION:-} ]]; then
	candidates=$WGHYBRID_KMOD_VERSION
else
	candidates=$(apt-cache "${APT[@]}" madison "linux-source-$LINE" | awk '{print $3}' | awk '!seen[$0]++')
fi
[[ -n $candidates ]] || kdie "$TARGET: the archive serves no linux-source-$LINE"
# The standard flavour's headers package of each version: linux-headers-REL-amd64.
declare -A headers_of=()
while read -r pkg ver _; do
	[[ -n ${headers_of[$ver]:-} ]] || headers_of[$ver]=$pkg
done < <(apt-cache "${APT[@]}" madison $(apt-cache "${APT[@]}" pkgnames linux-headers- |
	grep -E '^linux-headers-[0-9][^ ]*-amd64$' | grep -vE -- '-(rt|cloud)-amd64$') | tr -d '|')
served() { apt-cache "${APT[@]}" show "$1=$2" >/dev/null 2>&1; }
V="" REL="" why=()
for v in $candidates; do
	hdr=${headers_of[$v]:-}
	if [[ -z $hdr ]]; then why+=("$v: no linux-headers-*-amd64 at $v"); continue; fi
	rel=${hdr#linux-headers-}
	deps=$(apt-cache "${APT[@]}" depends "$hdr=$v" |
		awk '$1 ~ /Depends:$/ && $2 ~ /^linux-(headers|kbuild)-/ {print $2}' | sort -u | paste -sd' ')
	need=("linux-source-$LINE" "linux-image-$rel" "$hdr" $deps)
	missing=()
	for p in "${need[@]}"; do served "$p" "$v" || missing+=("$p"); done
	if ((${#missing[@]})); then why+=("$v: not served at $v: ${missing[*]}"); continue; fi
	V=$v REL=$rel HEADERS="$hdr $deps"
	break
done
if [[ -z $V ]]; then
	kmsg "$TARGET: no version of linux-source-$LINE has every package it needs:"
	printf '    %s\n' "${why[@]}" >&2
	exit 1
fi
((${#why[@]} == 0)) || kmsg "$TARGET: skipped newer: ${why[*]}"
last=$(sed -n 's/^V=//p' "$KMOD/targets/$TARGET.passing" 2>/dev/null || true)
if [[ $last == "$V" ]]; then
	kmsg "$TARGET: kernel $V ($REL), the version last seen passing"
else
	kmsg "$TARGET: kernel $V ($REL); NOTICE: last seen passing was ${last:-none} (kmod/targets/$TARGET.passing)"
fi

top=$CACHE/$SUITE/$V
debs=$CACHE/debs/$SUITE/$V
mkdir -p "$debs" "$top"
missing=()
for p in "linux-source-$LINE" "linux-image-$REL" $HEADERS; do
	compgen -G "$debs/${p}_*.deb" >/dev/null || missing+=("$p=$V")
done
if ((${#missing[@]})); then
	kmsg "apt-get download ${missing[*]}"
	(cd "$debs" && apt-get "${APT[@]}" download -q "${missing[@]}" >&2) ||
		kdie "$TARGET: apt-get download failed"
fi
cat >"$top/target.env" <<-ENV
	SUITE=$SUITE
	LINE=$LINE
	V=$V
	REL=$REL
	HEADERS="$HEADERS"
	DEBS=$debs
ENV

if [[ ! -e "$top/image/.done" ]]; then
	rm -rf "$top/image"
	dpkg -x "$debs/linux-image-${REL}_"*.deb "$top/image"
	# trixie's packages ship their modules under /usr/lib (merged /usr).
	[[ -d $top/image/lib || ! -d $top/image/usr/lib ]] || ln -s usr/lib "$top/image/lib"
	depmod -b "$top/image" "$REL"
	touch "$top/image/.done"
fi
if [[ ! -e "$top/src/.done-2" ]]; then
	rm -rf "$top/src"
	mkdir -p "$top/src"
	dpkg -x "$debs/linux-source-${LINE}_"*.deb "$top/src/deb"
	kmsg "extracting wireguard from linux-source-$LINE.tar.xz"
	tar -xJf "$top/src/deb/usr/src/linux-source-$LINE.tar.xz" -C "$top/src" \
		"linux-source-$LINE/drivers/net/wireguard" \
		"linux-source-$LINE/tools/testing/selftests/wireguard" \
		"linux-source-$LINE/include/uapi/linux/wireguard.h" \
		"linux-source-$LINE/Makefile"
	rm -rf "$top/src/deb"
	touch "$top/src/.done-2"
fi
echo "$top"
