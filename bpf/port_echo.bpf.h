// SPDX-License-Identifier: GPL-2.0
/*
 * port_echo.bpf.h - the bridge's own MACs, for own-address echoes: a frame
 * entering a port with one of them as source is what br_fdb_update() logs as
 * "received packet on X with own address as source address"
 */
#ifndef BRTRACE_PORT_ECHO_BPF_H
#define BRTRACE_PORT_ECHO_BPF_H
#include "port_hit.bpf.h"

/* The bridge's own MACs (local FDB entries), kept by userspace. own_mac_lo
 * holds, per last MAC byte, whether any own MAC ends with it: most frames are
 * rejected by that array read without a hash lookup. */
BPF_HASH(own_macs, __u64, __u32, 1024);
BPF_ARRAY(own_mac_lo, __u32, 256);

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

#endif /* BRTRACE_PORT_ECHO_BPF_H */
