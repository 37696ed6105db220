// SPDX-License-Identifier: GPL-2.0
/*
 * forward.bpf.c - what enters and leaves the bridge's ports, and what comes back.
 *
 * Hooks (raw tracepoints, every kernel with BTF; the fallback for kernels
 * without kprobes/fentry, and the per-port counters in every mode):
 *   net:netif_receive_skb  a frame entering a port (or, via br_pass_frame_up(),
 *                          the bridge device itself)
 *   net:net_dev_queue      a frame queued for transmission on a port (the
 *                          bridge's forwarding decision, seen from the far side)
 *
 * Per packet, the common case (not a watched device) costs one array lookup.
 * For watched ports: per-slot counters in a per-CPU array; an own-address
 * check behind a 256-entry prefilter; and, for flooded frames only
 * (broadcast/multicast destination), a fingerprint in an LRU hash that tells
 * a frame coming back (loop or reflecting port) from a new one.
 *
 * Which frame went where is `brtrace trace`'s job (trace.bpf.c, filtered
 * in the kernel): these hooks run for every frame, so they keep only what
 * the views show, per port.
 */
#include "common.bpf.h"

BPF_PERCPU_ARRAY(port_counters, struct port_ctrs, MAX_PORTS);

/* The bridge's own MACs (local FDB entries), kept by userspace. own_mac_lo
 * holds, per last MAC byte, whether any own MAC ends with it: most frames are
 * rejected by that array read without a hash lookup. */
BPF_HASH(own_macs, __u64, __u32, 1024);
BPF_ARRAY(own_mac_lo, __u32, 256);

struct flood_seen {
	__u64 ts_ns;
	__u64 out_mask[MAX_PORTS / 64]; /* slots it left through */
	__u32 in_slot;                   /* where it first entered (0: the bridge) */
	__u32 in_ifindex;
};
BPF_TABLE("lru_hash", __u64, struct flood_seen, flood_fingerprints, FLOOD_KEYS_MAX);

/* ARP on the wire, per IPv4 address asked for or claimed (bounded LRU). */
BPF_TABLE("lru_hash", __u32, struct arp_target, arp_targets, ARP_TARGETS_MAX);

static __always_inline void count(struct port_ctrs *pc, int counter, __u64 n)
{
	if (pc)
		pc->c[counter] += n;
}

/* A 64-bit mix over the frame's first FINGERPRINT_BYTES, never past its end:
 * a frame that went through userspace (a VPN tap) comes back in a new buffer
 * whose bytes after the frame differ. Eight fixed word steps (no
 * data-dependent loop exit): with a byte loop and `break`, clang unrolled
 * partially and the verifier refused "invalid read from stack". */
static __always_inline __u64 fingerprint(const __u64 *w, __u32 len)
{
	__u64 h = 0xcbf29ce484222325ULL;
	__s32 n = len < FINGERPRINT_BYTES ? (__s32)len : FINGERPRINT_BYTES;
#pragma unroll
	for (int i = 0; i < FINGERPRINT_BYTES / 8; i++) {
		__u64 x = w[i];
		__s32 rem = n - i * 8;
		if (rem <= 0)
			x = 0;
		else if (rem < 8)
			x &= (1ULL << (rem * 8)) - 1;
		h ^= x;
		h *= 0x100000001b3ULL;
		h ^= h >> 29;
	}
	return h ^ (__u64)n;
}

static __always_inline void frame_event(int kind, __u32 ifindex, const void *start, __u32 wire,
					__u16 how, __u32 first_ifindex, __u64 now)
{
	struct frame_event *ev = event_reserve(kind, sizeof(struct frame_event), now);
	if (!ev)
		return;
	ev->kind = kind;
	ev->how = how;
	ev->ifindex = ifindex;
	ev->wire_len = wire;
	ev->first_ifindex = first_ifindex;
	ev->ts_ns = now;
	ev->frame_len = wire < FRAME_BYTES ? wire : FRAME_BYTES;
	if (bpf_probe_read_kernel(ev->frame, FRAME_BYTES, start) != 0)
		ev->frame_len = 0;
	event_submit(kind, ev);
}

