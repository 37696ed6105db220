// SPDX-License-Identifier: GPL-2.0
/*
 * port_flood.bpf.h - flood fingerprints: every flooded frame remembered, so
 * that a copy coming back (a loop, a reflecting port) is told from a new frame
 * and judged against the frame's previous pass
 */
#ifndef BRTRACE_PORT_FLOOD_BPF_H
#define BRTRACE_PORT_FLOOD_BPF_H
#include "port_hit.bpf.h"
#include "fingerprint.bpf.h"

/*
 * Flooded frames, remembered so that one coming back is told from a new one.
 *
 * flood_tags / flood_paths: one entry per fingerprint slot (its low bits; a
 * newer frame displaces an older one of the same slot). A tag is 8 bytes so
 * that reading it stays cheap; what the frame did (flood_paths) is read only
 * when its tag says it was seen before.
 *
 * Most flooded frames are new, and for those the table is only written:
 * stores do not wait for the cache line, loads do (a read of one random entry
 * of the 640 KiB table cost ~115 ns per distinct flooded frame here). Two
 * small, hot structures say when a frame cannot be a return, so its entry is
 * written without being read:
 *   flood_sources  per source MAC, the port it last entered by and when it
 *                  last entered by another one (or a copy of its frames came
 *                  in). A source that has entered by this one port only for
 *                  a whole LOOP_WINDOW_NS sends new frames: a copy of one of
 *                  them coming back by another port would have marked it, and
 *                  a counted copy marks it again, so a loop keeps its sources
 *                  checked. Copies coming back by their source's own port (the
 *                  frames of hosts behind a port with a loop beyond it) would
 *                  never mark it, so steady sources are checked anyway one
 *                  tick in STEADY_CHECK, and a copy found marks it.
 *                  Shared by all CPUs: a frame may come back on another CPU
 *                  than the one it entered on.
 *   flood_current  per CPU, the flooded frame let in last: br_flood() sends
 *                  its clones out of the ports right after, on the same CPU,
 *                  so their egress adds the port to this copy of its out-mask
 *                  and stores the whole mask.
 *
 * Shared entries are written without a lock: two CPUs flooding two frames of
 * one slot in the same instant may mix their entries, which costs at most one
 * frame's verdict.
 */
struct flood_tag {
	__u32 tag;   /* the fingerprint's high 32 bits */
	__u32 tick;  /* when its latest pass entered the bridge (flood_tick()) */
};
/* What the frame did: where it was first seen, where its latest pass entered
 * and which ports that pass left by. `pass` packs four bytes so that a new
 * frame's entry is written with as few stores as before (FP_*). */
struct flood_path {
	__u64 out_mask[MAX_PORTS / 64]; /* slots its latest pass left through */
	__u32 in_ifindex;                /* where its latest pass entered (0: the bridge) */
	__u32 other_tick;                /* when the pass before entered, if by another port */
	__u32 pass;                      /* FP_LAST | FP_ORIGIN | FP_REPEATS | FP_OTHER | FP_RUN */
	__u32 run_tick;                  /* when the run of passes at its origin (FP_RUN) began */
};                                       /* 32 bytes: no entry straddles two cache lines */
#define FP_LAST(x) ((x) & 0xff)             /* slot its latest pass entered by */
#define FP_ORIGIN(x) (((x) >> 8) & 0xff)    /* slot it was first seen entering by */
#define FP_REPEATS(x) (((x) >> 16) & 0xff)  /* times it came in again by FP_ORIGIN as a host repeat */
#define FP_OTHER (1U << 24)                 /* other_tick is set */
/* Passes in a row that entered by FP_ORIGIN and left by no port that could
 * send them back, since run_tick (at most HOST_REPEATS_MAX: a count, then a flag). */
#define FP_RUN(x) (((x) >> 25) & 0x7f)
#define FP_RUN_BITS(n) ((__u32)(n) << 25)
#define FP_PASS(last, origin, repeats) ((last) | ((origin) << 8) | ((repeats) << 16))
BPF_ARRAY(flood_tags, struct flood_tag, FLOOD_KEYS_MAX);
BPF_ARRAY(flood_paths, struct flood_path, FLOOD_KEYS_MAX);

struct flood_source {
	__u64 key;   /* source MAC | slot it entered by << 48 */
	__u32 tick;  /* when it last entered by another slot, or came back */
	__u32 pad;
};
/* Steady sources are checked anyway during one tick in this many. Nothing
 * else would ever mark a source whose copies come back only by the port its
 * frames enter by (a loop beyond that port); a copy found marks it, and from
 * then on every frame of it is checked. By the clock, not by a count kept in
 * the shared entry: a store there per frame would bounce its cache line
 * between CPUs flooding frames of one source. Power of two. */
