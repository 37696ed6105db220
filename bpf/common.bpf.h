/* SPDX-License-Identifier: GPL-2.0 */
/*
 * common.bpf.h - helpers every brtrace hook shares.
 *
 * No kernel struct is dereferenced by header layout: the headers bcc compiles
 * against may belong to another kernel version. Offsets (SKB_DEV_OFF, ...) and
 * the watched namespace (NETNS_INUM) are -D defines that tracer/loader.py
 * resolves from the running kernel's BTF at load time.
 */
#ifndef BRTRACE_COMMON_BPF_H
#define BRTRACE_COMMON_BPF_H

#include "brtrace.h"

/* The bridge and its ports, by ifindex; userspace keeps it current and
 * bumps watch_gen[0] after every change. */
BPF_ARRAY(watch, struct watch_entry, WATCH_SLOTS);
BPF_ARRAY(watch_gen, __u32, 1);

/*
 * Reading kernel memory: KREAD(type, btf_id, base, off) is the `type` at byte
 * `off` of the struct at `base`, whose BTF type is `btf_id`; 0 if unreadable.
 *
 * KERNEL_READS_DIRECT (tracer/kernel/kfunc.py found bpf_rdonly_cast(), 6.2+):
 * the base is cast to its BTF type and read with a plain load, which the
 * verifier checks against the type and guards with an exception-table entry.
 * The C calls a fake helper that the loader rewrites into the kfunc call (bcc
 * cannot emit one). Otherwise each read is a bpf_probe_read_kernel() call,
 * which costs 30-35 ns where kernel returns go through a mitigation thunk.
 */
/* The `type` at kernel address `addr` by bpf_probe_read_kernel(); 0 if unreadable. */
#define PROBE_READ(type, addr) ({                                  \
	type v_ = 0;                                               \
	bpf_probe_read_kernel(&v_, sizeof(v_), (addr));            \
	v_;                                                        \
})

#if KERNEL_READS_DIRECT
static void *(*rdonly_cast)(const void *obj, __u32 btf_id) = (void *)KFUNC_MARK_RDONLY_CAST;
#define KREAD(type, btf_id, base, off) \
	(*(const type *)((const __u8 *)rdonly_cast((const void *)(base), (btf_id)) + (off)))
#else
#define KREAD(type, btf_id, base, off) PROBE_READ(type, (const __u8 *)(base) + (off))
#endif

/* skb->dev, the device an sk_buff is on (or was freed from). */
#define SKB_DEV(skb) ((const void *)KREAD(__u64, BTF_ID_SK_BUFF, (skb), SKB_DEV_OFF))

#if !KERNEL_READS_DIRECT
/* What watched() concluded about one net_device pointer, in one generation
 * of the watch set: most packets on a host belong to devices that are not
 * ours, and this lets them out after one read (skb->dev) and two array
 * lookups, which the verifier inlines. Per CPU, so no two CPUs write one
 * entry. */
struct dev_verdict {
	__u64 dev;
	__u32 value;     /* watch value, 0: not watched */
	__u32 ifindex;
	__u32 gen;       /* watch_gen[0] when it was reached */
	__u32 pad;
};
BPF_PERCPU_ARRAY(dev_verdicts, struct dev_verdict, DEV_CACHE_SLOTS);
#endif
/* brtrace's own health counters (STAT_*), never cleared. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_SLOTS);

/* Per-packet records for every hook group; each kind has its own per-CPU
 * rate limit (EVENTS_PER_SEC), and what does not fit is counted in `stats`. */
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

struct rate_window {
	__u64 start_ns;
	__u64 sent;
};
/* One window per record kind and CPU, so the limiter takes no lock. */
BPF_PERCPU_ARRAY(rate_state, struct rate_window, EVENT_KINDS);

static __always_inline int rate_allow(int kind, __u64 now)
{
	struct rate_window *w = rate_state.lookup(&kind);
	if (!w)
		return 0;
	if (now - w->start_ns >= 1000000000ULL) {
		w->start_ns = now;
		w->sent = 0;
	}
	if (w->sent >= EVENTS_PER_SEC)
		return 0;
	w->sent++;
	return 1;
}

static __always_inline void stat_inc(int slot)
{
	__u64 *v = stats.lookup(&slot);
	if (v)
		*v += 1;
}

/* Reserve a ring-buffer record of `kind`, or count why not (rate limit, full
 * buffer), globally and per kind. Pair with event_submit(). */
static __always_inline void *event_reserve(int kind, __u64 size, __u64 now)
{
	if (!rate_allow(kind, now)) {
		stat_inc(STAT_EVENTS_RATE_LIMITED);
		stat_inc(STAT_KIND_SLOT(kind, KIND_LIMITED));
		return NULL;
	}
	void *ev = events.ringbuf_reserve(size);
	if (!ev) {
		stat_inc(STAT_EVENTS_LOST);
		stat_inc(STAT_KIND_SLOT(kind, KIND_LOST));
	}
	return ev;
}

static __always_inline void event_submit(int kind, void *ev)
{
	events.ringbuf_submit(ev, 0);
	stat_inc(STAT_EVENTS_SENT);
	stat_inc(STAT_KIND_SLOT(kind, KIND_SENT));
}

static __always_inline __u64 read_u64(const void *addr)
{
	return PROBE_READ(__u64, addr);
}

static __always_inline __u32 read_u32(const void *addr)
{
	return PROBE_READ(__u32, addr);
}

