// SPDX-License-Identifier: GPL-2.0
/*
 * port_arp.bpf.h - ARP on the wire, per IPv4 address asked for or claimed
 * (arp_targets, struct arp_target of brtrace.h): who asked, who answered,
 * from which port, and a second MAC claiming the same address
 */
#ifndef BRTRACE_PORT_ARP_BPF_H
#define BRTRACE_PORT_ARP_BPF_H
#include "port_hit.bpf.h"
#include "port_echo.bpf.h"

/* ARP on the wire, per IPv4 address asked for or claimed (brtrace.h). */
BPF_ARRAY(arp_targets, struct arp_target, ARP_TARGETS_MAX);

static __always_inline int is_arp(const __u8 *buf)
{
	return buf[12] == 0x08 && buf[13] == 0x06;
}

/* The entry of IPv4 address `ip` (never 0), made if missing: its set's way
 * that holds it, else an empty way, else the least used one, reset. Two CPUs
 * making one new address at once may give it two ways; userspace adds them. */
static __always_inline struct arp_target *arp_entry(__u32 ip)
{
	if (!ip)
		return NULL;  /* 0 marks an empty way */
	__u32 base = ((ip * 2654435761U) >> 16) % (ARP_TARGETS_MAX / ARP_WAYS) * ARP_WAYS;
	struct arp_target *victim = NULL;
	__u64 least = ~0ULL;
#pragma unroll
	for (int w = 0; w < ARP_WAYS; w++) {
		__u32 idx = base + w;
		struct arp_target *e = arp_targets.lookup(&idx);
		if (!e)
			continue;
		if (e->ip == ip)
			return e;
		__u64 used = e->ip ? e->requests + e->replies + 1 : 0;
		if (used < least) {
			least = used;
			victim = e;
		}
	}
	if (!victim)
		return NULL;
	if (victim->ip)
		stat_inc(STAT_ARP_EVICTED);
	__builtin_memset(victim, 0, sizeof(*victim));
	victim->ip = ip;
	return victim;
}

/* An untagged Ethernet ARP frame for IPv4 (RFC 826 offsets from the frame
 * start: op 20, sender MAC 22, sender IP 28, target IP 38; `buf` holds
 * ARP_FRAME_LEN bytes). Requests count against the target IP; replies and
 * gratuitous ARPs are claims of the sender IP, and a claim by a second MAC
 * is a conflict. */
static __always_inline void arp_seen(__u32 slot, struct port_ctrs *pc, const __u8 *buf)
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
	/* One arp_entry() call site: it is inlined (bcc has no BPF-to-BPF
	 * calls), and every copy is code the packet path has to carry. A
	 * request counts against its target; a claim (ip 0: an ARP probe,
	 * RFC 5227, claims nothing yet) against its sender. */
	int request = op == 1 && !gratuitous;
	struct arp_target *e = arp_entry(request ? tpa : spa);
	if (!e)
		return;
	if (request) {
		__sync_fetch_and_add(&e->requests, 1);
		e->asker_slot = slot;
		return;
	}
	__u8 sha[6];
	__builtin_memcpy(sha, buf + 22, 6);
	__sync_fetch_and_add(&e->replies, 1);
	const __u8 zero[6] = {};
	if (same_mac(e->mac, zero)) {
		__builtin_memcpy(e->mac, sha, 6);
		e->claimer_slot = slot;
	} else if (!same_mac(e->mac, sha)) {
		__sync_fetch_and_add(&e->conflicts, 1);
		__builtin_memcpy(e->other_mac, sha, 6);
		e->other_slot = slot;
	}
}

#endif /* BRTRACE_PORT_ARP_BPF_H */
