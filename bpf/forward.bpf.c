// SPDX-License-Identifier: GPL-2.0
/*
 * forward.bpf.c - the bridge's forwarding decision, from the bridge itself.
 *
 * Hooks (kprobes; only where the kernel has them, e.g. Debian's stock kernel
 * with the bridge as a module; elsewhere ports.bpf.c reconstructs the path
 * from tracepoints):
 *   br_forward(to, skb, local_rcv, local_orig)  known unicast: send to `to`
 *   br_flood(br, skb, ...)                      flood to every eligible port
 *   br_pass_frame_up(skb, ...)                  deliver to the bridge device
 * At entry skb->dev is still the ingress port.
 *
 * br_forward() hands the frame on only if should_deliver() agrees: the egress
 * port is not the ingress port (hairpin mode aside) and is in STP state
 * forwarding. The same tests, done here, name the refusals exactly, where the
 * kfree_skb alone shows NOT_SPECIFIED in br_handle_frame_finish().
 */
/* bcc turns kprobe arguments into ctx->di, ctx->si, ...: struct pt_regs must be complete. */
#include <uapi/linux/ptrace.h>
#include "common.bpf.h"

BPF_PERCPU_ARRAY(decisions, __u64, MAX_PORTS * DECISIONS);

#define BR_STATE_FORWARDING 3   /* include/uapi/linux/if_bridge.h, stable ABI */

static __always_inline void decide(__u32 slot, int d)
{
	int idx = slot * DECISIONS + d;
	__u64 *v = decisions.lookup(&idx);
	if (v)
		*v += 1;
}

static __always_inline __u32 ingress_slot(const void *skb)
{
	__u32 ifindex = 0;
	__u32 w = watched(SKB_DEV(skb), &ifindex);
	if (!(w & WATCH_PORT))
		return MAX_PORTS;  /* not one of our ports: ignore */
	return (w >> WATCH_SLOT_SHIFT) & (MAX_PORTS - 1);
}

int kprobe__br_forward(struct pt_regs *ctx, const void *to, const void *skb)
{
	if (!to || !skb)
		return 0;
	__u32 slot = ingress_slot(skb);
	if (slot >= MAX_PORTS)
		return 0;
	const void *in_dev = (const void *)read_u64(skb + SKB_DEV_OFF);
	const void *out_dev = (const void *)read_u64(to + BRPORT_DEV_OFF);
	__u8 state = 0;
	bpf_probe_read_kernel(&state, 1, to + BRPORT_STATE_OFF);
	if (in_dev == out_dev)
		decide(slot, DEC_SAME_PORT);
	else if (state != BR_STATE_FORWARDING)
		decide(slot, DEC_NOT_FORWARDING);
	else
		decide(slot, DEC_FORWARD);
	return 0;
}

int kprobe__br_flood(struct pt_regs *ctx, const void *br, const void *skb)
{
	__u32 slot = ingress_slot(skb);
	if (slot < MAX_PORTS)
		decide(slot, DEC_FLOOD);
	return 0;
}

int kprobe__br_pass_frame_up(struct pt_regs *ctx, const void *skb)
{
	__u32 slot = ingress_slot(skb);
	if (slot < MAX_PORTS)
		decide(slot, DEC_LOCAL);
	return 0;
}