static __always_inline __u16 read_u16(const void *addr)
{
	return PROBE_READ(__u16, addr);
}

/*
 * Is `dev` the watched bridge or one of its ports? Returns its watch value
 * (WATCH_* flags | slot << WATCH_SLOT_SHIFT) and its ifindex, or 0.
 *
 * With helper reads (no KERNEL_READS_DIRECT), the verdict for a device
 * pointer is cached per CPU (dev_verdicts, indexed by a multiplicative hash
 * of the pointer) until userspace changes the watch set (watch_gen). Only a
 * device met for the first time in a generation pays the reads of its
 * ifindex and namespace (ifindexes are per namespace: every
 * container's eth0 is 2). The generation is read before the watch array, and
 * userspace writes the array before bumping it, so a verdict reached from a
 * half-updated watch set is stored under the old generation and never used.
 */
static __always_inline __u32 watched(const void *dev, __u32 *ifindex_out)
{
#if KERNEL_READS_DIRECT
	/* Three plain loads cost less than the verdict cache's lookup (and the
	 * verifier would not let a pointer be hashed): read the device. */
	__u32 ifindex = KREAD(__u32, BTF_ID_NET_DEVICE, dev, DEV_IFINDEX_OFF);
	*ifindex_out = ifindex;
	if (!dev || ifindex >= WATCH_SLOTS)
		return 0;
	struct watch_entry *e = watch.lookup(&ifindex);
	if (!e || !e->value)
		return 0;
	const void *net = (const void *)KREAD(__u64, BTF_ID_NET_DEVICE, dev, DEV_ND_NET_OFF);
	return KREAD(__u32, BTF_ID_NET, net, NET_NS_INUM_OFF) == NETNS_INUM ? e->value : 0;
#else
	if (!dev)
		return 0;
	__u32 zero = 0;
	__u32 *genp = watch_gen.lookup(&zero);
	if (!genp)
		return 0;
	__u32 gen = *genp;
	__u64 d = (__u64)dev;
	__u32 idx = (__u32)((d * 0x9E3779B97F4A7C15ULL) >> 32) & (DEV_CACHE_SLOTS - 1);
	struct dev_verdict *v = dev_verdicts.lookup(&idx);
	if (!v)
		return 0;
	if (v->dev == d && v->gen == gen) {
		*ifindex_out = v->ifindex;
		return v->value;
	}
	stat_inc(STAT_DEV_VERIFIED);
	__u32 value = 0;
	__u32 ifindex = read_u32(dev + DEV_IFINDEX_OFF);
	if (ifindex < WATCH_SLOTS) {
		struct watch_entry *e = watch.lookup(&ifindex);
		if (e && e->value) {
			const void *net = (const void *)read_u64(dev + DEV_ND_NET_OFF);
			if (net && read_u32(net + NET_NS_INUM_OFF) == NETNS_INUM)
				value = e->value;
		}
	}
	v->dev = d;
	v->value = value;
	v->ifindex = ifindex;
	v->gen = gen;
	*ifindex_out = ifindex;
	return value;
#endif
}

static __always_inline __u32 watched_ifindex(const void *dev)
{
	__u32 ifindex = 0;
	return watched(dev, &ifindex) ? ifindex : 0;
}

/* Where the frame starts: head + mac_header when the MAC header is set
 * (0xffff means unset: skb_mac_header_was_set()), else data. Also returns the
 * frame's size from there (skb->len counts from data). */
static __always_inline const void *frame_start(const void *skb, __u32 *wire_len)
{
	const void *head, *data;
	__u16 mac;
	__u32 len;
#if KERNEL_READS_DIRECT
	head = (const void *)KREAD(__u64, BTF_ID_SK_BUFF, skb, SKB_HEAD_OFF);
	data = (const void *)KREAD(__u64, BTF_ID_SK_BUFF, skb, SKB_DATA_OFF);
	mac = KREAD(__u16, BTF_ID_SK_BUFF, skb, SKB_MAC_HEADER_OFF);
	len = KREAD(__u32, BTF_ID_SK_BUFF, skb, SKB_LEN_OFF);
#elif SKB_SPAN_LEN <= 128
	/* One read for len, mac_header, head and data (they sit within
	 * SKB_SPAN_LEN bytes of each other in sk_buff): a helper call is the
	 * main per-packet cost, not the bytes copied. */
	__u8 span[SKB_SPAN_LEN];
	if (bpf_probe_read_kernel(span, sizeof(span), skb + SKB_SPAN_START) != 0) {
		*wire_len = 0;
		return NULL;
	}
	__builtin_memcpy(&head, span + (SKB_HEAD_OFF - SKB_SPAN_START), 8);
	__builtin_memcpy(&data, span + (SKB_DATA_OFF - SKB_SPAN_START), 8);
	__builtin_memcpy(&mac, span + (SKB_MAC_HEADER_OFF - SKB_SPAN_START), 2);
	__builtin_memcpy(&len, span + (SKB_LEN_OFF - SKB_SPAN_START), 4);
#else
	head = (const void *)read_u64(skb + SKB_HEAD_OFF);
	data = (const void *)read_u64(skb + SKB_DATA_OFF);
	mac = read_u16(skb + SKB_MAC_HEADER_OFF);
	len = read_u32(skb + SKB_LEN_OFF);
#endif
	const void *start = mac != 0xffff ? head + mac : data;
	*wire_len = (__u32)((data - start) + len);
	return start;
}

#endif /* BRTRACE_COMMON_BPF_H */
