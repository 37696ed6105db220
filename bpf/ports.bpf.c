// SPDX-License-Identifier: GPL-2.0
/*
 * ports.bpf.c - what enters and leaves the bridge's ports, and what comes back
 * (hook group `ports`, tracer/hooks/ports.py).
 *
 * Hooks: one of two sets, chosen by tracer/probes.py (hook "ports") and
 * selected here by PORT_HOOK_TCX:
 *
 *   tcx (kernel >= 6.6)    port_ingress / port_egress, sched_cls programs that
 *                          tracer/loader.py links (BPF_LINK_CREATE, attach
 *                          types BPF_TCX_INGRESS/EGRESS) to the bridge and each
 *                          of its ports, and to nothing else: no other device
 *                          of the host runs them, and the frame is read in place
 *                          (direct packet access, no helper call). A link lives
 *                          as long as brtrace's file descriptor, so no exit,
 *                          SIGKILL included, leaves one behind. They return
 *                          TCX_NEXT: whatever else is attached runs as before.
 *   raw tracepoints        net:netif_receive_skb (a frame entering a port, or,
 *                          via br_pass_frame_up(), the bridge device itself)
 *                          and net:net_dev_queue (a frame queued on a device).
 *                          They run for every device of the host, so each
 *                          first asks watched() (common.bpf.h).
 *
 * Both see a frame at the same two points: tc ingress runs in
 * __netif_receive_skb_core() before the bridge's rx_handler (br_handle_frame()),
 * tc egress in __dev_queue_xmit() just before trace_net_dev_queue().
 *
 * For watched ports: per-slot counters in a per-CPU array; an own-address
 * check behind a 256-entry prefilter; and, for flooded frames only
 * (broadcast/multicast destination), a fingerprint in a direct-mapped array
 * that tells a frame coming back (loop or reflecting port) from a new one.
 * ARP and IPv6 neighbour discovery frames also go into per-address tables
 * (arp_targets, ndp_targets): who asked, who answered, from which port; an
 * NDP target lies past the bytes every frame is read for, so it is read for
 * solicitations and advertisements only.
 *
 * The parts, each in a header of its own: port_hit.bpf.h (a frame on a port,
 * its counters and records), port_echo.bpf.h (own-address echoes),
 * port_arp.bpf.h and port_ndp.bpf.h (the per-address tables),
 * port_flood.bpf.h (flood fingerprints and the copies that come back). What
 * is here: the two attach modes, and the order a frame goes through the parts.
 *
 * Which frame went where is `brtrace trace`'s job (trace.bpf.c, filtered
 * in the kernel): these hooks run for every frame, so they keep only what
 * the views show, per port.
 */
#include "common.bpf.h"
#include "port_hit.bpf.h"
#include "port_echo.bpf.h"
#include "port_arp.bpf.h"
#include "port_flood.bpf.h"
#include "port_ndp.bpf.h"

/* A frame entering a port; `buf` holds its first ETH_HLEN_ bytes, and
 * ARP_FRAME_LEN when arp_ok. Returns 1 when it is flooded (its destination
 * is a group address), so the caller fingerprints it. */
static __always_inline int rx_frame(struct hit *h, const __u8 *buf, int arp_ok)
{
	if (is_arp(buf)) {
		count(h->pc, PC_RX_ARP, 1);
		if (arp_ok)
			arp_seen(h->slot, h->pc, buf);
	}
	if (is_own_mac(src_mac(buf))) {
		/* br_fdb_update() would log "received packet on X with own address
		 * as source address" (rate-limited); this is the exact count. */
		count(h->pc, PC_ECHOES, 1);
		h->echo = 1;
	}
	if (!(buf[0] & 1))
		return 0;  /* unicast: no fingerprint needed */
	if ((buf[0] & buf[1] & buf[2] & buf[3] & buf[4] & buf[5]) == 0xff)
		count(h->pc, PC_RX_BROADCAST, 1);
	else
		count(h->pc, PC_RX_MULTICAST, 1);
	return 1;
}

/* The host's own stack sends through the bridge (br_dev_xmit()). Its ARP
 * replies answer requests seen on the ports (a gateway on the bridge
 * device), so they count as claims, by slot 0; so do its neighbour
 * advertisements (tc_ndp() / tp_ndp() beside each call). */
static __always_inline void bridge_tx(struct hit *h, const __u8 *buf)
{
	if (is_arp(buf))
		arp_seen(0, h->pc, buf);
}

#if PORT_HOOK_TCX

/* The frame's fingerprint, summed where the words lie in the linear area
 * (no copy): a short frame (a 42-byte ARP request) word by word, its last
 * partial word cut from the 8 bytes that end the frame. A frame whose first
 * FINGERPRINT_BYTES are not linear is copied first. -1 if unreadable. */
