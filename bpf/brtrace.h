/* SPDX-License-Identifier: GPL-2.0 */
/*
 * brtrace.h - the one ABI between brtrace's BPF programs and its Python side.
 *
 * Everything a map key, a map value or a ring-buffer record looks like is here.
 * tracer/abi.py mirrors these structs with ctypes and reads the #defines from
 * this file, and tests/unit/test_abi.py compiles this header with the host C
 * compiler to check that sizes and offsets agree. Change both together.
 *
 * Only fixed-width types; every struct is padded by hand so that C and ctypes
 * agree without relying on compiler packing rules.
 */
#ifndef BRTRACE_H
#define BRTRACE_H

/* Record kinds in the `events` ring buffer (first byte of every record). */
#define EVENT_DROP 1

/* Slots of the per-CPU `stats` array: brtrace's own health counters. */
#define STAT_EVENTS_SENT 0        /* records written to the ring buffer */
#define STAT_EVENTS_LOST 1        /* ring buffer full: record not written */
#define STAT_EVENTS_RATE_LIMITED 2 /* over the in-kernel per-CPU rate limit */
#define STAT_DROP_KEYS_FULL 3     /* drop_counts hash full: drop not counted by key */
#define STAT_DROPS_SEEN 4         /* every watched kfree_skb, keyed or not */
#define STAT_SLOTS 8

/* Bytes of the frame copied into a sampled record, from the MAC header on:
 * enough for Ethernet + two VLAN tags + ARP or an IPv6 header + ports. */
#define FRAME_BYTES 96

/* Watched devices: the bridge and its ports in one network namespace.
 * Indexed by ifindex; ifindexes at or above WATCH_SLOTS are not watched
 * (userspace warns about them). */
#define WATCH_SLOTS 65536
#define WATCH_PORT 1
#define WATCH_BRIDGE 2

/* Size of the drop_counts hash: distinct (port, reason, location, ethertype). */
#define DROP_KEYS_MAX 16384

struct drop_key {
	__u64 location;   /* kernel text address that freed the skb */
	__u32 ifindex;    /* skb->dev at the time of the free */
	__u32 reason;     /* enum skb_drop_reason, as the running kernel numbers it */
	__u16 ethertype;  /* skb->protocol, host byte order */
	__u16 pad0;
	__u32 pad1;
};

struct drop_event {
	__u8 kind;        /* EVENT_DROP */
	__u8 frame_len;   /* bytes valid in frame[] */
	__u16 ethertype;  /* skb->protocol, host byte order */
	__u16 vlan_tci;   /* accelerated VLAN tag (0 if none) */
	__u16 pad0;
	__u32 ifindex;
	__u32 reason;
	__u32 wire_len;   /* bytes from the MAC header to the end of the frame */
	__u32 pad1;
	__u64 ts_ns;      /* bpf_ktime_get_ns() */
	__u64 location;
	__u8 frame[FRAME_BYTES];
};

#endif /* BRTRACE_H */
