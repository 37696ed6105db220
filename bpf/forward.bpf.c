// SPDX-License-Identifier: GPL-2.0
/*
 * forward.bpf.c - what enters and leaves the bridge's ports, and what comes back.
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
 * Which frame went where is `brtrace trace`'s job (trace.bpf.c, filtered
 * in the kernel): these hooks run for every frame, so they keep only what
 * the views show, per port.
 */
#include "common.bpf.h"
#include "fingerprint.bpf.h"

#define ETH_HLEN_ 14
#define ARP_FRAME_LEN 42   /* Ethernet + ARP for IPv4, unpadded (what Linux sends) */
#define ND_FRAME_LEN 55    /* Ethernet + IPv6 header + the ICMPv6 type byte */
#define ND_TARGET_END 78   /* ... + code, checksum, flags/reserved (58..61), target (62..77) */
#define TCX_NEXT_ (-1)     /* enum tcx_action_base (6.6 uapi): run the next program */

BPF_PERCPU_ARRAY(port_counters, struct port_ctrs, MAX_PORTS);

/* The bridge's own MACs (local FDB entries), kept by userspace. own_mac_lo
 * holds, per last MAC byte, whether any own MAC ends with it: most frames are
 * rejected by that array read without a hash lookup. */
BPF_HASH(own_macs, __u64, __u32, 1024);
BPF_ARRAY(own_mac_lo, __u32, 256);

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
 *                  checked. What this skips are copies coming back by their
 *                  source's own port before anything marked it: the frames of
 *                  hosts behind a port with a loop beyond it, which the loop
 *                  verdict does not need (the bridge's own frames coming back
 *                  show that loop). Shared by all CPUs: a frame may come back
 *                  on another CPU than the one it entered on.
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
	__u32 pass;                      /* FP_LAST | FP_ORIGIN | FP_REPEATS | FP_OTHER */
	__u32 pad;                       /* 32 bytes: no entry straddles two cache lines */
};
#define FP_LAST(x) ((x) & 0xff)             /* slot its latest pass entered by */
#define FP_ORIGIN(x) (((x) >> 8) & 0xff)    /* slot it was first seen entering by */
#define FP_REPEATS(x) (((x) >> 16) & 0xff)  /* times it came in again by FP_ORIGIN as a host repeat */
#define FP_OTHER (1U << 24)                 /* other_tick is set */
#define FP_PASS(last, origin, repeats) ((last) | ((origin) << 8) | ((repeats) << 16))
BPF_ARRAY(flood_tags, struct flood_tag, FLOOD_KEYS_MAX);
BPF_ARRAY(flood_paths, struct flood_path, FLOOD_KEYS_MAX);

struct flood_source {
	__u64 key;   /* source MAC | slot it entered by << 48 */
	__u32 tick;  /* when it last entered by another slot, or came back */
	__u32 pad;
};
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

/* ARP on the wire, per IPv4 address asked for or claimed (brtrace.h). */
BPF_ARRAY(arp_targets, struct arp_target, ARP_TARGETS_MAX);
/* IPv6 neighbour discovery on the wire, per address (brtrace.h says why a
 * second table). */
BPF_ARRAY(ndp_targets, struct ndp_target, NDP_TARGETS_MAX);

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

/* The source MAC (bytes 6..11) as a little-endian u48: the key of own_macs
 * and of flood_sources. */
static __always_inline __u64 src_mac(const __u8 *buf)
{
	__u16 first;
	__u32 rest;
	__builtin_memcpy(&first, buf + 6, 2);
	__builtin_memcpy(&rest, buf + 8, 4);
	return first | ((__u64)rest << 16);
}

/* Is `mac` (src_mac()) one of the bridge's own? */
static __always_inline int is_own_mac(__u64 mac)
{
	__u32 lo = (__u32)(mac >> 40);   /* the MAC's last byte */
	__u32 *any = own_mac_lo.lookup(&lo);
	if (!any || !*any)
		return 0;
	return own_macs.lookup(&mac) != NULL;
}

static __always_inline int same_mac(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

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
				       __u32 slot, __u32 ifindex, __u32 repeats)
{
	__u32 pass = p->pass;
	__u32 other = pass & FP_OTHER;
	if (FP_LAST(pass) != slot) {
		p->other_tick = t->tick;
		other = FP_OTHER;
	}
	p->pass = FP_PASS(slot, FP_ORIGIN(pass), repeats) | other;
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
		*steady = 1;
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
	 * not leave there, it is always the host repeating itself (nothing went
	 * out that could come back). After a pass by another port, or one sent
	 * back out here, it may be the host resending a frame that a reflector
	 * returned, or a loop bringing the frame round: the first
	 * HOST_REPEATS_MAX such are taken for the host. */
	if (origin && ((!crossed && !sent) || repeats < HOST_REPEATS_MAX)) {
		count(h->pc, PC_HOST_REPEATS, 1);
		flood_pass(t, p, tick, slot, h->ifindex, repeats + (crossed || sent));
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
	flood_pass(t, p, tick, slot, h->ifindex, repeats);
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

/* Count the frame in `packets` and `packets + 1` (the matching bytes counter). */
static __always_inline void hit_count(struct hit *h, int packets)
{
	h->slot = (h->watch >> WATCH_SLOT_SHIFT) & (MAX_PORTS - 1);
	__u32 slot = h->slot;
	h->pc = port_counters.lookup(&slot);
	count(h->pc, packets, 1);
	count(h->pc, packets + 1, h->wire);
}

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
	if (h->loop_how) {
		/* A copy says nothing new about who asks or answers, only where
		 * it came back (a reflected RA, a looped solicitation). */
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
