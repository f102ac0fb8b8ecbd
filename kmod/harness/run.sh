#!/bin/bash
# Boot a target's Debian kernel with the patched wireguard.ko in qemu and run named
# scenarios.
#
#   WGHYBRID_KMOD_TARGET=trixie kmod/harness/run.sh [SCENARIO...]
#                                  (default: every kmod/harness/scenarios/*.sh but the
#                                  by-hand measurements, marked "# by-hand:")
#
# Prints the kernel resolved for the target and each stage's time, one line per
# scenario, "PASS name (N s)" or "FAIL name (N s)" followed by an excerpt of that
# scenario's guest log, and a last line "N passed, N failed"; exits 1 if any failed
# (or the build or the boot did). When every scenario of the target passed, the
# version is recorded in kmod/targets/TARGET.passing. Needs root and the apt packages
# qemu-system-x86 debootstrap busybox-static cpio kmod xz-utils.
# Environment:
#   WGHYBRID_KMOD_TARGET   trixie (default) or bookworm (kmod/targets/)
#   WGHYBRID_KMOD_CACHE    cache of downloads and the target trees (/var/cache/wghybrid-kmod)
#   WGHYBRID_KMOD_RESULTS  where the guest's logs go (default a new folder per run
#                          under kmod/build/TARGET/results/, TARGET-debug/ for the debug
#                          kernel); runs may go side by side
#   WGHYBRID_KMOD_TIMEOUT  seconds for the whole guest run (default 4200)
#   WGH_SCENARIO_TIMEOUT   seconds each scenario has in the guest (default 900); one that
#                          overruns gets its processes and kernel stacks in its log
#   WGHYBRID_KMOD_SMP      guest CPUs (default 2)
#   WGHYBRID_KMOD_APPEND   more kernel command line for the guest (e.g. ignore_loglevel)
#   WGHYBRID_KMOD_ICOUNT   N (0-9): instruction-counted time (-icount shift=N,sleep=off,
#                          one TCG thread): each guest instruction takes 2^N ns of guest
#                          time and idle time is skipped, so the guest's clocks and CPU
#                          times count its instructions, whatever else the host runs
#                          (bench/kmod_ab.py --icount); slower, not for the scenarios
#   WGHYBRID_KMOD_KERNEL   debian (default): the target's kernel; debug: the same source
#                          built with KASAN, lockdep, kmemleak... (kmod/debugkernel.sh),
#                          with longer limits (guest run 14400 s, each scenario 3600 s,
#                          3 GiB) and kmemleak's findings after each scenario (NAME.kmemleak)
#                          failing it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kmod=$(dirname "$here")
. "$kmod/lib.sh"
load_target

say() { echo "[kmod/harness] $*" >&2; }
fail_all() { # every requested scenario fails with the same reason
	local why=$1 s
	for s in "${scenarios[@]}"; do echo "FAIL $s"; echo "    $why"; done
	echo "0 passed, ${#scenarios[@]} failed"
	exit 1
}

