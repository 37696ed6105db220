/* SPDX-License-Identifier: GPL-2.0 */
/*
 * trace.h - the ABI of `brtrace trace` (bpf/trace.bpf.c): one ring-buffer
 * record per step of a frame through the bridge.
 *
 * Kept apart from brtrace.h for now; tracer/trace_abi.py mirrors it with
 * ctypes and reads its #defines, and tests/unit/test_trace_abi.py compiles it
 * with the host C compiler to check sizes and offsets. Change both together.
 * Only fixed-width types, padded by hand, as in brtrace.h.
 */
#ifndef BRTRACE_TRACE_H
#define BRTRACE_TRACE_H

/* Record kind in the shared `events` ring buffer. Must stay below 8 (the
 * rate_state array of common.bpf.h) and clear of brtrace.h's EVENT_* values;
 * its per-kind stat slots are STAT_KIND_BASE + 7 * 3 + {0,1,2} = 37..39. */
#define EVENT_TRACE 7

/* Most bytes of a frame a step can carry (SNAPLEN, a -D define, is <= this). */
#define TRACE_SNAP_MAX 128

/* What happened to the frame at this step. */
#define STEP_ENTERED 1     /* netif_receive_skb on a port: entered the bridge there */
#define STEP_DELIVERED 2   /* netif_receive_skb on the bridge device: delivered locally */
#define STEP_LEFT 3        /* net_dev_queue on a port: left the bridge through it */
#define STEP_ORIGINATED 4  /* net_dev_queue on the bridge device: sent by the host itself */
#define STEP_FREED 5       /* kfree_skb on the bridge or a port: dropped, with a reason */

/* Flags of a step. */
#define TF_VLAN_TAG 1      /* vlan_tci holds an accelerated tag (not in frame[]) */
#define TF_PENDING 2       /* recorded late: held back until a later step matched the port filter */

struct trace_event {
	__u8 kind;         /* EVENT_TRACE */
	__u8 step;         /* STEP_* */
	__u8 cap_len;      /* bytes valid in frame[] (<= SNAPLEN) */
	__u8 flags;        /* TF_* */
	__u32 ifindex;     /* skb->dev at this step */
	__u32 wire_len;    /* bytes from the MAC header to the end of the frame */
	__u32 reason;      /* STEP_FREED: enum skb_drop_reason */
	__u64 ts_ns;       /* bpf_ktime_get_ns() */
	__u64 skb;         /* the sk_buff's address: the same for a forwarded frame */
	__u64 head;        /* skb->head: shared by a flooded frame's clones */
	__u64 location;    /* STEP_FREED: kernel text address that freed it */
	__u16 vlan_tci;    /* with TF_VLAN_TAG */
	__u16 vlan_proto;  /* with TF_VLAN_TAG, network byte order as in the skb */
	__u16 cpu;         /* bpf_get_smp_processor_id() */
	__u16 pad0;
	__u8 frame[TRACE_SNAP_MAX]; /* only SNAPLEN bytes of it are sent */
};

#endif /* BRTRACE_TRACE_H */
