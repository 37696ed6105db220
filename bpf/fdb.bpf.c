// SPDX-License-Identifier: GPL-2.0
/*
 * fdb.bpf.c - FDB entries created or moved between ports (MAC flapping).
 *
 * Hook: raw tracepoint bridge:br_fdb_update. br_fdb_update() fires it only
 * when an entry is created or changes port (never for a refresh, and never for
 * the own-address case, which returns earlier), so a steady rate for one MAC
 * means it is flapping between ports.
 *
 * Userspace reads `fdb_moves` (LRU, bounded) for counts; `events` carries a
 * rate-limited record per update with the port it moved to.
 */
#include "common.bpf.h"

BPF_TABLE("lru_hash", struct fdb_key, struct fdb_move, fdb_moves, FDB_KEYS_MAX);
BPF_PERCPU_ARRAY(fdb_port_counters, __u64, MAX_PORTS);

RAW_TRACEPOINT_PROBE(br_fdb_update)
{
	const void *br = (const void *)ctx->args[ARG_FDB_BR];
	const void *port = (const void *)ctx->args[ARG_FDB_PORT];
	const __u8 *addr = (const __u8 *)ctx->args[ARG_FDB_ADDR];
	__u16 vid = (__u16)ctx->args[ARG_FDB_VID];
	if (!br || !port)
		return 0;
	__u32 br_ifindex = 0;
	__u32 bw = watched((const void *)read_u64(br + BR_DEV_OFF), &br_ifindex);
	if (!(bw & WATCH_BRIDGE))
		return 0;
	__u32 ifindex = 0;
	__u32 pw = watched((const void *)read_u64(port + BRPORT_DEV_OFF), &ifindex);
	__u32 slot = (pw >> WATCH_SLOT_SHIFT) & (MAX_PORTS - 1);
	__u64 now = bpf_ktime_get_ns();

	struct fdb_key key = {};
	bpf_probe_read_kernel(key.mac, 6, addr);
	key.vlan = vid;
	struct fdb_move *m = fdb_moves.lookup(&key);
	if (m) {
		__sync_fetch_and_add(&m->count, 1);
		m->prev_slot = m->slot;
		m->slot = slot;
		m->last_ns = now;
	} else {
		struct fdb_move fresh = {};
		fresh.count = 1;
		fresh.slot = slot;
		fresh.last_ns = now;
		if (fdb_moves.update(&key, &fresh) != 0)
			stat_inc(STAT_FDB_KEYS_FULL);
	}
	__u64 *c = fdb_port_counters.lookup(&slot);
	if (c)
		*c += 1;

	struct fdb_event *ev = event_reserve(EVENT_FDB, sizeof(struct fdb_event), now);
	if (!ev)
		return 0;
	ev->kind = EVENT_FDB;
	ev->pad0 = 0;
	ev->vlan = vid;
	__builtin_memcpy(ev->mac, key.mac, 6);
	ev->pad1 = 0;
	ev->ifindex = ifindex;
	ev->pad2 = 0;
	ev->ts_ns = now;
	event_submit(EVENT_FDB, ev);
	return 0;
}
