# Where functions ran, from kprobe events (sourced after lib.sh). Debian's kernels
# have CONFIG_KPROBE_EVENTS; each hit lands in the trace buffer of the CPU it ran on,
# so a line of /sys/kernel/tracing/trace names that CPU ("[001]").
#
#   kp_init                     tracefs mounted, 8 MiB of buffer per CPU, no event
#   kp_add EVENT MOD FUNC [ARGS]  a probe wgh/EVENT on MOD:FUNC; FUNC must be a symbol
#                               of MOD (not inlined), or the count could not fail
#   kp_start / kp_stop          empty the buffer and record / stop recording
#   kp_cpus EVENT               hits per CPU since kp_start: "0=N 1=M" (CPUs with hits)
#   kp_lost                     events the buffer overwrote since kp_start (must be 0)
T=/sys/kernel/tracing
KP_EVENTS=()

kp_init() {
	mountpoint -q $T || mount -t tracefs tracefs $T || die "cannot mount tracefs at $T"
	echo 0 >$T/tracing_on
	echo 8192 >$T/buffer_size_kb
	echo >$T/trace
	echo 1 >$T/tracing_on
}

kp_add() {
	local ev=$1 mod=$2 fn=$3
	shift 3
	grep -qE "\s$fn\s+\[$mod\]" /proc/kallsyms || die "$fn is not a symbol of $mod (inlined?)"
	echo "p:wgh/$ev $mod:$fn $*" >>$T/kprobe_events || die "no kprobe event on $mod:$fn"
	KP_EVENTS+=("$ev")
}

kp_start() {
	echo 0 >$T/events/wgh/enable
	echo >$T/trace
	echo 1 >$T/events/wgh/enable || die "the kprobe events do not enable"
}

kp_stop() { echo 0 >$T/events/wgh/enable; }

kp_cpus() {
	awk -v ev="$1:" '$0 !~ /^#/ {
		for (i = 1; i <= NF; i++) if ($i ~ /^\[[0-9]+\]$/) { cpu = substr($i, 2, length($i) - 2) + 0; break }
		for (j = i; j <= NF; j++) if ($j == ev) { n[cpu]++; break }
	} END { for (c in n) printf "%s=%d ", c, n[c] }' $T/trace | xargs -n1 | sort -n | xargs
}

kp_lost() {
	cat $T/per_cpu/cpu*/stats | awk '$1 == "overrun:" { s += $2 } END { print s + 0 }'
}

kp_remove() {
	local ev
	echo 0 >$T/events/wgh/enable 2>/dev/null || true
	for ev in "${KP_EVENTS[@]}"; do echo "-:wgh/$ev" >>$T/kprobe_events; done
	KP_EVENTS=()
}

# hits_on EVENT CPU: hits of EVENT on CPU since kp_start; hits_total EVENT: on all.
hits_on() { kp_cpus "$1" | tr ' ' '\n' | awk -F= -v c="$2" '$1 == c { print $2 }' | grep . || echo 0; }
hits_total() { kp_cpus "$1" | tr ' ' '\n' | awk -F= '{ s += $2 } END { print s + 0 }'; }