if (($#)); then
	scenarios=("$@")
else
	scenarios=()
	# Every scenario but the by-hand measurements (a "# by-hand:" line, e.g. ab_stock).
	for f in $(grep -L '^# by-hand:' "$here"/scenarios/*.sh); do scenarios+=("$(basename "$f" .sh)"); done
fi
for s in "${scenarios[@]}"; do
	[[ -e "$here/scenarios/$s.sh" ]] || { echo "no scenario $s" >&2; exit 2; }
done

t0=$SECONDS
top=$("$kmod/fetch.sh" | tail -1) || fail_all "$TARGET: no kernel could be fetched (kmod/fetch.sh)"
# shellcheck source=/dev/null
. "$top/target.env"
t_fetch=$((SECONDS - t0))
rootfs=$("$kmod/rootfs.sh" "$top" | tail -1) || fail_all "$TARGET: the $SUITE tree could not be built (kmod/rootfs.sh)"
t_rootfs=$((SECONDS - t0 - t_fetch))
img="$top/image" mem=1536 limit=4200
if [[ $KERNEL == debug ]]; then
	# The debug kernel replaces Debian's: its image and module tree, its release.
	# KASAN and lockdep under TCG are several times slower, and KASAN's shadow and
	# SLUB's debugging take memory: the limits are raised for this kernel only.
	t=$SECONDS
	kd=$(WGHYBRID_KMOD_TOP=$top "$kmod/debugkernel.sh" | tail -1) ||
		fail_all "$TARGET: the debug kernel did not build (kmod/debugkernel.sh)"
	img=$kd/image REL=$(cat "$kd/release") mem=3072 limit=14400
	# ACPI's interpreter under KASAN and TCG runs PCI0._PRT into its loop timeout
	# (30 s per virtio device, then "PCI INT A: no GSI" and no 9p): the BIOS's PIR
	# table routes the interrupts instead.
	debug_append=pci=noacpi
	export WGH_SCENARIO_TIMEOUT=${WGH_SCENARIO_TIMEOUT:-3600}
	say "$TARGET: debug kernel $REL ($kd) in $((SECONDS - t)) s"
	t_rootfs=$((t_rootfs + SECONDS - t))
fi
ko=$(WGHYBRID_KMOD_TOP=$top "$kmod/build.sh" | tail -1) ||
	fail_all "$TARGET: the module did not build (kmod/build.sh)"
t_build=$((SECONDS - t0 - t_fetch - t_rootfs))
say "$TARGET: kernel $V ($REL); fetch ${t_fetch} s, $SUITE tree ${t_rootfs} s, module ${t_build} s"

# Modules the guest needs, with their dependencies, go to a per-run share that the
# guest mounts over /lib/modules (so the cached rootfs is never written and runs can
# run side by side). The stock wireguard.ko goes outside /lib/modules, so that only
# the patched one can be autoloaded.
mods_stage1=(virtio_pci 9pnet_virtio 9p overlay)
mods_guest=(wireguard veth dummy iptable_filter iptable_nat iptable_mangle xt_nat xt_mark
	xt_length ip6table_filter xt_conntrack)
closure() { # the modules to insmod, in order, for each module named
	local m
	for m in "$@"; do
		modprobe -d "$img" -S "$REL" --show-depends "$m" | awk '$1 == "insmod" {print $2}' |
			sed "s#^$img/lib/modules/$REL/##"
	done
}
work=$(mktemp -d /tmp/wghybrid-kmod.XXXXXX)
trap 'rm -rf "$work"' EXIT
run="$work/run"
mdir="$run/lib/modules/$REL"
mkdir -p "$mdir/updates" "$run/opt"
closure "${mods_stage1[@]}" "${mods_guest[@]}" | sort -u |
	while read -r rel; do
		[[ $rel == */wireguard/wireguard.ko* ]] && continue
		mkdir -p "$mdir/$(dirname "$rel")"
		cp "$img/lib/modules/$REL/$rel" "$mdir/$rel"
	done
cp "$img/lib/modules/$REL"/modules.{order,builtin,builtin.modinfo} "$mdir/"
cp "$ko" "$mdir/updates/wireguard.ko"
depmod -b "$run" "$REL"
stock=$(compgen -G "$img/lib/modules/$REL/kernel/drivers/net/wireguard/wireguard.ko*")
unxz() { case "$1" in *.xz) xz -dc "$1" ;; *) cat "$1" ;; esac; }
unxz "$stock" >"$run/opt/stock-wireguard.ko"
cp "$top/src/linux-source-$LINE/tools/testing/selftests/wireguard/netns.sh" "$run/opt/netns.sh"
echo "$V" >"$run/opt/kernel-version"
# A scenario that loads /opt/wghybrid/fault-NAME.ko gets the module with kmod/harness/faults/NAME.patch
# applied after the series (a broken kernel, for a test of the daemon against it).
faults=$(cd "$here/scenarios" && for s in "${scenarios[@]}"; do
	grep -o '/opt/wghybrid/fault-[a-z0-9_]*\.ko' "$s.sh" || true; done | sed 's#^/opt/wghybrid/fault-##; s#\.ko$##' | sort -u)
for f in $faults; do
	fko=$(WGHYBRID_KMOD_TOP=$top WGHYBRID_KMOD_FAULT=$f "$kmod/build.sh" | tail -1) ||
		fail_all "$TARGET: the module with the fault $f did not build (kmod/build.sh)"
	cp "$fko" "$run/opt/fault-$f.ko"
done

# Stage 1: a busybox initramfs that loads virtio + 9p, mounts the shares and
# switch_roots into the guest's PID 1 (kmod/harness/guest/init.sh, from the repo).
mkdir -p "$work/initramfs"/{bin,dev,proc,sys,newroot,m}
cp /bin/busybox "$work/initramfs/bin/busybox"
ldd /bin/busybox >/dev/null 2>&1 && fail_all "/bin/busybox is not static (apt-get install busybox-static)"
n=0
closure "${mods_stage1[@]}" | awk '!seen[$0]++' | while read -r rel; do
	n=$((n + 1))
	# busybox's insmod takes no compressed module (trixie ships .ko.xz)
	unxz "$img/lib/modules/$REL/$rel" >"$work/initramfs/m/$(printf %02d "$n")-$(basename "${rel%.xz}")"
done
cp "$here/guest/stage1.sh" "$work/initramfs/init"
chmod +x "$work/initramfs/init"
(cd "$work/initramfs" && find . | cpio -o -H newc --quiet) >"$work/stage1.cpio"