#define STEADY_CHECK 64
BPF_ARRAY(flood_sources, struct flood_source, FLOOD_SOURCES);

struct flood_current {
	__u64 fp;                        /* 0: none (the next egress reads the table) */
	__u64 out_mask[MAX_PORTS / 64];
	/* tcx: which buffer holds it. br_flood() sends clones (skb_clone()
	 * shares the data), so a clone leaving with the same data address,
	 * length and ingress ifindex (skb_iif, 0 for the bridge's own) is this
	 * frame, without a fingerprint. A buffer reused later holds another
	 * frame, but that one came in after, and replaced this entry, or the
	 * bridge sent it, and its skb_iif is 0 where a port's frame has the port's. */
	__u64 data;
	__u32 len;
	__u32 iif;
};
BPF_PERCPU_ARRAY(flood_current, struct flood_current, 1);

/* Flood table ages are in jiffies: bpf_jiffies64() is one load, which the
 * verifier inlines (do_misc_fixups()), where a clock read is a helper call
 * per flooded frame (30-35 ns where kernel returns go through a mitigation
 * thunk). JIFFY_NS, the tick length, is the loader's -D define (the
 * resolution of CLOCK_MONOTONIC_COARSE). Kept in a u32 (wraps after 49 days
 * at HZ 1000); ages are compared as signed differences, so a tick another CPU
 * wrote a moment later is not "old". */
#define LOOP_WINDOW_TICKS ((__s32)(LOOP_WINDOW_NS / JIFFY_NS))

static __always_inline __u32 flood_tick(void)
{
	return (__u32)bpf_jiffies64();
}

/* A frame's two entries, by fingerprint; 0 only if the verifier's NULL checks fail. */
static __always_inline int flood_entries(__u64 fp, struct flood_tag **t, struct flood_path **p)
{
	__u32 idx = (__u32)fp & (FLOOD_KEYS_MAX - 1);
	*t = flood_tags.lookup(&idx);
	*p = flood_paths.lookup(&idx);
	return *t && *p;
}

/* Remember a frame as new: stores only. */
static __always_inline void flood_new(struct flood_tag *t, struct flood_path *p, __u64 fp,
				      __u32 tick, __u32 in_slot, __u32 in_ifindex)
{
	t->tag = (__u32)(fp >> 32);
	t->tick = tick;
	p->out_mask[0] = 0;
	p->out_mask[1] = 0;
	p->in_ifindex = in_ifindex;
	p->pass = FP_PASS(in_slot, in_slot, 0);
}

/* A copy of a known frame starts a new pass through the bridge at `slot`: its
 * egress fills the out-mask again. The time of the pass before is kept when
 * it entered by another port, for the round trip (flood_ingress()). */
static __always_inline void flood_pass(struct flood_tag *t, struct flood_path *p, __u32 tick,
				       __u32 slot, __u32 ifindex, __u32 repeats, __u32 run)
{
	__u32 pass = p->pass;
	__u32 other = pass & FP_OTHER;
	if (FP_LAST(pass) != slot) {
		p->other_tick = t->tick;
		other = FP_OTHER;
	}
	p->pass = FP_PASS(slot, FP_ORIGIN(pass), repeats) | other | FP_RUN_BITS(run);
	p->in_ifindex = ifindex;
	p->out_mask[0] = 0;
	p->out_mask[1] = 0;
	t->tick = tick;
}

/* This CPU's flooded frame is now `fp`; with tcx, also which buffer holds it
 * and the ifindex it entered the host by (skb_iif: at tc ingress the port
 * itself, __netif_receive_skb_core() sets it first; 0 if the host sent it). */
static __always_inline void flood_now(__u64 fp, struct hit *h)
{
	__u32 zero = 0;
	struct flood_current *cur = flood_current.lookup(&zero);
	if (!cur)
		return;
	cur->fp = fp;
	cur->out_mask[0] = 0;
	cur->out_mask[1] = 0;
#if PORT_HOOK_TCX
	cur->data = (__u64)(long)h->skb->data;
	cur->len = h->wire;
	cur->iif = h->skb->ingress_ifindex;
#endif
}

/* The record of source MAC `mac` (the frame's bytes 6..11 as a little-endian
 * u48, src_mac()), and whether that source has entered by `slot` only for a
 * whole window. A record that names another slot or MAC is taken over and
 * marked. */
