// SPDX-License-Identifier: GPL-2.0
/*
 * trace.bpf.c - every step of selected frames through the bridge, one
 * ring-buffer record (struct trace_event, bpf/brtrace.h) per step.
 *
 * Hooks (raw tracepoints, no kprobes needed):
 *   net:netif_receive_skb  on a port: the frame entered the bridge there;
 *                          on the bridge device: delivered locally (br_pass_frame_up)
 *   net:net_dev_queue      on a port: the frame left the bridge through it;
 *                          on the bridge device: sent by the host itself
 *   skb:kfree_skb          on the bridge or a port: freed, with reason and location
 *
 * Filters are -D defines evaluated here, before anything is recorded or
 * rate-limited (0: no filter):
 *   FILTER_MAC    a MAC as its 6 bytes in a little-endian u64; source or destination
 *   FILTER_IP     an IPv4 address as its 4 bytes in a little-endian u32; IPv4
 *                 source or destination, ARP sender or target address
 *   FILTER_IP6    1: an IPv6 address, as four little-endian u32s FILTER_IP6_W0..3;
 *                 IPv6 source or destination, or the target of a Neighbor
 *                 Solicitation or Advertisement (RFC 4861: NDP's ARP)
 *   FILTER_L4     IPv4 protocol or IPv6 next header (icmp 1, icmpv6 58; IPv6
 *                 extension headers are not walked)
 *   FILTER_ARP    1: ARP frames only
 *   FILTER_VLAN   VLAN id, accelerated tag or in the frame (802.1Q / 802.1ad outer)
 *   FILTER_PROTO  ethertype (after VLAN tags, or the outer one)
 *   FILTER_PORT   ifindex the frame enters or leaves by (bridge device included)
 *
 * A filter on the frame's bytes matches every step of a frame alike; the port
 * filter matches one step only. So a frame that matched once is followed on
 * this CPU through the bridge's synchronous path: netif_receive_skb on X ->
 * br_handle_frame -> br_forward / br_flood -> dev_queue_xmit on Y (or
 * br_pass_frame_up, or a free) all run on one CPU within microseconds, with
 * the same skb or clones of it that share skb->head. A per-CPU "current
 * ingress" ties those steps to the step that started them, and every new
 * ingress replaces it, so a recycled skb address never inherits a match.
 * (No per-skb map: bridged frames are mostly consumed, not kfree_skb'd, so
 * its entries would outlive their skbs and be found again by reused ones.)
 * An ingress step that matches all but the port filter is held per CPU and
 * recorded only if a step tied to it matches the port (a frame selected by
 * its egress port keeps its entry).
 */
#include "common.bpf.h"

#ifndef SNAPLEN
#define SNAPLEN 96
#endif
#if SNAPLEN > TRACE_SNAP_MAX || SNAPLEN < 0
#error "SNAPLEN must be between 0 and TRACE_SNAP_MAX"
#endif
#ifndef FILTER_MAC
#define FILTER_MAC 0
#endif
#ifndef FILTER_IP
#define FILTER_IP 0
#endif
#ifndef FILTER_IP6
#define FILTER_IP6 0
#endif
#ifndef FILTER_L4
#define FILTER_L4 0
#endif
#ifndef FILTER_ARP
#define FILTER_ARP 0
#endif
#ifndef FILTER_VLAN
#define FILTER_VLAN 0
#endif
#ifndef FILTER_PROTO
#define FILTER_PROTO 0
#endif
#ifndef FILTER_PORT
#define FILTER_PORT 0
#endif
#define CONTENT_FILTER (FILTER_MAC || FILTER_IP || FILTER_IP6 || FILTER_L4 || FILTER_ARP || \
			FILTER_VLAN || FILTER_PROTO)
#define ANY_FILTER (CONTENT_FILTER || FILTER_PORT)

/* Bytes of a record on the ring: the header and SNAPLEN bytes of the frame. */
#define TRACE_SEND_SIZE (sizeof(struct trace_event) - TRACE_SNAP_MAX + SNAPLEN)
/* Egress or free on this CPU within this long of an ingress (and sharing its
 * skb or its data) belongs to that ingress: the bridge decides synchronously. */
#define TIE_NS 1000000ULL

/* Scratch records, one per hook (a softirq may interrupt a hook in task
 * context on the same CPU), and the held ingress step. */
#define SCRATCH_RX 0
#define SCRATCH_TX 1
#define SCRATCH_FREE 2
#define SCRATCH_PENDING 3
BPF_PERCPU_ARRAY(trace_scratch, struct trace_event, 4);

struct trace_cur {
	__u64 ts_ns;      /* when the current ingress (or local send) happened */
	__u64 skb;
	__u64 head;
	__u32 followed;   /* it was recorded: its later steps are too */
	__u32 pending;    /* SCRATCH_PENDING holds its unrecorded step */
};
BPF_PERCPU_ARRAY(trace_cur, struct trace_cur, 1);