static __always_inline int tc_fingerprint(struct __sk_buff *skb, __u64 *fp)
{
	const __u8 *data = (const __u8 *)(long)skb->data;
	const void *end = (const void *)(long)skb->data_end;
	__u32 len = skb->len;
	__u64 h;
	if (len >= FINGERPRINT_BYTES) {
		const __u64 *w = (const __u64 *)data;
		__u64 copy[FINGERPRINT_BYTES / 8];
		if ((const void *)(data + FINGERPRINT_BYTES) > end) {   /* not linear */
			if (bpf_skb_load_bytes(skb, 0, copy, sizeof(copy)) != 0)
				return -1;
			w = copy;
		}
		h = FINGERPRINT_BYTES * FP_K_LEN;
#pragma unroll
		for (int i = 0; i < FINGERPRINT_BYTES / 8; i++)
			h += w[i] * FP_K(i);
	} else {
		h = len * FP_K_LEN;
		__u32 rem = len & 7, last = len >> 3;
		__u64 tail = 0;
		if (rem && len >= 8) {
			const __u8 *p = data + ((len - 8) & (FINGERPRINT_BYTES - 1));
			if ((const void *)(p + 8) <= end)
				tail = *(const __u64 *)p >> ((8 - rem) * 8);  /* bytes len & ~7 .. len - 1 */
		}
#pragma unroll
		for (int i = 0; i < FINGERPRINT_BYTES / 8; i++) {
			if ((const void *)(data + (i + 1) * 8) <= end)
				h += *(const __u64 *)(data + i * 8) * FP_K(i);
			else if (i == last)
				h += tail * FP_K(i);
		}
	}
	*fp = fp_mix(h);
	return 0;
}

/* The target and flags of a solicitation or advertisement, in place. */
static __always_inline void nd_body(const __u8 *buf, const void *end, struct nd_body *b)
{
	if ((const void *)(buf + ND_TARGET_END) > end)
		return;  /* not in the linear area: counted per port only */
	b->flags = buf[58];
	__builtin_memcpy(b->target, buf + 62, 16);
	b->ok = 1;
}

/* A neighbour discovery frame into ndp_targets, read in place. It looks at
 * the frame afresh rather than take the caller's nd_type(): port_ingress()
 * derives its copy counter from that, and with one value for both the
 * compiler folded `dup >= 0` into it, so the verifier lost dup's bounds
 * ("math between map_value pointer and 34359738360 is not allowed"). */
static __always_inline void tc_ndp(struct hit *h, struct __sk_buff *skb)
{
	const __u8 *buf = (const __u8 *)(long)skb->data;
	const void *end = (const void *)(long)skb->data_end;
	if ((const void *)(buf + ND_FRAME_LEN) > end)
		return;
	__u8 type = nd_type(buf);
	if (!type)
		return;
	struct nd_body b = {};
	if (type != 134)
		nd_body(buf, end, &b);
	ndp_seen(h, buf, type, &b);
}

/* Shared start of both programs: the device is ours by construction (the
 * program is linked to it), its slot comes from the watch array. */
static __always_inline int tc_hit(struct __sk_buff *skb, int packets, struct hit *h)
{
	__u32 ifindex = skb->ifindex;
	if (ifindex >= WATCH_SLOTS)
		return 0;
	struct watch_entry *e = watch.lookup(&ifindex);
	if (!e || !e->value)
		return 0;  /* linked, but no longer watched (a port that is leaving) */
	h->watch = e->value;
	h->ifindex = ifindex;
	h->wire = skb->len;
	h->skb = skb;
	hit_count(h, packets);
	return 1;
}

int port_ingress(struct __sk_buff *skb)
{
	struct hit h = {};
	if (!tc_hit(skb, PC_RX_PACKETS, &h) || (h.watch & WATCH_BRIDGE))
		return TCX_NEXT_;  /* the bridge's own ingress: br_pass_frame_up() */
	const __u8 *buf = (const __u8 *)(long)skb->data;
	const void *end = (const void *)(long)skb->data_end;
	if ((const void *)(buf + ETH_HLEN_) > end)
		return TCX_NEXT_;  /* header not in the linear area: counted only */
	int flooded;
	if ((const void *)(buf + ARP_FRAME_LEN) <= end)
		flooded = rx_frame(&h, buf, 1);
	else
		flooded = rx_frame(&h, buf, 0);
	int dup = is_arp(buf) ? PC_ARP_DUPLICATES : -1;
	__u8 nd;
	if ((const void *)(buf + ND_FRAME_LEN) <= end && (nd = nd_type(buf)))
		dup = nd_seen(&h, buf, nd);
	__u64 fp;
	if (flooded && tc_fingerprint(skb, &fp) == 0)
		flood_ingress(&h, fp, src_mac(buf), dup);
	/* dup is one of the PC_NDP_* counters for NDP frames only. After
	 * flood_ingress(): a loop copy counts apart. */
	if (dup >= PC_NDP_NS)
		tc_ndp(&h, skb);
	hit_records(&h);
	return TCX_NEXT_;
}