# A debug kernel's runs go beside its module (build.sh: build/TARGET-debug/).
out_dir=$kmod/build/$TARGET
[[ $KERNEL == debug ]] && out_dir+=-debug
results=${WGHYBRID_KMOD_RESULTS:-$out_dir/results/$(date +%Y%m%d-%H%M%S)-$$}
rm -rf "$results"
mkdir -p "$results"
say "guest logs in $results"
console="$results/console.log"
smp=${WGHYBRID_KMOD_SMP:-2}
# Variables named WGH_* are passed to the scenarios (e.g. WGH_NETNS_MODULE=stock).
guest_env=$(env | grep -E '^WGH_[A-Z0-9_]+=[A-Za-z0-9_.:/-]*$' | paste -sd, - || true)
accel=(-accel tcg,thread=multi)
if [[ -n ${WGHYBRID_KMOD_ICOUNT:-} ]]; then
	[[ $WGHYBRID_KMOD_ICOUNT =~ ^[0-9]$ ]] || fail_all "WGHYBRID_KMOD_ICOUNT must be 0-9 (2^N ns per instruction)"
	# icount needs the single-threaded TCG (one host thread runs every vCPU in turn).
	accel=(-accel tcg,thread=single -icount "shift=$WGHYBRID_KMOD_ICOUNT,sleep=off")
fi
# boot TIMEOUT SCENARIO...: one guest run of these scenarios, its console in $console.
boot() {
	local t=$1
	shift
	say "booting $REL under qemu (TCG${WGHYBRID_KMOD_ICOUNT:+, icount shift=$WGHYBRID_KMOD_ICOUNT}, -smp $smp): $*"
	timeout --foreground -k 10 "$t" qemu-system-x86_64 \
		"${accel[@]}" -cpu max -smp "$smp" -m "$mem" \
		-display none -nodefaults -no-reboot -monitor none -serial stdio \
		-kernel "$img/boot/vmlinuz-$REL" -initrd "$work/stage1.cpio" \
		-append "console=ttyS0 wgh.target=$TARGET panic=-1 oops=panic softlockup_panic=1 softlockup_all_cpu_backtrace=1 quiet loglevel=5 mitigations=off log_buf_len=16M wgh.repo=$(dirname "$kmod") wgh.scenarios=$(IFS=,; echo "$*")${guest_env:+ wgh.env=$guest_env} ${debug_append:-} ${WGHYBRID_KMOD_APPEND:-}" \
		-virtfs local,path="$rootfs",mount_tag=root,security_model=passthrough,id=root \
		-virtfs local,path="$kmod",mount_tag=kmod,security_model=none,readonly=on,id=kmod \
		-virtfs local,path="$results",mount_tag=results,security_model=none,id=results \
		-virtfs local,path="$run",mount_tag=run,security_model=none,readonly=on,id=run \
		-virtfs local,path="$(dirname "$kmod")",mount_tag=repo,security_model=none,readonly=on,id=repo \
		-virtfs local,path="$top/src/linux-source-$LINE",mount_tag=src,security_model=none,readonly=on,id=src \
		</dev/null >"$console" 2>&1 || true
}
t1=$SECONDS
boot "${WGHYBRID_KMOD_TIMEOUT:-$limit}" "${scenarios[@]}"
t_guest=$((SECONDS - t1))
say "guest ran ${t_guest} s"