static __always_inline struct trace_event *build(int slot, const void *skb, __u32 ifindex,
						 __u8 step, __u64 now)
{
	struct trace_event *ev = trace_scratch.lookup(&slot);
	if (!ev)
		return NULL;
	ev->kind = EVENT_TRACE;
	ev->step = step;
	ev->flags = 0;
	ev->ifindex = ifindex;
	ev->reason = 0;
	ev->location = 0;
	ev->ts_ns = now;
	ev->skb = (__u64)skb;
	ev->head = read_u64(skb + SKB_HEAD_OFF);
	__u16 vproto = read_u16(skb + SKB_VLAN_PROTO_OFF);
	ev->vlan_proto = vproto;
	ev->vlan_tci = vproto ? read_u16(skb + SKB_VLAN_TCI_OFF) : 0;
	if (vproto)
		ev->flags |= TF_VLAN_TAG;
	ev->cpu = (__u16)bpf_get_smp_processor_id();
	ev->pad0 = 0;
	__u32 wire = 0;
	const void *start = frame_start(skb, &wire);
	ev->wire_len = wire;
	ev->cap_len = wire < SNAPLEN ? wire : SNAPLEN;
	if (bpf_probe_read_kernel(ev->frame, TRACE_SNAP_MAX, start) != 0) {
		ev->cap_len = 0;
		ev->wire_len = 0;  /* nothing readable: no content filter can match */
	}
	return ev;
}

static __always_inline void emit(const struct trace_event *ev, __u64 now)
{
	struct trace_event *out = event_reserve(EVENT_TRACE, TRACE_SEND_SIZE, now);
	if (!out)
		return;
	__builtin_memcpy(out, ev, TRACE_SEND_SIZE);
	event_submit(EVENT_TRACE, out);
}

static __always_inline __u16 be16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

#if FILTER_IP
static __always_inline int ip_at(const __u8 *p)
{
	__u32 v = 0;
	__builtin_memcpy(&v, p, 4);
	return v == (__u32)FILTER_IP;
}
#endif

#if FILTER_IP6
static __always_inline int ip6_at(const __u8 *p)
{
	__u32 w[4];
	__builtin_memcpy(w, p, 16);
	return w[0] == (__u32)FILTER_IP6_W0 && w[1] == (__u32)FILTER_IP6_W1 &&
	       w[2] == (__u32)FILTER_IP6_W2 && w[3] == (__u32)FILTER_IP6_W3;
}
#endif

/* The part of the filter that reads the frame's own bytes. `l3` is where the
 * payload after the (last) ethertype starts, `type` that ethertype. */
static __always_inline int l3_match(const __u8 *l3, __u16 type, __u32 l3_len)
{
#if FILTER_ARP
	if (type != 0x0806)
		return 0;
#endif
#if FILTER_IP
	if (type == 0x0800) {
		if (l3_len < 20 || !(ip_at(l3 + 12) || ip_at(l3 + 16)))
			return 0;
	} else if (type == 0x0806) {
		if (l3_len < 28 || !(ip_at(l3 + 14) || ip_at(l3 + 24)))
			return 0;
	} else {
		return 0;
	}
#endif
#if FILTER_IP6
	/* IPv6 header: next header at 6, source at 8, destination at 24. A
	 * neighbour solicitation is sent to the target's solicited-node
	 * multicast address, so the target (after the 8-byte ICMPv6 header of
	 * type 135 or 136) is matched too, as ARP's target is for IPv4. */
	if (type != 0x86DD || l3_len < 40)
		return 0;
	if (!ip6_at(l3 + 8) && !ip6_at(l3 + 24) &&
	    !(l3[6] == 58 && l3_len >= 64 && (l3[40] == 135 || l3[40] == 136) && ip6_at(l3 + 48)))
		return 0;
#endif
#if FILTER_L4
	if (type == 0x0800) {
		if (l3_len < 20 || l3[9] != FILTER_L4)
			return 0;
	} else if (type == 0x86DD) {
		if (l3_len < 40 || l3[6] != FILTER_L4)
			return 0;
	} else {
		return 0;
	}
#endif
	return 1;
}

