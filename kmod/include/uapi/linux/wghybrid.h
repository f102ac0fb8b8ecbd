/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * wghybrid: per-peer processing mode, counters and core control for WireGuard.
 *
 * This is a generic netlink family of its own, registered by the patched
 * wireguard.ko next to WireGuard's "wireguard" family (which is unchanged, so
 * `ip link add type wireguard` and `wg` keep working).
 *
 * Documentation
 * =============
 *
 * The family is WGH_GENL_NAME ("wghybrid"), version WGH_GENL_VERSION (1). Every
 * command names one WireGuard device by exactly one of WGH_A_IFINDEX or
 * WGH_A_IFNAME (both or neither: -EBADR; no such device: -ENODEV; a device that
 * is not WireGuard: -EOPNOTSUPP), as WireGuard's own family does. Attributes are
 * validated by policy tables, strictly: an unknown attribute, an integer of
 * the wrong size, a string without its NUL and an output-only attribute in a
 * request are all -EINVAL; a value outside its range, a public key that is not
 * exactly 32 bytes and a binary attribute longer than its maximum are -ERANGE
 * (the kernel checks lengths of binary attributes as ranges). An extended ACK message says which attribute was wrong.
 *
 * The same interface in the kernel's YNL format is kmod/spec/wghybrid.yaml
 * (genetlink-legacy, as upstream keeps its specs in Documentation/netlink/specs/):
 * every attribute with the checks of the policy table, each command's request
 * and reply, and struct wgh_peer_record as a YNL struct, with the counters'
 * meanings. tests/unit/test_ynl_spec.py holds this header, the spec, the policy
 * table and ops of both series and the daemon's reader to one another, and
 * tests/kernel/test_ynl.py the spec to the kernel's YNL schema and tools: change
 * them together. This header is not generated from the spec: linux 6.12's
 * ynl-gen-c makes the same enums, but not the struct, the constants' names
 * (it prefixes the family's name) or this documentation.
 *
 * Permissions: commands that change state (WGH_CMD_SET_DEVICE, WGH_CMD_SET_PEER)
 * need CAP_NET_ADMIN in the initial user namespace (GENL_ADMIN_PERM), because
 * they place work on the host's CPUs; the read commands (WGH_CMD_GET_DEVICE,
 * WGH_CMD_GET_STATS) need CAP_NET_ADMIN in the network namespace's user
 * namespace (GENL_UNS_ADMIN_PERM), as reading WireGuard's configuration does.
 * Without them: -EPERM.
 *
 * Processing modes (WGH_MODE_*), per peer:
 *
 *    WGH_MODE_VANILLA: upstream WireGuard. Encryption and decryption are spread
 *                      over the device's crypt workers (one per CPU of the
 *                      device's crypt cpumask, round robin); one TX worker per
 *                      peer, on the peer's core, transmits in order; NAPI is
 *                      scheduled by whichever decryption worker finishes.
 *    WGH_MODE_INLINE:  the whole packet lifecycle in one context. Encryption
 *                      and transmission run in the sending context (the
 *                      caller of ndo_start_xmit); decryption runs in the
 *                      softirq that received the UDP datagram, and the peer's
 *                      NAPI is scheduled on that same core. No crypt worker, no
 *                      per-device queue and (in the steady state) no TX worker.
 *
 *    A peer can be switched at any time, under traffic. No packet is dropped
 *    by the switch and order is kept in both directions: both modes pass every
 *    packet through the peer's own ordered queues (which the inline mode keeps
 *    as a pass-through), so packets handed to the old path leave, in order,
 *    before any packet handed to the new one. A switch to inline takes effect
 *    for the next packet; when packets of the vanilla path are still being
 *    encrypted, the first inline packets wait behind them in the peer's queue.
 *    One bound remains, as for any UDP socket: inline transmits on the CPU of
 *    the sending context, so a tunnel sent into from several CPUs leaves from
 *    several CPUs, and a multi-queue link (or veth, without RPS) can reorder
 *    those outer packets; WireGuard's replay window accepts a message up to
 *    8128 messages behind the newest one received (COUNTER_WINDOW_SIZE in
 *    messages.h: 8192 bits of bitmap less the BITS_PER_LONG it keeps spare;
 *    the series checks the number at build time), and drops one further
 *    behind as a replay. Vanilla transmits from the one TX worker and so does
 *    not reorder.
 *
 *    New peers start in the mode given by the module parameter
 *    `default_mode=vanilla|inline` (default vanilla; writable at run time in
 *    /sys/module/wireguard/parameters/default_mode, affects peers created
 *    after the write).
 *
 * Core control:
 *
 *    The device's crypt cpumask: the CPUs whose crypt workers encrypt and
 *    decrypt the packets of vanilla peers, and whose handshake workers
 *    process the handshake messages received (round robin, as upstream over
 *    every CPU). Upstream uses every online CPU; so does an empty (all-zero)
 *    mask. If no CPU of the mask is online, every online CPU is used. Not
 *    covered: handshake messages are created and sent from WireGuard's
 *    unbound workqueue, which the scheduler places, as upstream.
 *
 *    A peer's core: the CPU of its serial TX work (the vanilla TX worker, and
 *    for inline peers the rare hand-off described in the commit messages).
 *    -1 is upstream's choice (internal id modulo the CPUs) made among the
 *    online CPUs of the crypt cpumask (every online CPU if it has none). A
 *    core that goes offline falls back to that choice until it is online again.
 *
 * Bit masks of CPUs (WGH_A_DEVICE_CRYPT_CPUMASK) are byte arrays: CPU n is bit
 * (n % 8) of byte (n / 8), so that a mask read as a little-endian integer has
 * bit n set for CPU n (Python: int.from_bytes(b, "little")). Replies carry
 * DIV_ROUND_UP(nr_cpu_ids, 8) bytes. Requests may be shorter (missing bytes
 * are zero) and at most WGH_CPUMASK_MAX_BYTES long (longer: -ERANGE); a bit
 * set for a CPU number >= nr_cpu_ids is -EINVAL.
 *
 * Commands
 * --------
 *
 * WGH_CMD_GET_DEVICE (doit)
 *    Request:  WGH_A_IFINDEX or WGH_A_IFNAME.
 *    Reply:    WGH_A_IFINDEX: NLA_U32
 *              WGH_A_IFNAME: NLA_NUL_STRING
 *              WGH_A_DEVICE_CRYPT_CPUMASK: NLA_BINARY, the CPUs set (an
 *                                          unrestricted device reports every
 *                                          possible CPU)
 *              WGH_A_DEVICE_NUM_PEERS: NLA_U32
 *              WGH_A_DEVICE_DEFAULT_MODE: NLA_U8, the module parameter now
 *
 * WGH_CMD_SET_DEVICE (doit, GENL_ADMIN_PERM)
 *    Request:  WGH_A_IFINDEX or WGH_A_IFNAME
 *              WGH_A_DEVICE_CRYPT_CPUMASK: NLA_BINARY, required
 *    Reply:    none (an ACK if requested). Takes effect for the next packet.
 *
 * WGH_CMD_SET_PEER (doit, GENL_ADMIN_PERM)
 *    Request:  WGH_A_IFINDEX or WGH_A_IFNAME
 *              WGH_A_PEER_PUBLIC_KEY: len WGH_KEY_LEN (32), required (other
 *                                     lengths: -ERANGE)
 *              WGH_A_PEER_MODE: NLA_U8, WGH_MODE_*, larger is -ERANGE
 *              WGH_A_PEER_CORE: NLA_S32, -1 or a CPU < nr_cpu_ids (>= that:
 *                               -EINVAL; < -1: -ERANGE)
 *              At least one of MODE and CORE (neither: -EINVAL). No peer with
 *              that key on the device: -ENOENT. Both are applied, or neither.
 *    Reply:    none (an ACK if requested).
 *
 * WGH_CMD_GET_STATS (dumpit: NLM_F_DUMP is required)
 *    Request:  WGH_A_IFINDEX or WGH_A_IFNAME.
 *    Reply:    a multipart dump; each message carries
 *              WGH_A_IFINDEX: NLA_U32
 *              WGH_A_STATS_VERSION: NLA_U32, WGH_STATS_VERSION
 *              WGH_A_STATS_RECORD_SIZE: NLA_U32, sizeof(struct wgh_peer_record)
 *              WGH_A_STATS_RECORDS: NLA_BINARY, repeated: each holds a whole
 *                                   number of records packed back to back, at
 *                                   most WGH_STATS_RECORDS_PER_ATTR of them
 *              A message holds as many records as fit (about 300 in the
 *              32 KiB messages the kernel builds when the receive buffer is
 *              large enough), so 10,000 peers take some 35 messages. Every
 *              peer of the device appears exactly once, in the device's peer
 *              order. If the peer list changes between two messages of one
 *              dump, the message has NLM_F_DUMP_INTR set (as WireGuard does):
 *              user space should dump again.
 *
 * struct wgh_peer_record: WGH_STATS_RECORD_SIZE (104) bytes, naturally
 * aligned fields, no implicit padding, host byte order (little-endian on
 * amd64, the only architecture this is built for). Attribute payloads are
 * only 4-byte aligned, so user space should copy them (or parse unaligned).
 * numpy: np.dtype([("key", "S32"), ("rx_bytes", "<u8"), ("tx_bytes", "<u8"),
 *   ("rx_packets", "<u8"), ("tx_packets", "<u8"), ("rx_cpu_ns", "<u8"),
 *   ("tx_cpu_ns", "<u8"), ("drops", "<u8"), ("epoch", "<u8"),
 *   ("core", "<i4"), ("mode", "u1"), ("flags", "u1"), ("reserved", "V2")])
 *
 *    offset size field
 *         0   32 public_key   the peer's public key
 *        32    8 rx_bytes     upstream's own rx_bytes of the peer, what
 *                             `wg show transfer` prints as received: every
 *                             message from the peer that was authenticated,
 *                             data (keepalives included) and handshake, by
 *                             its WireGuard length (for data, header + tag),
 *                             no outer UDP/IP
 *        40    8 tx_bytes     upstream's own tx_bytes, `wg show transfer`'s
 *                             sent: every message sent to the peer, data
 *                             and handshake, same measure
 *        48    8 rx_packets   data messages accepted (incl. keepalives)
 *        56    8 tx_packets   data messages sent (incl. keepalives)
 *        64    8 rx_cpu_ns    ns of CPU time spent on this peer's received
 *                             data: decryption (in a crypt worker or inline)
 *                             plus the peer's NAPI poll (replay check,
 *                             hand-off to the stack); see "CPU time" below
 *        72    8 tx_cpu_ns    ns of CPU time spent on this peer's sent data:
 *                             encryption (worker or inline) plus transmission
 *        80    8 drops        data packets of this peer dropped by WireGuard:
 *                             staged queue overflow, staged packets purged
 *                             (the handshake attempts gave up, the interface
 *                             went down), full peer queue, failed encryption
 *                             or decryption, replayed or out-of-window nonce,
 *                             failed send
 *        88    8 epoch        random non-zero value drawn when the peer was
 *                             created: all counters above start from zero
 *                             when it changes (peer re-added, module reloaded)
 *        96    4 core         WGH_A_PEER_CORE (-1: upstream's choice)
 *       100    1 mode         WGH_MODE_*
 *       101    1 flags        0 (reserved for WGH_RECORD_F_* bits)
 *       102    2 reserved     0
 *
 * Counters are cumulative, unsigned 64-bit, and read without stopping the
 * data path: one record is not an atomic snapshot of all its fields, but each
 * field is read whole and never goes backwards within one epoch (a record
 * read after another one ended has every counter >= the earlier one's).
 * rx_cpu_ns, tx_cpu_ns and drops are kept per CPU and summed when the record
 * is filled, so that no cache line is written per packet by several CPUs.
 *
 * CPU time (rx_cpu_ns, tx_cpu_ns) is measured with local_clock() on the CPU
 * doing the work, as it goes, and chained: one reading ends a packet's
 * interval and starts the next one's. A crypt worker reads the clock once per
 * packet it decrypts or list it encrypts (plus once when it starts, and after
 * it has yielded the CPU), so a packet's interval also covers taking it off
 * the device queue and handing the one before it on to the peer's queue. A
 * TX worker or inline sender reads it once per list it sends, an inline
 * receive before and after decryption, a NAPI poll at its start and end.
 * From each interval is taken off what the module's other measured work
 * charged meanwhile on that CPU (the NAPI poll that a softirq runs inside a
 * worker's interval, an inline receive run by the softirq of a send, a peer's
 * inline send run inside another peer's NAPI poll), so the module counts no
 * time twice, nor under two peers (but for nanoseconds: work that interrupts
 * the two reads ending an interval is taken off that interval instead of the
 * next, which may be another peer's). Included: any other interrupt and softirq
 * work that runs inside an interval on that CPU, and, in a NAPI poll, the
 * delivery of the packets into the stack. Not included: time a worker spends
 * off the CPU after yielding it. An interval that comes out negative
 * (local_clock() is not monotonic across CPUs) counts 0, so these counters
 * never go back either.
 *
 * A later version may append fields to the record: user space must use
 * WGH_A_STATS_RECORD_SIZE as the stride and may ignore bytes it does not know;
 * fields are never moved. WGH_A_STATS_VERSION changes only if they are.
 */

#ifndef _WGH_UAPI_WGHYBRID_H
#define _WGH_UAPI_WGHYBRID_H

#include <linux/types.h>

#define WGH_GENL_NAME "wghybrid"
#define WGH_GENL_VERSION 1

#define WGH_KEY_LEN 32
#define WGH_CPUMASK_MAX_BYTES 1024 /* NR_CPUS up to 8192 */
#define WGH_STATS_VERSION 1
#define WGH_STATS_RECORD_SIZE 104
/* The most records one WGH_A_STATS_RECORDS attribute (u16 length) can hold. */
#define WGH_STATS_RECORDS_PER_ATTR ((0xffff - 4) / WGH_STATS_RECORD_SIZE)

enum wgh_mode {
	WGH_MODE_VANILLA = 0,
	WGH_MODE_INLINE = 1,
	__WGH_MODE_LAST,
	WGH_MODE_MAX = __WGH_MODE_LAST - 1
};

enum wgh_cmd {
	WGH_CMD_UNSPEC,
	WGH_CMD_GET_DEVICE,
	WGH_CMD_SET_DEVICE,
	WGH_CMD_SET_PEER,
	WGH_CMD_GET_STATS,
	__WGH_CMD_MAX
};
#define WGH_CMD_MAX (__WGH_CMD_MAX - 1)

enum wgh_attribute {
	WGH_A_UNSPEC,
	WGH_A_IFINDEX,
	WGH_A_IFNAME,
	WGH_A_DEVICE_CRYPT_CPUMASK,
	WGH_A_DEVICE_NUM_PEERS,
	WGH_A_DEVICE_DEFAULT_MODE,
	WGH_A_PEER_PUBLIC_KEY,
	WGH_A_PEER_MODE,
	WGH_A_PEER_CORE,
	WGH_A_STATS_VERSION,
	WGH_A_STATS_RECORD_SIZE,
	WGH_A_STATS_RECORDS,
	__WGH_A_LAST
};
#define WGH_A_MAX (__WGH_A_LAST - 1)

struct wgh_peer_record {
	__u8 public_key[WGH_KEY_LEN];
	__u64 rx_bytes;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 tx_packets;
	__u64 rx_cpu_ns;
	__u64 tx_cpu_ns;
	__u64 drops;
	__u64 epoch;
	__s32 core;
	__u8 mode;
	__u8 flags;
	__u8 reserved[2];
};

#endif /* _WGH_UAPI_WGHYBRID_H */
