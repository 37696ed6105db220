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

/* The bridge and its ports, by ifindex; userspace keeps it current. */
BPF_ARRAY(watch, __u32, WATCH_SLOTS);
/* brtrace's own health counters (STAT_*), never cleared. */
BPF_PERCPU_ARRAY(stats, __u64, STAT_SLOTS);

static __always_inline void stat_inc(int slot)
{
	__u64 *v = stats.lookup(&slot);
	if (v)
		*v += 1;
}

static __always_inline __u64 read_u64(const void *addr)
{
	__u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), addr);
	return v;
}

static __always_inline __u32 read_u32(const void *addr)
{
	__u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), addr);
	return v;
}

static __always_inline __u16 read_u16(const void *addr)
{
	__u16 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), addr);
	return v;
}

/*
 * Is `dev` the watched bridge or one of its ports? Returns its ifindex, or 0.
 * The ifindex lookup comes first because it rejects almost every packet on a
 * busy host with one array access; the namespace check then rules out devices
 * of the same ifindex in other namespaces (ifindexes are per namespace).
 */
static __always_inline __u32 watched_ifindex(const void *dev)
{
	if (!dev)
		return 0;
	__u32 ifindex = read_u32(dev + DEV_IFINDEX_OFF);
	if (ifindex >= WATCH_SLOTS)
		return 0;
	__u32 *flags = watch.lookup(&ifindex);
	if (!flags || !*flags)
		return 0;
	const void *net = (const void *)read_u64(dev + DEV_ND_NET_OFF);
	if (!net || read_u32(net + NET_NS_INUM_OFF) != NETNS_INUM)
		return 0;
	return ifindex;
}

#endif /* BRTRACE_COMMON_BPF_H */