int port_egress(struct __sk_buff *skb)
{
	struct hit h = {};
	if (!tc_hit(skb, PC_TX_PACKETS, &h))
		return TCX_NEXT_;
	const __u8 *buf = (const __u8 *)(long)skb->data;
	const void *end = (const void *)(long)skb->data_end;
	if ((const void *)(buf + ETH_HLEN_) > end)
		return TCX_NEXT_;
	if (h.watch & WATCH_BRIDGE) {
		if ((const void *)(buf + ARP_FRAME_LEN) <= end)
			bridge_tx(&h, buf);
		tc_ndp(&h, skb);
		return TCX_NEXT_;
	}
	if (!(buf[0] & 1))
		return TCX_NEXT_;  /* unicast (I/G bit of the first byte clear): no fingerprint */
	count(h.pc, PC_TX_FLOODED, 1);
	if (flood_clone(&h))
		return TCX_NEXT_;
	__u64 fp;
	if (tc_fingerprint(skb, &fp) == 0)
		flood_egress(&h, fp, src_mac(buf));
	return TCX_NEXT_;
}

#else /* raw tracepoints */

/* A neighbour discovery frame into ndp_targets; `buf` holds the frame's
 * first FINGERPRINT_BYTES. The target of a solicitation or advertisement
 * lies beyond them: one more read, for these frames only. */
static __always_inline void tp_ndp(struct hit *h, const __u8 *buf, __u8 type)
{
	struct nd_body b = {};
	if (type != 134 && h->wire >= ND_TARGET_END) {
		b.flags = buf[58];
		b.ok = bpf_probe_read_kernel(b.target, 16, (const __u8 *)h->start + 62) == 0;
	}
	ndp_seen(h, buf, type, &b);
}

/* Shared start of both hooks: is the device ours, and count the frame. */
static __always_inline int tp_hit(const void *skb, int packets, struct hit *h)
{
	h->watch = watched(SKB_DEV(skb), &h->ifindex);
	if (!h->watch)
		return 0;
	h->start = frame_start(skb, &h->wire);
	hit_count(h, packets);
	return 1;
}

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	struct hit h = {};
	if (!tp_hit((const void *)ctx->args[ARG_RX_SKB], PC_RX_PACKETS, &h))
		return 0;
	if (h.watch & WATCH_BRIDGE)
		return 0;  /* br_pass_frame_up(): delivered to the bridge's own stack */
	__u64 words[FINGERPRINT_BYTES / 8] = {};
	if (bpf_probe_read_kernel(words, sizeof(words), h.start) != 0)
		return 0;
	const __u8 *buf = (const __u8 *)words;
	int dup = is_arp(buf) ? PC_ARP_DUPLICATES : -1;
	__u8 nd = h.wire >= ND_FRAME_LEN ? nd_type(buf) : 0;
	if (nd)
		dup = nd_seen(&h, buf, nd);
	if (rx_frame(&h, buf, 1))
		flood_ingress(&h, fingerprint(words, h.wire), src_mac(buf), dup);
	if (nd)
		tp_ndp(&h, buf, nd);
	hit_records(&h);
	return 0;
}

RAW_TRACEPOINT_PROBE(net_dev_queue)
{
	struct hit h = {};
	if (!tp_hit((const void *)ctx->args[ARG_TX_SKB], PC_TX_PACKETS, &h))
		return 0;
	__u64 words[FINGERPRINT_BYTES / 8] = {};
	if (bpf_probe_read_kernel(words, sizeof(words), h.start) != 0)
		return 0;
	if (h.watch & WATCH_BRIDGE) {
		const __u8 *buf = (const __u8 *)words;
		bridge_tx(&h, buf);
		__u8 nd = h.wire >= ND_FRAME_LEN ? nd_type(buf) : 0;
		if (nd)
			tp_ndp(&h, buf, nd);
		return 0;
	}
	if (words[0] & 1) {  /* a group destination (I/G bit of the first byte) */
		count(h.pc, PC_TX_FLOODED, 1);
		flood_egress(&h, fingerprint(words, h.wire), src_mac((const __u8 *)words));
	}
	return 0;
}

#endif