static __always_inline int content_match(const struct trace_event *ev)
{
#if CONTENT_FILTER
	const __u8 *f = ev->frame;
	__u32 wire = ev->wire_len;
	if (wire < 14)
		return 0;
#if FILTER_MAC
	__u64 dst = 0, src = 0;
	__builtin_memcpy(&dst, f, 6);
	__builtin_memcpy(&src, f + 6, 6);
	if (dst != (__u64)FILTER_MAC && src != (__u64)FILTER_MAC)
		return 0;
#endif
	__u16 outer = be16(f + 12), type = outer;
	int vlan_ok = !FILTER_VLAN;
	if ((ev->flags & TF_VLAN_TAG) && (ev->vlan_tci & 0x0fff) == FILTER_VLAN)
		vlan_ok = 1;
	if (type == 0x8100 || type == 0x88a8) {
		if (wire < 18)
			return 0;
		if ((be16(f + 14) & 0x0fff) == FILTER_VLAN)
			vlan_ok = 1;
		type = be16(f + 16);
		if (type == 0x8100) {
			if (wire < 22)
				return 0;
			type = be16(f + 20);
			if (!vlan_ok || !l3_match(f + 22, type, wire - 22))
				return 0;
		} else if (!vlan_ok || !l3_match(f + 18, type, wire - 18)) {
			return 0;
		}
	} else if (!vlan_ok || !l3_match(f + 14, type, wire - 14)) {
		return 0;
	}
#if FILTER_PROTO
	if (type != FILTER_PROTO && outer != FILTER_PROTO)
		return 0;
#endif
#endif
	return 1;
}

static __always_inline int port_match(__u32 ifindex)
{
	return !FILTER_PORT || ifindex == FILTER_PORT;
}

/* A step that starts a journey: entered by a port, or sent by the host. */
static __always_inline void start_step(const void *skb, __u32 ifindex, __u8 step, __u64 now)
{
	int zero = 0;
	struct trace_cur *cur = trace_cur.lookup(&zero);
	if (!cur)
		return;
	struct trace_event *ev = build(SCRATCH_RX + (step == STEP_ORIGINATED), skb, ifindex, step, now);
	if (!ev)
		return;
	int content = content_match(ev);
	cur->ts_ns = now;
	cur->skb = ev->skb;
	cur->head = ev->head;
	cur->pending = 0;
	cur->followed = content && port_match(ifindex);
	if (cur->followed) {
		emit(ev, now);
		return;
	}
#if FILTER_PORT
	if (content) {
		int p = SCRATCH_PENDING;
		struct trace_event *held = trace_scratch.lookup(&p);
		if (held) {
			__builtin_memcpy(held, ev, sizeof(*held));
			held->flags |= TF_PENDING;
			cur->pending = 1;
		}
	}
#endif
}

/* Any other step: record it if its frame is followed or it matches itself. */
static __always_inline void later_step(struct trace_event *ev, __u32 ifindex, __u64 now)
{
	int zero = 0;
	struct trace_cur *cur = trace_cur.lookup(&zero);
	int tied = cur && now - cur->ts_ns < TIE_NS && (cur->skb == ev->skb || cur->head == ev->head);
	int take = tied && cur->followed;
#if ANY_FILTER
	if (!take && port_match(ifindex) && content_match(ev)) {
		take = 1;
		if (tied) {
			cur->followed = 1;
			if (cur->pending) {
				int p = SCRATCH_PENDING;
				struct trace_event *held = trace_scratch.lookup(&p);
				if (held && held->skb == cur->skb)
					emit(held, now);
				cur->pending = 0;
			}
		}
	}
#endif
	if (take || !ANY_FILTER)
		emit(ev, now);
}

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	const void *skb = (const void *)ctx->args[ARG_RX_SKB];
	__u32 ifindex = 0;
	__u32 w = watched(SKB_DEV(skb), &ifindex);
	if (!w)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (!(w & WATCH_BRIDGE)) {
		start_step(skb, ifindex, STEP_ENTERED, now);
		return 0;
	}
	/* br_pass_frame_up(): the bridge hands the frame to its own stack. */
	struct trace_event *ev = build(SCRATCH_RX, skb, ifindex, STEP_DELIVERED, now);
	if (ev)
		later_step(ev, ifindex, now);
	return 0;
}

RAW_TRACEPOINT_PROBE(net_dev_queue)
{
	const void *skb = (const void *)ctx->args[ARG_TX_SKB];
	__u32 ifindex = 0;
	__u32 w = watched(SKB_DEV(skb), &ifindex);
	if (!w)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (w & WATCH_BRIDGE) {
		/* br_dev_xmit() follows: what the host sends through its bridge. */
		start_step(skb, ifindex, STEP_ORIGINATED, now);
		return 0;
	}
	struct trace_event *ev = build(SCRATCH_TX, skb, ifindex, STEP_LEFT, now);
	if (ev)
		later_step(ev, ifindex, now);
	return 0;
}

RAW_TRACEPOINT_PROBE(kfree_skb)
{
	const void *skb = (const void *)ctx->args[ARG_SKB];
	__u32 ifindex = 0;
	if (!watched(SKB_DEV(skb), &ifindex))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct trace_event *ev = build(SCRATCH_FREE, skb, ifindex, STEP_FREED, now);
	if (!ev)
		return 0;
	ev->reason = (__u32)ctx->args[ARG_REASON];
	ev->location = ctx->args[ARG_LOCATION];
	later_step(ev, ifindex, now);
	return 0;
}