static __always_inline struct flood_source *flood_source(__u64 mac, __u32 slot, __u32 tick,
							 int *steady)
{
	__u64 key = mac | ((__u64)slot << 48);
	__u32 idx = (__u32)((mac * 0x9E3779B97F4A7C15ULL) >> 40) & (FLOOD_SOURCES - 1);
	struct flood_source *s = flood_sources.lookup(&idx);
	*steady = 0;
	if (!s)
		return NULL;
	if (s->key != key) {
		s->key = key;
		s->tick = tick;
	} else if ((__s32)(tick - s->tick) >= LOOP_WINDOW_TICKS) {
		*steady = (tick & (STEADY_CHECK - 1)) != 0;
	}
	return s;
}

static __always_inline int mask_has(const __u64 *mask, __u32 slot)
{
	return (int)(((slot < 64 ? mask[0] : mask[1]) >> (slot & 63)) & 1);
}

/*
 * A flooded frame (fingerprint `fp`, source MAC `mac`) entering the bridge:
 * new, or a copy of one seen within the loop window?
 *
 * A copy is classified against the frame's previous pass, not its first one:
 * in a steady loop the copies travelling each way are byte-identical, and
 * brtrace may have started minutes into the storm, so "where it first came
 * in" is often just where brtrace first saw it. Per port it counts as
 *   returned    the previous pass left by this port (PC_RETURNS), or
 *   reentered   it did not (PC_REENTRIES: a loop beyond the port sends it
 *               again, though the bridge never flooded it back there),
 * and crossed (PC_CROSSINGS) when the previous pass entered by another port.
 * A copy entering by the port the frame was first seen on may be the host
 * behind it repeating itself (ARP retransmits, GARP bursts; the bridge never
 * sends a frame back out of its ingress port): PC_HOST_REPEATS, not copies
 * (the rule is at the test below). Which ports a loop runs through is decided in
 * userspace from these counts against what the bridge flooded out of each
 * port (tracer/diagnose.py, l2_loop()).
 */
static __always_inline void flood_ingress(struct hit *h, __u64 fp, __u64 mac, int dup)
{
	__u32 tick = flood_tick();
	struct flood_tag *t;
	struct flood_path *p;
	if (!flood_entries(fp, &t, &p))
		return;
	__u32 slot = h->slot;
	flood_now(fp, h);
	int steady;
	struct flood_source *src = flood_source(mac, slot, tick, &steady);
	if (steady || t->tag != (__u32)(fp >> 32) || (__s32)(tick - t->tick) >= LOOP_WINDOW_TICKS ||
	    !(p->out_mask[0] | p->out_mask[1])) {
		/* New: remember where it entered. */
		flood_new(t, p, fp, tick, slot, h->ifindex);
		return;
	}
	__u32 pass = p->pass;
	__u32 repeats = FP_REPEATS(pass);
	int origin = FP_ORIGIN(pass) == slot;
	int crossed = FP_LAST(pass) != slot;
	int sent = mask_has(p->out_mask, slot);
	/* At the frame's first port, after a pass that entered there too and did
	 * not leave there: the host behind it repeating itself, or a loop beyond
	 * the port bringing the frame round (nothing went out here, yet copies
	 * come in). Where brtrace first saw a frame of a storm that was already
	 * running (or ran while watch had these programs detached) is only where
	 * one of its copies came in, so this is the common case of a loop beyond
	 * a port. Told apart by pace: a host repeats a frame a handful of times
	 * (a GARP burst), a loop hundreds of times a second. The first
	 * HOST_REPEATS_MAX of a run within one window are the host's; more are
	 * PC_ORIGIN_COPIES, and userspace decides whether the port can have a
	 * loop beyond it. */
	if (origin && !crossed && !sent) {
		__u32 run = FP_RUN(pass);
		if (!run || (__s32)(tick - p->run_tick) >= LOOP_WINDOW_TICKS) {
			run = 0;
			p->run_tick = tick;
		}
		if (src)
			src->tick = tick;  /* checked until the run ends, either way */
		if (run < HOST_REPEATS_MAX) {
			count(h->pc, PC_HOST_REPEATS, 1);
			flood_pass(t, p, tick, slot, h->ifindex, repeats, run + 1);
			return;
		}
		/* Not among the ARP/NDP duplicates: it may be the host's own. */
		count(h->pc, PC_ORIGIN_COPIES, 1);
		h->loop_how = LOOP_COPY | LOOP_AT_ORIGIN | LOOP_RUN;
		h->loop_prev = p->in_ifindex;
		h->loop_gap = tick - t->tick;
		flood_pass(t, p, tick, slot, h->ifindex, repeats, run);
		return;
	}
	/* After a pass by another port, or one sent back out here, it may be
	 * the host resending a frame that a reflector returned, or a loop
	 * bringing the frame round: the first HOST_REPEATS_MAX such over the
	 * frame's life are taken for the host. */
	if (origin && repeats < HOST_REPEATS_MAX) {
		count(h->pc, PC_HOST_REPEATS, 1);
		flood_pass(t, p, tick, slot, h->ifindex, repeats + 1, 0);
		return;
	}
	count(h->pc, sent ? PC_RETURNS : PC_REENTRIES, 1);
	if (crossed)
		count(h->pc, PC_CROSSINGS, 1);
	if (dup >= 0)
		count(h->pc, dup, 1);   /* PC_ARP_DUPLICATES or PC_NDP_DUPLICATES */
	h->loop_how = LOOP_COPY | (sent ? LOOP_SENT : 0) | (crossed ? LOOP_CROSSED : 0) |
		      (origin ? LOOP_AT_ORIGIN : 0);
	h->loop_prev = p->in_ifindex;
	/* Round trip: since this port's own previous pass where the frame keeps
	 * coming in by one port (a reflector, a loop beyond), else since the pass
	 * before the previous one: two copies going round a loop in opposite
	 * directions enter by alternate ports, each by its own. */
	__u32 since = (!crossed || !(pass & FP_OTHER)) ? t->tick : p->other_tick;
	h->loop_gap = tick - since;
	if (src)
		src->tick = tick;  /* its next frames may come back too */
	flood_pass(t, p, tick, slot, h->ifindex, repeats, 0);
}