# A guest that died of the emulator, not of the module (harness/emulator_fault.py: a
# CPU looping on an int3 its memory no longer holds, or an oops inside the kernel's own
# text patching with no frame of the module; kmod/README.md, "The crash in text
# patching"), boots once more for the scenarios it never finished, the one it died in
# first. Only once: a second death is reported as it is. The first boot's console and
# the log of the scenario it died in are kept (console.1.log, NAME.1.log), and each
# scenario of the second boot says so on its line. WGHYBRID_KMOD_NO_RETRY=1: no retry.
declare -A reboot_note=()
unfinished_1=()
for s in "${scenarios[@]}"; do [[ -e "$results/$s.status" ]] || unfinished_1+=("$s"); done
if ((${#unfinished_1[@]})) && [[ ${WGHYBRID_KMOD_NO_RETRY:-0} != 1 ]] &&
	fault=$(python3 "$here/emulator_fault.py" --fault "$console"); then
	mv "$console" "$results/console.1.log"
	[[ -e "$results/${unfinished_1[0]}.log" ]] && mv "$results/${unfinished_1[0]}.log" "$results/${unfinished_1[0]}.1.log"
	say "the guest died in ${unfinished_1[0]} of the emulator, not of the module: $fault"
	say "booting a second time for the scenarios it did not finish (first console: $results/console.1.log)"
	for s in "${unfinished_1[@]}"; do reboot_note[$s]="second boot: the first died of the emulator in ${unfinished_1[0]}, console.1.log"; done
	left=$(( ${WGHYBRID_KMOD_TIMEOUT:-$limit} - t_guest ))
	((left >= 600)) || left=600
	t1=$SECONDS
	boot "$left" "${unfinished_1[@]}"
	say "second guest ran $((SECONDS - t1)) s"
	t_guest=$((t_guest + SECONDS - t1))
fi

# What the console says of a guest that died or wedged: from the kernel's first
# report (soft lockup, RCU stall, BUG, warning, panic) on, with the backtraces that
# softlockup_all_cpu_backtrace adds; else its last lines.
console_excerpt() {
	local first
	first=$(grep -n -m1 -E 'soft lockup|rcu: INFO|BUG:|Oops|Kernel panic' "$console" | cut -d: -f1)
	[[ -n $first ]] || first=$(grep -n -m1 'WARNING:' "$console" | cut -d: -f1)
	if [[ -n $first ]]; then
		tail -n "+$first" "$console" | head -n 120
	else
		tail -n 25 "$console"
	fi
}

passed=0 failed=0 unfinished=0
for s in "${scenarios[@]}"; do
	status=$(cat "$results/$s.status" 2>/dev/null || echo missing)
	took=$(cat "$results"/console*.log | sed -n "s/^guest: $s: .* in \([0-9]*\) s\r*$/\1 s/p" | tail -1)
	[[ -n ${reboot_note[$s]:-} ]] && took+="${took:+; }${reboot_note[$s]}"
	[[ -n $took ]] && took=" ($took)"
	# The debug kernel's kmemleak, scanned once the scenario and its module are gone
	# (guest/init.sh): an unreferenced object is a leak of this scenario.
	leaks=""
	if [[ -s "$results/$s.kmemleak" ]]; then
		leaks="kmemleak: $(grep -c '^unreferenced object' "$results/$s.kmemleak") unreferenced objects"
		[[ $status == PASS ]] && status="FAIL ($leaks)"
	fi
	if [[ $status == PASS ]]; then
		echo "PASS $s$took"
		passed=$((passed + 1))
		continue
	fi
	echo "FAIL $s$took"
	failed=$((failed + 1))
	[[ -e "$results/$s.log" ]] && tail -n 25 "$results/$s.log" | sed 's/^/    /'
	[[ -n $leaks ]] && { echo "    $leaks:"; head -n 60 "$results/$s.kmemleak" | sed 's/^/    /'; }
	if grep -q -- "^--- $s did not finish in" "$results/$s.log" 2>/dev/null; then
		# It overran its limit: what its processes were waiting for (kernel threads
		# left out; the whole dump is in the log).
		echo "    (what it was waiting for:)"
		sed -n "/^--- $s did not finish in/,/^--- dmesg during/p" "$results/$s.log" |
			awk '$0 !~ /^ *[0-9]+ +[0-9]+ .* \[[^]]*\]$/' | head -n 100 | sed 's/^/    /'
	fi
	if [[ $status == missing ]]; then
		# The first scenario that did not finish gets the console (it is where the
		# guest died or wedged); the ones after it were never reached.
		if ((unfinished++ == 0)); then
			echo "    (the scenario did not finish; the console:)"
			console_excerpt | sed 's/^/    /'
			python3 "$here/emulator_fault.py" "$console" | sed 's/^/    /'
		else
			echo "    (not reached: the guest stopped in an earlier scenario)"
		fi
	fi
done
[[ -e "$results/skipped" ]] && sed 's/^/SKIP /' "$results/skipped"
say "$TARGET: stages: fetch ${t_fetch} s, tree ${t_rootfs} s, module ${t_build} s, guest ${t_guest} s; total $((SECONDS - t0)) s"
# A full pass of the target's CI scenarios on its own kernel records that kernel as
# last seen passing.
if ((failed == 0)) && [[ $KERNEL == debian ]]; then
	want=$CI_SCENARIOS
	[[ $want == all ]] && want=$(cd "$here/scenarios" && grep -L '^# by-hand:' -- *.sh | sed 's/\.sh$//')
	if [[ -z $(comm -23 <(tr ' ' '\n' <<<"$want" | sort -u | grep .) <(printf '%s\n' "${scenarios[@]}" | sort -u)) ]]; then
		printf '%s\nV=%s\n' "$(grep '^#' "$kmod/targets/$TARGET.passing")" "$V" >"$kmod/targets/$TARGET.passing.new" &&
			mv "$kmod/targets/$TARGET.passing.new" "$kmod/targets/$TARGET.passing" ||
			say "could not record $V in kmod/targets/$TARGET.passing"
	fi
fi
echo "$passed passed, $failed failed"
((failed == 0))
