// SPDX-License-Identifier: GPL-2.0
/*
 * drops.bpf.c - who freed which frame on a bridge, and why.
 *
 * Hook: raw tracepoint skb:kfree_skb (kernel >= 5.17 for the reason argument).
 * The raw tracepoint is used rather than the classic one so that no header's
 * `enum skb_drop_reason` is needed: argument positions (ARG_SKB, ARG_LOCATION,
 * ARG_REASON) come from the kernel's btf_trace_kfree_skb prototype.
 *
 * Counts go to `drop_counts` (per-CPU hash, never cleared); a rate-limited
 * sample of frames goes to the `events` ring buffer with its first FRAME_BYTES
 * bytes so userspace can decode MACs, VLAN, ARP and IP headers.
 *
 * Caveat: skb->dev at kfree_skb is the ingress port for bridge-ingress drops,
 * the egress port for egress drops, and the sending device for veth MTU drops
 * (__dev_forward_skb() frees before the peer sees the frame).
 */
#include "common.bpf.h"

BPF_PERCPU_HASH(drop_counts, struct drop_key, __u64, DROP_KEYS_MAX);

static __always_inline void sample(const void *skb, struct drop_key *key, __u64 now)
{
	struct drop_event *ev = event_reserve(EVENT_DROP, sizeof(struct drop_event), now);
	if (!ev)
		return;
	ev->kind = EVENT_DROP;
	ev->ethertype = key->ethertype;
	ev->vlan_tci = KREAD(__u16, BTF_ID_SK_BUFF, skb, SKB_VLAN_TCI_OFF);
	ev->pad0 = 0;
	ev->ifindex = key->ifindex;
	ev->reason = key->reason;
	ev->pad1 = 0;
	ev->ts_ns = now;
	ev->location = key->location;

	__u32 wire = 0;
	const void *start = frame_start(skb, &wire);
	ev->wire_len = wire;
	__u32 n = wire < FRAME_BYTES ? wire : FRAME_BYTES;
	ev->frame_len = n;
	if (bpf_probe_read_kernel(ev->frame, FRAME_BYTES, start) != 0)
		ev->frame_len = 0;
	event_submit(EVENT_DROP, ev);
}

#if NEIGH_DROPS
/* With `brtrace neigh --all-netns`: packets the neighbour layer dropped in
 * any namespace (a guest's queue when its gateway never answered), by
 * (netns, ifindex, reason). REASON_NEIGH_* are the running kernel's values
 * (from its reason table; -1 when it has no such reason). */
BPF_HASH(neigh_drops, struct neigh_drop_key, __u64, NEIGH_KEYS_MAX);

static __always_inline void neigh_drop(const void *dev, __u32 reason)
{
	if (reason != (__u32)REASON_NEIGH_FAILED && reason != (__u32)REASON_NEIGH_QUEUEFULL &&
	    reason != (__u32)REASON_NEIGH_DEAD)
		return;
	struct neigh_drop_key k = {};
	k.reason = reason;
	k.ifindex = dev ? KREAD(__u32, BTF_ID_NET_DEVICE, dev, DEV_IFINDEX_OFF) : 0;
	const void *net = dev ? (const void *)KREAD(__u64, BTF_ID_NET_DEVICE, dev, DEV_ND_NET_OFF) : NULL;
	k.netns = net ? KREAD(__u32, BTF_ID_NET, net, NET_NS_INUM_OFF) : 0;
	__u64 one = 1;
	__u64 *n = neigh_drops.lookup(&k);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		neigh_drops.update(&k, &one);
}
#endif

RAW_TRACEPOINT_PROBE(kfree_skb)
{
	const void *skb = (const void *)ctx->args[ARG_SKB];
	const void *dev = SKB_DEV(skb);
	__u32 ifindex = watched_ifindex(dev);
#if NEIGH_DROPS
	neigh_drop(dev, (__u32)ctx->args[ARG_REASON]);
#endif
	if (!ifindex)
		return 0;

	struct drop_key key = {};
	key.location = ctx->args[ARG_LOCATION];
	key.ifindex = ifindex;
	key.reason = (__u32)ctx->args[ARG_REASON];
	key.ethertype = bpf_ntohs(KREAD(__u16, BTF_ID_SK_BUFF, skb, SKB_PROTOCOL_OFF));

	stat_inc(STAT_DROPS_SEEN);
	__u64 one = 1;
	__u64 *count = drop_counts.lookup(&key);
	if (count)
		*count += 1;
	else if (drop_counts.update(&key, &one) != 0)
		stat_inc(STAT_DROP_KEYS_FULL);

	sample(skb, &key, bpf_ktime_get_ns());
	return 0;
}
