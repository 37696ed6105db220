// SPDX-License-Identifier: GPL-2.0
/*
 * port_ndp.bpf.h - IPv6 neighbour discovery on the wire (RFC 4861), per
 * address (ndp_targets, struct ndp_target of brtrace.h): solicitations, DAD
 * probes, advertisements and who sent them, router advertisements
 */
#ifndef BRTRACE_PORT_NDP_BPF_H
#define BRTRACE_PORT_NDP_BPF_H
#include "port_hit.bpf.h"
#include "port_echo.bpf.h"

/* IPv6 neighbour discovery on the wire, per address (brtrace.h says why a
 * second table). */
BPF_ARRAY(ndp_targets, struct ndp_target, NDP_TARGETS_MAX);

/* The ICMPv6 neighbour discovery type of an untagged IPv6 frame whose next
 * header is ICMPv6 (no extension headers: RFC 4861 forbids none, but Linux
 * and every stack we know send NDP without them), else 0. `buf` holds
 * ND_FRAME_LEN bytes. */
static __always_inline __u8 nd_type(const __u8 *buf)
{
	if (buf[12] != 0x86 || buf[13] != 0xdd || buf[20] != 58)
		return 0;
	__u8 type = buf[54];
	return type >= 133 && type <= 136 ? type : 0;
}

/* Count a neighbour discovery frame entering a port: 133 RS, 134 RA, 135 NS
 * (from the unspecified address ::, bytes 22..37, a DAD probe), 136 NA.
 * Returns the counter its copies coming back count in. */
static __always_inline int nd_seen(struct hit *h, const __u8 *buf, __u8 type)
{
	if (type == 135) {
		__u64 a, b;
		__builtin_memcpy(&a, buf + 22, 8);
		__builtin_memcpy(&b, buf + 30, 8);
		count(h->pc, PC_NDP_NS, 1);
		if (!(a | b)) {
			count(h->pc, PC_NDP_DAD, 1);
			return PC_NDP_DAD_BACK;
		}
	} else {
		count(h->pc, type == 136 ? PC_NDP_NA : type == 133 ? PC_NDP_RS : PC_NDP_RA, 1);
	}
	return PC_NDP_DUPLICATES;
}

/* The entry of IPv6 address `a` (two words, network order; never ::), made
 * if missing, as arp_entry() does for IPv4. The set comes from the address's
 * words folded together: the low 24 bits (what solicited-node groups and
 * interface identifiers vary in) reach the hash whatever the prefix. */
static __always_inline struct ndp_target *ndp_entry(const __u64 *a)
{
	if (!(a[0] | a[1]))
		return NULL;  /* :: marks an empty way */
	__u64 x = a[0] ^ a[1];
	__u32 fold = (__u32)x ^ (__u32)(x >> 32);
	__u32 base = ((fold * 2654435761U) >> 16) % (NDP_TARGETS_MAX / NDP_WAYS) * NDP_WAYS;
	struct ndp_target *victim = NULL;
	__u64 least = ~0ULL;
#pragma unroll
	for (int w = 0; w < NDP_WAYS; w++) {
		__u32 idx = base + w;
		struct ndp_target *e = ndp_targets.lookup(&idx);
		if (!e)
			continue;
		__u64 e0, e1;
		__builtin_memcpy(&e0, e->addr, 8);
		__builtin_memcpy(&e1, e->addr + 8, 8);
		if (e0 == a[0] && e1 == a[1])
			return e;
		__u64 used = (e0 | e1) ? e->solicits + e->dad_probes + e->adverts + e->routers + 1 : 0;
		if (used < least) {
			least = used;
			victim = e;
		}
	}
	if (!victim)
		return NULL;
	if (least)
		stat_inc(STAT_NDP_EVICTED);
	__builtin_memset(victim, 0, sizeof(*victim));
	__builtin_memcpy(victim->addr, a, 16);
	return victim;
}

/* What a solicitation or advertisement carries past the first ND_FRAME_LEN
 * bytes, read only for those (tcx: nd_body(), in place; tracepoints:
 * tp_ndp(), one more kernel read). */
struct nd_body {
	__u64 target[2];  /* bytes 62..77: the target address */
	__u8 flags;       /* byte 58: an advertisement's R (0x80), S (0x40), O (0x20) */
	__u8 ok;          /* the frame holds them */
};

/* A neighbour discovery frame of `type` (nd_type()) in the per-address table,
 * after flood_ingress() said whether it is a loop copy. `buf` holds
 * ND_FRAME_LEN bytes; `b` the target of a solicitation or advertisement.
 * Router solicitations name no address and are not kept. */
static __always_inline void ndp_seen(struct hit *h, const __u8 *buf, __u8 type,
				     const struct nd_body *b)
{
	__u64 key[2];
	if (type == 134) {
		__builtin_memcpy(key, buf + 22, 16);  /* an RA's source: the router's link-local address */
	} else if (type == 135 || type == 136) {
		if (!b->ok)
			return;
		key[0] = b->target[0];
		key[1] = b->target[1];
	} else {
		return;
	}
	struct ndp_target *e = ndp_entry(key);
	if (!e)
		return;
	__u32 slot = h->slot;
	if (h->loop_how && !(h->loop_how & LOOP_RUN)) {
		/* A copy says nothing new about who asks or answers, only where
		 * it came back (a reflected RA, a looped solicitation). An origin
		 * copy may be the host's own frame: counted as before. */
		__sync_fetch_and_add(&e->copies, 1);
		e->echo_slot = slot;
		return;
	}
	__u8 mac[6];
	__builtin_memcpy(mac, buf + 6, 6);
	if (type == 135) {
		__u64 s0, s1;
		__builtin_memcpy(&s0, buf + 22, 8);
		__builtin_memcpy(&s1, buf + 30, 8);
		if (s0 | s1) {
			__sync_fetch_and_add(&e->solicits, 1);
			e->asker_slot = slot;
		} else {
			__sync_fetch_and_add(&e->dad_probes, 1);
			__builtin_memcpy(e->prober_mac, mac, 6);
			e->prober_slot = slot;
			e->dad_tick = flood_tick();
		}
		return;
	}
	if (type == 136) {
		__sync_fetch_and_add(&e->adverts, 1);
		if (b->flags & 0x40)
			__sync_fetch_and_add(&e->solicited, 1);
		if (b->flags & 0x20)
			__sync_fetch_and_add(&e->overrides, 1);
		/* RFC 4862 5.4.3: a host holding the address answers a probe with
		 * an advertisement to all nodes, and the prober, which waits
		 * RetransTimer (1 s) after its probe, gives the address up. */
		if (e->dad_probes && !same_mac(e->prober_mac, mac) &&
		    (__s32)(flood_tick() - e->dad_tick) < LOOP_WINDOW_TICKS) {
			__sync_fetch_and_add(&e->dad_answered, 1);
			__builtin_memcpy(e->answer_mac, mac, 6);
			e->answer_slot = slot;
		}
	} else {
		__sync_fetch_and_add(&e->routers, 1);
	}
	const __u8 zero[6] = {};
	if (same_mac(e->mac, zero)) {
		__builtin_memcpy(e->mac, mac, 6);
		e->claimer_slot = slot;
	} else if (!same_mac(e->mac, mac)) {
		__sync_fetch_and_add(&e->conflicts, 1);
		__builtin_memcpy(e->other_mac, mac, 6);
		e->other_slot = slot;
	} else if (slot != e->claimer_slot) {
		__sync_fetch_and_add(&e->elsewhere, 1);
		e->echo_slot = slot;
	}
}

#endif /* BRTRACE_PORT_NDP_BPF_H */
