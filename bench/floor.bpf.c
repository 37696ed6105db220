// SPDX-License-Identifier: GPL-2.0-only
/* The bench's floor: the cheapest BPF program imaginable on a view's hooks.
 * It only counts, so a view's ratio against the floor's is what brtrace's own
 * BPF code costs, and the floor's gap to 1.0 the price of having a program on
 * those hooks at all.
 *
 * Hooks: raw tracepoints, attached by name from userspace (bench/floor.py):
 * program floor_tp<i> to the i-th of the view's tracepoints; with tcx, the
 * sched_cls programs floor_ingress and floor_egress, linked to the bridge's
 * devices as brtrace links its port programs.  Needs raw tracepoints (4.17)
 * and, for tcx, 6.6.
 *
 * Specialised with -D defines (bench/floor.py: floor_cflags()):
 *   FLOOR_TRACEPOINTS  how many raw tracepoints (at most FLOOR_MAX_TRACEPOINTS)
 *   FLOOR_TCX          1: the two tcx programs count in slots N and N + 1
 */

#ifndef FLOOR_TRACEPOINTS
#error "FLOOR_TRACEPOINTS must be defined (-DFLOOR_TRACEPOINTS=N)"
#endif
#ifndef FLOOR_TCX
#define FLOOR_TCX 0
#endif

/* One slot per hook, per CPU: u64 hits. */
#define FLOOR_SLOTS (FLOOR_TRACEPOINTS + 2 * FLOOR_TCX)
BPF_PERCPU_ARRAY(hits, u64, FLOOR_SLOTS > 0 ? FLOOR_SLOTS : 1);

static __always_inline void count(int k)
{
	u64 *v = hits.lookup(&k);

	if (v)
		*v += 1;
}

/* One program per tracepoint slot; only the attached ones are loaded. */
#define FLOOR_TP(i) \
	int floor_tp##i(struct bpf_raw_tracepoint_args *ctx) \
	{ \
		count(i); \
		return 0; \
	}

FLOOR_TP(0)
FLOOR_TP(1)
FLOOR_TP(2)
FLOOR_TP(3)
FLOOR_TP(4)
FLOOR_TP(5)
FLOOR_TP(6)
FLOOR_TP(7)
FLOOR_TP(8)
FLOOR_TP(9)
FLOOR_TP(10)
FLOOR_TP(11)

#if FLOOR_TCX
int floor_ingress(struct __sk_buff *skb)
{
	count(FLOOR_TRACEPOINTS);
	return -1;   /* TCX_NEXT: never changes the frame's fate */
}

int floor_egress(struct __sk_buff *skb)
{
	count(FLOOR_TRACEPOINTS + 1);
	return -1;   /* TCX_NEXT */
}
#endif
