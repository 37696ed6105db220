// SPDX-License-Identifier: GPL-2.0
/*
 * neigh.bpf.c - neighbour (ARP/NDP) entries: resolution, failure, address changes.
 *
 * Hooks (raw tracepoints, kernel >= 5.10 with BTF), all passing the entry:
 *   neigh:neigh_update_done      after neigh_update() changed an entry
 *   neigh:neigh_timer_handler    after neigh_timer_handler(): retries, and the
 *                                INCOMPLETE -> FAILED step, which happens there
 *                                without any neigh_update()
 *   neigh:neigh_event_send_done  after __neigh_event_send(): NONE -> INCOMPLETE
 *   neigh:neigh_event_send_dead  a packet queued on a dead entry
 * Each hook just observes the entry's current state and link-layer address and
 * compares them with what it saw last (`neigh_entries`, bounded LRU): a
 * transition is counted once whichever hook sees it first.
 *
 * The plain neigh:* tracepoints carry device names, not namespaces; the entry's
 * device pointer gives the namespace (net->ns.inum). Without ALL_NETNS only
 * entries on the watched bridge and its ports count.
 */
#include "common.bpf.h"

BPF_TABLE("lru_hash", struct neigh_key, struct neigh_stats, neigh_entries, NEIGH_KEYS_MAX);

/* include/uapi/linux/neighbour.h, stable ABI */
#define NUD_INCOMPLETE 0x01
#define NUD_REACHABLE 0x02
#define NUD_STALE 0x04
#define NUD_FAILED 0x20
#define NUD_VALID 0xde

static __always_inline void observe(const void *n, __u64 now)
{
	if (!n)
		return;
	const void *dev = (const void *)read_u64(n + NEIGH_DEV_OFF);
	if (!dev)
		return;
	struct neigh_key key = {};
#if ALL_NETNS
	key.ifindex = read_u32(dev + DEV_IFINDEX_OFF);
	const void *net = (const void *)read_u64(dev + DEV_ND_NET_OFF);
	key.netns = net ? read_u32(net + NET_NS_INUM_OFF) : 0;
#else
	key.ifindex = watched_ifindex(dev);
	if (!key.ifindex)
		return;
	key.netns = NETNS_INUM;
#endif
	const void *tbl = (const void *)read_u64(n + NEIGH_TBL_OFF);
	key.family = tbl ? (__u8)read_u32(tbl + TBL_FAMILY_OFF) : 0;
	bpf_probe_read_kernel(key.addr, key.family == 10 ? 16 : 4, n + NEIGH_KEY_OFF);

	__u8 state = 0;
	bpf_probe_read_kernel(&state, 1, n + NEIGH_STATE_OFF);
	__u8 ha[6] = {};
	bpf_probe_read_kernel(ha, 6, n + NEIGH_HA_OFF);

	struct neigh_stats *st = neigh_entries.lookup(&key);
	if (!st) {
		struct neigh_stats fresh = {};
		neigh_entries.update(&key, &fresh);
		st = neigh_entries.lookup(&key);
		if (!st)
			return;
	}
	__u8 old = st->state;
	int changed_addr = 0;
	if ((state & NUD_VALID) && (old & NUD_VALID)) {
		changed_addr = ha[0] != st->lladdr[0] || ha[1] != st->lladdr[1] || ha[2] != st->lladdr[2] ||
			       ha[3] != st->lladdr[3] || ha[4] != st->lladdr[4] || ha[5] != st->lladdr[5];
	}
	if (state == old && !changed_addr)
		return;
	if (state != old) {
		if (state == NUD_FAILED)
			__sync_fetch_and_add(&st->failed, 1);
		else if (state == NUD_INCOMPLETE)
			__sync_fetch_and_add(&st->incomplete, 1);
		else if (state == NUD_REACHABLE)
			__sync_fetch_and_add(&st->reachable, 1);
		else if (state == NUD_STALE)
			__sync_fetch_and_add(&st->stale, 1);
	}
	if (changed_addr) {
		__sync_fetch_and_add(&st->lladdr_changes, 1);
		__builtin_memcpy(st->prev_lladdr, st->lladdr, 6);
	}
	struct neigh_event *ev = event_reserve(EVENT_NEIGH, sizeof(struct neigh_event), now);
	if (ev) {
		ev->kind = EVENT_NEIGH;
		ev->old_state = old;
		ev->new_state = state;
		ev->family = key.family;
		ev->netns = key.netns;
		ev->ifindex = key.ifindex;
		ev->pad = 0;
		ev->ts_ns = now;
		__builtin_memcpy(ev->addr, key.addr, 16);
		__builtin_memcpy(ev->old_lladdr, st->lladdr, 6);
		__builtin_memcpy(ev->new_lladdr, ha, 6);
		__builtin_memset(ev->pad2, 0, sizeof(ev->pad2));
		event_submit(EVENT_NEIGH, ev);
	}
	st->state = state;
	if (state & NUD_VALID)
		__builtin_memcpy(st->lladdr, ha, 6);
	st->last_ns = now;
}

RAW_TRACEPOINT_PROBE(neigh_update_done)
{
	observe((const void *)ctx->args[ARG_NEIGH_UPDATE_DONE], bpf_ktime_get_ns());
	return 0;
}

RAW_TRACEPOINT_PROBE(neigh_timer_handler)
{
	observe((const void *)ctx->args[ARG_NEIGH_TIMER], bpf_ktime_get_ns());
	return 0;
}

RAW_TRACEPOINT_PROBE(neigh_event_send_done)
{
	observe((const void *)ctx->args[ARG_NEIGH_SEND_DONE], bpf_ktime_get_ns());
	return 0;
}

RAW_TRACEPOINT_PROBE(neigh_event_send_dead)
{
	observe((const void *)ctx->args[ARG_NEIGH_SEND_DEAD], bpf_ktime_get_ns());
	return 0;
}
