// SPDX-License-Identifier: GPL-2.0
/*
 * port_hit.bpf.h - a frame on a watched port, in one direction (struct hit),
 * for the port hooks (ports.bpf.c): its per-port counters (port_counters,
 * PC_* of brtrace.h) and the records it may owe (frame_event)
 */
#ifndef BRTRACE_PORT_HIT_BPF_H
#define BRTRACE_PORT_HIT_BPF_H
#include "common.bpf.h"

#define ETH_HLEN_ 14
#define ARP_FRAME_LEN 42   /* Ethernet + ARP for IPv4, unpadded (what Linux sends) */
#define ND_FRAME_LEN 55    /* Ethernet + IPv6 header + the ICMPv6 type byte */
#define ND_TARGET_END 78   /* ... + code, checksum, flags/reserved (58..61), target (62..77) */
#define TCX_NEXT_ (-1)     /* enum tcx_action_base (6.6 uapi): run the next program */

BPF_PERCPU_ARRAY(port_counters, struct port_ctrs, MAX_PORTS);

/* A frame on a watched device, in one direction. */
struct hit {
	__u32 watch;      /* watch value */
	__u32 slot;
	__u32 ifindex;
	__u32 wire;       /* frame size from the MAC header */
	__u64 now;        /* 0 until hit_now() */
	struct port_ctrs *pc;  /* this CPU's counters of the port */
	__u32 echo;       /* records owed by this frame (hit_records()) */
	__u32 loop_how;   /* LOOP_* bits of a loop copy, 0 if none */
	__u32 loop_prev;  /* where its previous pass entered */
	__u32 loop_gap;   /* jiffies since then */
#if PORT_HOOK_TCX
	struct __sk_buff *skb;
#else
	const void *start;     /* the frame in kernel memory */
#endif
};

/* The time of a record (its timestamp, and the per-second rate limit), read
 * once per frame and only when it owes one: a clock read costs as much as the
 * rest of a unicast frame's work (flood ages use flood_tick()). tcx programs
 * use the coarse clock (no clocksource read; the verifier refuses it to
 * tracing programs). */
static __always_inline __u64 hit_now(struct hit *h)
{
	if (!h->now) {
#if PORT_HOOK_TCX
		h->now = bpf_ktime_get_coarse_ns();
#else
		h->now = bpf_ktime_get_ns();
#endif
	}
	return h->now;
}

static __always_inline void count(struct port_ctrs *pc, int counter, __u64 n)
{
	if (pc)
		pc->c[counter] += n;
}

/* The first `n` (1..size) bytes of the frame into `dst`. */
static __always_inline int copy_frame(const struct hit *h, void *dst, __u32 n, __u32 size)
{
#if PORT_HOOK_TCX
	/* bpf_skb_load_bytes() wants a length the verifier can bound to
	 * [1, size]; a frame shorter than size (a 42-byte ARP) is copied whole.
	 * 64 bits wide: a u32 is tested in a zero-extended copy, which the
	 * verifier does not connect to the register passed to the helper. */
	__u64 len = n > size ? size : n;
	asm volatile("" : "+r"(len));
	if (len < 1)
		return -1;
	return bpf_skb_load_bytes(h->skb, 0, dst, len);
#else
	/* A kernel read may run past a short frame into its buffer's tailroom:
	 * harmless, and the length saying what is valid travels beside it. */
	return bpf_probe_read_kernel(dst, size, h->start);
#endif
}

static __always_inline void frame_event(int kind, struct hit *h, __u16 how, __u32 prev_ifindex,
					__u32 gap)
{
	struct frame_event *ev = event_reserve(kind, sizeof(struct frame_event), hit_now(h));
	if (!ev)
		return;
	ev->kind = kind;
	ev->how = how;
	ev->ifindex = h->ifindex;
	ev->wire_len = h->wire;
	ev->prev_ifindex = prev_ifindex;
	ev->gap_ticks = gap;
	ev->ts_ns = h->now;
	ev->frame_len = h->wire < FRAME_BYTES ? h->wire : FRAME_BYTES;
	if (copy_frame(h, ev->frame, h->wire, FRAME_BYTES) != 0)
		ev->frame_len = 0;
	event_submit(kind, ev);
}

/* The records a frame entering a port owes (an own-address echo, a frame
 * back again, or both), from one frame_event() call site in a loop the
 * compiler must not unroll: each inlined copy of frame_event() is code every
 * frame carries through the instruction cache. */
static __always_inline void hit_records(struct hit *h)
{
	if (!(h->echo | h->loop_how))
		return;
#pragma clang loop unroll(disable)
	for (int i = 0; i < 2; i++) {
		int loop = i == 1;
		if (loop ? !h->loop_how : !h->echo)
			continue;
		frame_event(loop ? EVENT_LOOP : EVENT_ECHO, h, loop ? h->loop_how : 0,
			    loop ? h->loop_prev : 0, loop ? h->loop_gap : 0);
	}
}

/* Count the frame in `packets` and `packets + 1` (the matching bytes counter). */
static __always_inline void hit_count(struct hit *h, int packets)
{
	h->slot = (h->watch >> WATCH_SLOT_SHIFT) & (MAX_PORTS - 1);
	__u32 slot = h->slot;
	h->pc = port_counters.lookup(&slot);
	count(h->pc, packets, 1);
	count(h->pc, packets + 1, h->wire);
}

#endif /* BRTRACE_PORT_HIT_BPF_H */
