#!/bin/bash
# DKMS as on a gateway: kmod/dkms-install.sh against the booted kernel, from that
# kernel's own linux-source (the guest has no network: the host shares what it
# unpacked from the linux-source .deb of the kernel's version, as --source-dir;
# unpacking the .deb itself takes over 3 minutes under TCG, and that path is tested on
# the host, tests/kernel/test_dkms_install.py), with the headers installed in the
# target's tree as apt installs them. Then: DKMS lists the module as installed for this kernel, the
# loaded wireguard is the DKMS one (updates/dkms/) with the hybrid's parameters, and
# traffic passes through inline peers with the counters right (traffic.sh inline). It
# also checks that DKMS refuses to build this tree for any other kernel release. The
# prebuilt module of the other scenarios is put back after.
. /mnt/kmod/harness/guest/lib.sh
rel=$(uname -r)
kver=$(uname -v | sed -n 's/.* Debian \([0-9][^ ]*\) .*/\1/p')
line=$(cut -d. -f1,2 <<<"$kver")
mods=/lib/modules/$rel
step "kernel $rel, Debian $kver; headers: $(readlink -f "$mods/build")"
[[ -e $mods/build/Makefile ]] || die "no headers at $mods/build"
prebuilt=$mods/updates/wireguard.ko
cp "$prebuilt" /tmp/prebuilt-wireguard.ko
restore() {
	modprobe -r wireguard 2>/dev/null || true
	dkms remove -m wireguard-wghybrid --all >/dev/null 2>&1 || true
	cp /tmp/prebuilt-wireguard.ko "$prebuilt"
	depmod
}
trap restore EXIT
rm "$prebuilt"
depmod

repo=$(sed -n 's/.*wgh\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
step "$repo/kmod/dkms-install.sh --source-dir /mnt/src (linux-source-$line of $kver)"
t0=$SECONDS
bash "$repo/kmod/dkms-install.sh" --source-dir /mnt/src 2>&1 | tee /tmp/dkms-install.log
echo "dkms-install.sh took $((SECONDS - t0)) s"
dkms status | tee /tmp/dkms-status
grep "^wireguard-wghybrid/" /tmp/dkms-status | grep -qF ", $rel, x86_64: installed" ||
	die "DKMS does not list the module as installed for $rel"
path=$(modinfo -n wireguard)
[[ $path == "$mods/updates/dkms/wireguard.ko"* ]] || die "modprobe would load $path, not DKMS's module"
modinfo -F vermagic wireguard | grep -q "^$rel " || die "vermagic is not $rel"

step "DKMS builds this tree for $rel only"
ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' /usr/src/wireguard-wghybrid-*/dkms.conf)
fake=${rel/-amd64/-1-amd64}
mkdir -p "/lib/modules/$fake"
ln -sfn "$(readlink -f "$mods/build")" "/lib/modules/$fake/build"
if dkms build -m wireguard-wghybrid -v "$ver" -k "$fake" >/tmp/dkms-other.log 2>&1 &&
	! grep -qi exclusive /tmp/dkms-other.log; then
	cat /tmp/dkms-other.log
	die "DKMS built the $kver tree for kernel $fake"
fi
echo "kernel $fake: $(grep -i -m1 exclusive /tmp/dkms-other.log || tail -1 /tmp/dkms-other.log)"
rm -rf "/lib/modules/$fake"

step "traffic through inline peers on DKMS's module"
. /mnt/kmod/harness/guest/traffic.sh inline