static __always_inline void mask_add(__u64 *mask, __u32 slot)
{
	if (slot < 64)
		mask[0] |= 1ULL << slot;
	else
		mask[1] |= 1ULL << (slot - 64);
}

/* One of the clones of the frame this CPU let in last leaves by h's port:
 * add it to this CPU's copy of the out-mask and store the mask whole,
 * without reading the entry. */
static __always_inline void flood_clone_out(struct flood_current *cur, struct flood_path *p,
					    const struct hit *h)
{
	mask_add(cur->out_mask, h->slot);
	p->out_mask[0] = cur->out_mask[0];
	p->out_mask[1] = cur->out_mask[1];
}

#if PORT_HOOK_TCX
/* A clone of this CPU's flooded frame leaving through a port (same buffer,
 * see flood_current): add the port to its out-mask and store the mask whole,
 * without a fingerprint. 0 if it is not such a clone. */
static __always_inline int flood_clone(struct hit *h)
{
	__u32 zero = 0;
	struct flood_current *cur = flood_current.lookup(&zero);
	struct __sk_buff *skb = h->skb;
	if (!cur || !cur->fp || cur->data != (__u64)(long)skb->data || cur->len != h->wire ||
	    cur->iif != skb->ingress_ifindex)
		return 0;
	__u32 idx = (__u32)cur->fp & (FLOOD_KEYS_MAX - 1);
	struct flood_path *p = flood_paths.lookup(&idx);
	if (!p)
		return 0;
	flood_clone_out(cur, p, h);
	return 1;
}
#endif

/* A flooded frame leaving through a port: note the port on its entry. */
static __always_inline void flood_egress(struct hit *h, __u64 fp, __u64 mac)
{
	struct flood_tag *t;
	struct flood_path *p;
	if (!flood_entries(fp, &t, &p))
		return;
	__u32 zero = 0;
	struct flood_current *cur = flood_current.lookup(&zero);
	if (!cur)
		return;
	if (cur->fp != fp) {
		if (t->tag == (__u32)(fp >> 32)) {
			/* A known frame whose pass this CPU no longer tracks (another
			 * flooded frame came in between): add to its entry. Not
			 * atomic: br_flood() clones the frame to one port after the
			 * other on one CPU, so the writers of one entry take turns. */
			mask_add(p->out_mask, h->slot);
			return;
		}
		/* Not seen entering: the bridge itself sent it (br_dev_xmit()).
		 * Its source entered by no port, so mark it: a copy that comes
		 * back is then checked. */
		__u32 tick = flood_tick();
		int steady;
		flood_source(mac, 0, tick, &steady);
		flood_new(t, p, fp, tick, 0, 0);
		flood_now(fp, h);
	}
	flood_clone_out(cur, p, h);
}

#endif /* BRTRACE_PORT_FLOOD_BPF_H */
