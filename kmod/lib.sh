# Sourced by kmod/*.sh and the harness: the target, the cache, a private apt.
#
# A target is a Debian release and its kernel line (kmod/targets/NAME.conf):
# trixie / 6.12 (the default) and bookworm / 6.1. WGHYBRID_KMOD_TARGET picks one.
# Each target has its own apt configuration in the cache (sources list, lists and
# archives), passed with -o Dir::..., so that a Debian 12 or a Debian 13 host
# fetches either target's packages without touching the host's own apt.
KMOD=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${WGHYBRID_KMOD_CACHE:-/var/cache/wghybrid-kmod}
TARGET=${WGHYBRID_KMOD_TARGET:-trixie}
# The kernel the module is built for and the guest boots: the target's own (debian)
# or the same source with the debug options (debug: kmod/debugkernel.sh).
KERNEL=${WGHYBRID_KMOD_KERNEL:-debian}
[[ $KERNEL == debian || $KERNEL == debug ]] ||
	{ echo "WGHYBRID_KMOD_KERNEL is debian or debug, not '$KERNEL'" >&2; exit 2; }

kmsg() { echo "[kmod/${0##*/}] $*" >&2; }
kdie() { kmsg "$*"; exit 1; }

# load_target: SUITE, LINE, CC, CI_SCENARIOS from kmod/targets/$TARGET.conf.
load_target() {
	local conf=$KMOD/targets/$TARGET.conf
	if [[ ! -e $conf ]]; then
		kmsg "no target '$TARGET'; the targets are: $(cd "$KMOD/targets" && ls -- *.conf | sed 's/\.conf$//' | paste -sd' ')"
		exit 2
	fi
	# shellcheck source=targets/trixie.conf
	. "$conf"
}

# The Debian mirror and security mirror this host's apt uses (a machine behind a
# local mirror keeps using it), else Debian's own.
host_mirrors() {
	local uris
	uris=$({ cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources 2>/dev/null || true; } |
		sed -E 's/\[[^]]*\]//' |
		awk '$1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
		     $1 == "deb" { print $2 }' | sed 's#/*$##')
	MIRROR=$(grep -m1 -E '^https?://.*/debian$' <<<"$uris" || echo http://deb.debian.org/debian)
	SECURITY=$(grep -m1 -E '^https?://.*/debian-security$' <<<"$uris" ||
		echo http://deb.debian.org/debian-security)
}

# apt_target: APT (the -o options of this target's private apt) and APTDIR; the
# configuration is written once. The host's status file and preferences are kept
# out: nothing installed on the host changes what is resolved.
apt_target() {
	host_mirrors
	APTDIR=$CACHE/apt/$SUITE
	mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial"
	local key=/usr/share/keyrings/debian-archive-keyring.gpg
	cat >"$APTDIR/sources.list.new" <<-LIST
		deb [signed-by=$key] $MIRROR $SUITE main
		deb [signed-by=$key] $MIRROR $SUITE-updates main
		deb [signed-by=$key] $SECURITY $SUITE-security main
	LIST
	mv "$APTDIR/sources.list.new" "$APTDIR/sources.list"
	APT=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache"
		-o Dir::State::status=/dev/null -o Dir::Etc::Preferences=/dev/null
		-o Dir::Etc::PreferencesParts=/dev/null -o APT::Sandbox::User=root)
}

# in_chroot DIR CMD...: run CMD in the target's tree DIR with /proc, /dev and the
# folders given as WGH_BIND="host:inside ..." bound in a private mount namespace
# (nothing is left mounted, and other users of DIR see none of it), with a clean
# environment.
in_chroot() {
	local dir=$1
	shift
	unshare -m --propagation private bash -c '
		set -e
		dir=$1; shift
		mount -t proc proc "$dir/proc"
		mount --rbind /dev "$dir/dev"
		for b in $WGH_BIND; do mkdir -p "$dir/${b#*:}"; mount --bind "${b%%:*}" "$dir/${b#*:}"; done
		exec chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
			DEBIAN_FRONTEND=noninteractive "$@"' in_chroot "$dir" "$@"
}