static __always_inline int is_own_mac(const __u8 *mac)
{
	__u32 lo = mac[5];
	__u32 *any = own_mac_lo.lookup(&lo);
	if (!any || !*any)
		return 0;
	__u64 key = 0;
	__builtin_memcpy(&key, mac, 6);
	return own_macs.lookup(&key) != NULL;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

/* An untagged Ethernet ARP frame for IPv4 (RFC 826 offsets from the frame
 * start: op 20, sender MAC 22, sender IP 28, target IP 38). Requests count
 * against the target IP; replies and gratuitous ARPs are claims of the sender
 * IP, and a claim by a second MAC is a conflict. */
static __always_inline void arp_seen(__u32 slot, struct port_ctrs *pc, const __u8 *buf, __u64 now)
{
	if (buf[14] != 0 || buf[15] != 1 || buf[16] != 0x08 || buf[17] != 0x00 ||
	    buf[18] != 6 || buf[19] != 4 || buf[20] != 0)
		return;  /* not Ethernet/IPv4 ARP */
	__u8 op = buf[21];
	__u32 spa = 0, tpa = 0;
	__builtin_memcpy(&spa, buf + 28, 4);
	__builtin_memcpy(&tpa, buf + 38, 4);
	int gratuitous = spa == tpa;
	if (op == 1) {
		count(pc, PC_ARP_REQUESTS, 1);
		if (gratuitous)
			count(pc, PC_ARP_GRATUITOUS, 1);
	} else if (op == 2) {
		count(pc, PC_ARP_REPLIES, 1);
	} else {
		return;
	}
	if (op == 1 && !gratuitous) {
		struct arp_target *t = arp_targets.lookup(&tpa);
		if (!t) {
			struct arp_target fresh = {};
			arp_targets.update(&tpa, &fresh);
			t = arp_targets.lookup(&tpa);
			if (!t)
				return;
		}
		__sync_fetch_and_add(&t->requests, 1);
		t->last_request_ns = now;
		t->asker_slot = slot;
		return;
	}
	if (!spa)
		return;  /* ARP probe (RFC 5227): claims nothing yet */
	struct arp_target *c = arp_targets.lookup(&spa);
	if (!c) {
		struct arp_target fresh = {};
		__builtin_memcpy(fresh.mac, buf + 22, 6);
		fresh.replies = 1;
		fresh.claimer_slot = slot;
		arp_targets.update(&spa, &fresh);
		return;
	}
	__sync_fetch_and_add(&c->replies, 1);
	const __u8 zero[6] = {};
	if (same_mac(c->mac, zero)) {
		__builtin_memcpy(c->mac, buf + 22, 6);
		c->claimer_slot = slot;
	} else if (!same_mac(c->mac, buf + 22)) {
		__sync_fetch_and_add(&c->conflicts, 1);
		__builtin_memcpy(c->other_mac, buf + 22, 6);
		c->other_slot = slot;
	}
}

/* A flooded frame entering the bridge: new, or back again? */
static __always_inline void flood_ingress(__u32 slot, struct port_ctrs *pc, __u32 ifindex,
					  const void *start, __u32 wire, const __u64 *words, int is_arp,
					  __u64 now)
{
	__u64 fp = fingerprint(words, wire);
	struct flood_seen *seen = flood_fingerprints.lookup(&fp);
	/* A copy entering through the port the frame first came in by is that
	 * host repeating itself (GARP bursts, retransmits): the bridge never sends
	 * a frame back out of its ingress port, so no loop returns it there. */
	if (seen && now - seen->ts_ns < LOOP_WINDOW_NS && slot != seen->in_slot &&
	    (seen->out_mask[0] | seen->out_mask[1])) {
		__u64 bit = 1ULL << (slot & 63);
		__u64 mask = slot < 64 ? seen->out_mask[0] : seen->out_mask[1];
		/* 1: it left through this very port; 2: it left elsewhere, came back here */
		__u16 how = (mask & bit) ? 1 : 2;
		count(pc, how == 1 ? PC_RETURNS : PC_REENTRIES, 1);
		if (is_arp)
			count(pc, PC_ARP_DUPLICATES, 1);
		frame_event(EVENT_LOOP, ifindex, start, wire, how, seen->in_ifindex, now);
		seen->ts_ns = now;
		return;
	}
	/* New (or a host repeating itself on its own port): remember where it entered. */
	struct flood_seen fresh = {};
	fresh.ts_ns = now;
	fresh.in_slot = slot;
	fresh.in_ifindex = ifindex;
	flood_fingerprints.update(&fp, &fresh);
}

/* A frame on a watched device, in one direction. */
struct hit {
	__u32 watch;      /* watch value (0: not ours) */
	__u32 slot;
	__u32 ifindex;
	__u32 wire;       /* frame size from the MAC header */
	const void *start;
	__u64 now;
	struct port_ctrs *pc;  /* this CPU's counters of the port */
};

/* The shared first steps of both hooks: is the device ours, and count the
 * frame in `packets` and `packets + 1` (the matching bytes counter). */
static __always_inline int port_hit(const void *skb, int packets, struct hit *h)
{
	h->watch = watched((const void *)read_u64(skb + SKB_DEV_OFF), &h->ifindex);
	if (!h->watch)
		return 0;
	h->slot = (h->watch >> WATCH_SLOT_SHIFT) & (MAX_PORTS - 1);
	h->now = bpf_ktime_get_ns();
	h->start = frame_start(skb, &h->wire);
	__u32 slot = h->slot;
	h->pc = port_counters.lookup(&slot);
	count(h->pc, packets, 1);
	count(h->pc, packets + 1, h->wire);
	return 1;
}

RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	struct hit h = {};
	if (!port_hit((const void *)ctx->args[ARG_RX_SKB], PC_RX_PACKETS, &h))
		return 0;
	__u32 w = h.watch, slot = h.slot, ifindex = h.ifindex, wire = h.wire;
	const void *start = h.start;
	__u64 now = h.now;
	if (w & WATCH_BRIDGE)
		return 0;  /* br_pass_frame_up(): delivered to the bridge's own stack */

	__u64 words[FINGERPRINT_BYTES / 8] = {};
	if (bpf_probe_read_kernel(words, sizeof(words), start) != 0)
		return 0;
	const __u8 *buf = (const __u8 *)words;
	int is_arp = buf[12] == 0x08 && buf[13] == 0x06;
	if (is_arp) {
		count(h.pc, PC_RX_ARP, 1);
		arp_seen(slot, h.pc, buf, now);
	}
	if (is_own_mac(buf + 6)) {
		/* br_fdb_update() would log "received packet on X with own address
		 * as source address" (rate-limited); this is the exact count. */
		count(h.pc, PC_ECHOES, 1);
		frame_event(EVENT_ECHO, ifindex, start, wire, 0, 0, now);
	}
	if (!(buf[0] & 1))
		return 0;  /* unicast: no fingerprint needed */
	if ((buf[0] & buf[1] & buf[2] & buf[3] & buf[4] & buf[5]) == 0xff)
		count(h.pc, PC_RX_BROADCAST, 1);
	else
		count(h.pc, PC_RX_MULTICAST, 1);
	flood_ingress(slot, h.pc, ifindex, start, wire, words, is_arp, now);
	return 0;
}

RAW_TRACEPOINT_PROBE(net_dev_queue)
{
	struct hit h = {};
	if (!port_hit((const void *)ctx->args[ARG_TX_SKB], PC_TX_PACKETS, &h))
		return 0;
	__u32 w = h.watch, slot = h.slot, wire = h.wire;
	const void *start = h.start;
	__u64 now = h.now;

	if (w & WATCH_BRIDGE) {
		/* The host's own stack sends through the bridge (br_dev_xmit()).
		 * Its ARP replies answer requests seen on the ports, so they count
		 * as claims. */
		__u64 arp[FINGERPRINT_BYTES / 8] = {};
		if (bpf_probe_read_kernel(arp, sizeof(arp), start) == 0) {
			const __u8 *b = (const __u8 *)arp;
			if (b[12] == 0x08 && b[13] == 0x06)
				arp_seen(0, h.pc, b, now);
		}
		return 0;
	}
	__u64 words[FINGERPRINT_BYTES / 8] = {};
	if (bpf_probe_read_kernel(words, sizeof(words), start) != 0 || !(words[0] & 1))
		return 0;  /* unicast (I/G bit of the first byte clear): no fingerprint */
	__u64 fp = fingerprint(words, wire);
	struct flood_seen *seen = flood_fingerprints.lookup(&fp);
	if (!seen) {
		struct flood_seen fresh = {};
		fresh.ts_ns = now;
		fresh.in_slot = 0;  /* not seen entering: the bridge itself sent it */
		flood_fingerprints.update(&fp, &fresh);
		seen = flood_fingerprints.lookup(&fp);
		if (!seen)
			return 0;
	}
	if (slot < 64)
		__sync_fetch_and_or(&seen->out_mask[0], 1ULL << slot);
	else
		__sync_fetch_and_or(&seen->out_mask[1], 1ULL << (slot - 64));
	return 0;
}
