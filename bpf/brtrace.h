/* SPDX-License-Identifier: GPL-2.0 */
/*
 * brtrace.h - the one ABI between brtrace's BPF programs and its Python side.
 *
 * Everything a map key, a map value or a ring-buffer record looks like is here,
 * `brtrace trace`'s records included (at the end).
 * tracer/abi.py mirrors these structs with ctypes and reads the #defines from
 * this file, and tests/unit/test_abi.py compiles this header with the host C
 * compiler to check that sizes and offsets agree. Change both together.
 *
 * Only fixed-width types; every struct is padded by hand so that C and ctypes
 * agree without relying on compiler packing rules.
 */
#ifndef BRTRACE_H
#define BRTRACE_H

/* Record kinds in the `events` ring buffer (first byte of every record). */
#define EVENT_DROP 1
#define EVENT_FDB 2       /* an FDB entry was created or moved (struct fdb_event) */
#define EVENT_ECHO 3      /* a frame entered a port with one of the bridge's MACs as source */
#define EVENT_LOOP 4      /* a flooded frame came back into the bridge (struct frame_event) */
#define EVENT_NEIGH 5     /* a neighbour entry changed state or address (struct neigh_event) */
#define EVENT_TRACE 7     /* a step of a frame `brtrace trace` follows (struct trace_event) */
/* Record kinds are below EVENT_KINDS: each has a rate-limit window
 * (common.bpf.h rate_state) and STAT_PER_KIND stat slots. */
#define EVENT_KINDS 8

/* Slots of the per-CPU `stats` array: brtrace's own health counters. */
#define STAT_EVENTS_SENT 0        /* records written to the ring buffer */
#define STAT_EVENTS_LOST 1        /* ring buffer full: record not written */
#define STAT_EVENTS_RATE_LIMITED 2 /* over the in-kernel per-CPU rate limit */
#define STAT_DROP_KEYS_FULL 3     /* drop_counts hash full: drop not counted by key */
#define STAT_DROPS_SEEN 4         /* every watched kfree_skb, keyed or not */
#define STAT_FDB_KEYS_FULL 5      /* fdb_moves LRU evicted or refused an entry */
#define STAT_DEV_VERIFIED 6       /* watched() read a device's ifindex/namespace (verdict cache miss; helper reads only) */
#define STAT_ARP_EVICTED 7        /* an ARP address displaced another from arp_targets */
#define STAT_NDP_EVICTED 8        /* an IPv6 address displaced another from ndp_targets */
/* The three event counters again, per record kind: slot
 * STAT_KIND_SLOT(kind, KIND_SENT / KIND_LOST / KIND_LIMITED). Slots 9..15 are
 * free for more of the above. */
#define STAT_KIND_BASE 16
#define STAT_PER_KIND 3
#define KIND_SENT 0
#define KIND_LOST 1
#define KIND_LIMITED 2
#define STAT_KIND_SLOT(kind, what) (STAT_KIND_BASE + (kind) * STAT_PER_KIND + (what))
#define STAT_SLOTS 40     /* STAT_KIND_BASE + EVENT_KINDS * STAT_PER_KIND */

/* Bytes of the frame copied into a sampled record, from the MAC header on:
 * enough for Ethernet + two VLAN tags + ARP or an IPv6 header + ports. */
#define FRAME_BYTES 96

/* Watched devices: the bridge and its ports in one network namespace.
 * Indexed by ifindex; ifindexes at or above WATCH_SLOTS are not watched
 * (userspace warns about them). */
#define WATCH_SLOTS 65536
#define WATCH_PORT 1
#define WATCH_BRIDGE 2
/* A watch value is flags | (port slot << WATCH_SLOT_SHIFT). Slots number the
 * bridge (0) and its ports (1..MAX_PORTS-1) densely for the per-port arrays. */
#define WATCH_SLOT_SHIFT 8
#define MAX_PORTS 128

/* A port's counters: index into struct port_ctrs (per CPU, one per slot).
 * Monotonic, never cleared. Each *_BYTES follows its *_PACKETS
 * (ports.bpf.c relies on it). The first eight share a cache line: all that
 * a frame touches unless it is ARP, an echo or a loop copy (TX_FLOODED
 * there cost a second line per flooded frame leaving: +2-3 ns a run). */
#define PC_RX_PACKETS 0
#define PC_RX_BYTES 1
#define PC_TX_PACKETS 2
#define PC_TX_BYTES 3
#define PC_RX_BROADCAST 4
#define PC_RX_MULTICAST 5
#define PC_RX_ARP 6
#define PC_TX_FLOODED 7    /* group-addressed (flooded) frames sent out of the port */
/* Loop copies: a flooded frame seen again within LOOP_WINDOW_NS (ports.bpf.c,
 * flood_ingress() says which copies count). Split by whether the bridge had
 * sent the frame's previous pass out of this very port: */
#define PC_RETURNS 8       /* copies in through a port the previous pass left by */
#define PC_REENTRIES 9     /* copies in through a port the previous pass did not leave by */
#define PC_ARP_DUPLICATES 10 /* ARP frames among returns + reentries */
#define PC_ARP_REQUESTS 11
#define PC_ARP_REPLIES 12
#define PC_ARP_GRATUITOUS 13
#define PC_CROSSINGS 14    /* loop copies whose previous pass entered by another port */
#define PC_ECHOES 15       /* frames in with one of the bridge's own MACs as source */
#define PC_HOST_REPEATS 16 /* copies in through the port the frame was first seen on, taken
			    * for its host repeating itself (flood_ingress()): not loop copies */
/* IPv6 neighbour discovery on the wire (RFC 4861), frames entering the port. */
#define PC_NDP_NS 17       /* Neighbor Solicitations */
#define PC_NDP_NA 18       /* Neighbor Advertisements */
#define PC_NDP_RS 19       /* Router Solicitations */
#define PC_NDP_RA 20       /* Router Advertisements */
#define PC_NDP_DAD 21      /* solicitations from the unspecified address: Duplicate Address Detection */
#define PC_NDP_DUPLICATES 22 /* NDP frames among returns + reentries (DAD probes: PC_NDP_DAD_BACK) */
#define PC_NDP_DAD_BACK 23 /* DAD probes among returns + reentries: a guest hearing its own
			    * probe takes its address for a duplicate (dadfailed) */
#define PC_ORIGIN_COPIES 24 /* copies in through the port the frame was first seen on, after a
			    * pass that entered there too, more than HOST_REPEATS_MAX within a
			    * window: faster than a host repeats itself. A loop beyond the port
			    * (tracer/diagnose.py counts them as reentries where the port leads
			    * on to another switch), or a host sending one frame over and over */
/* A multiple of 8: each slot's counters start on a cache line, so the first
 * eight stay on one (25 made the stride 200 bytes: +4-5 ns a program run on
 * flooded frames, from the BPF statistics). */
#define PORT_COUNTERS 32

/* Bridge decisions per ingress slot, seen by kprobes on the bridge's own
 * functions where the kernel has kprobes (`decisions`, per-CPU array indexed
 * by slot * DECISIONS + decision). */
#define DEC_FORWARD 0        /* br_forward() to a forwarding port */
#define DEC_SAME_PORT 1      /* br_forward() refused: destination is the ingress port */
#define DEC_NOT_FORWARDING 2 /* br_forward() refused: egress port not forwarding */
#define DEC_FLOOD 3          /* br_flood(): unknown unicast, broadcast, multicast */
#define DEC_LOCAL 4          /* br_pass_frame_up(): delivered to the bridge itself */
#define DECISIONS 8

/* A flooded frame seen again within this window (ns) is a copy: loops through
 * a bridge's veths return in microseconds, through a VPN over the internet in
 * 10-300 ms, more when a userspace VPN queues under a storm; 1 s covers them.
 * ARP/NDP retransmits come 1 s apart or more (kernel timers never fire early),
 * so they fall outside; a host repeating itself faster (GARP bursts) is told
 * apart by where the copy comes in (HOST_REPEATS_MAX). */
#define LOOP_WINDOW_NS 1000000000ULL
/* A copy entering the port its frame was first seen on is taken for that host
 * resending it (retransmits, GARP bursts: a handful) this many times: after
 * the frame went elsewhere, over the frame's life; after a pass that entered
 * there too, within one window (a loop beyond the port brings it back there
 * hundreds of times a second; where brtrace first saw a frame of a storm
 * already running is only where one of its copies came in). */
#define HOST_REPEATS_MAX 8
/* frame_event.how for EVENT_LOOP: bits. */
#define LOOP_SENT 1        /* the previous pass left by this port (a return) */
#define LOOP_CROSSED 2     /* the previous pass entered by another port */
#define LOOP_AT_ORIGIN 4   /* this port is where the frame was first seen */
#define LOOP_COPY 8        /* always set on a copy */
#define LOOP_RUN 16        /* an origin copy (PC_ORIGIN_COPIES): a loop beyond the port, or its
			    * host sending one frame over and over; counted as the host's frame
			    * wherever a table counts who asks (port_ndp.bpf.h ndp_seen()) */
/* The fake helper number the C code calls for bpf_rdonly_cast(); the loader
 * rewrites each such call into a kfunc call (tracer/kernel/kfunc.py). Far
 * above any real helper, so no genuine call is mistaken for it. */
#define KFUNC_MARK_RDONLY_CAST 32001

/* Per-CPU device verdicts kept by watched() (common.bpf.h); a power of two. */
#define DEV_CACHE_SLOTS 512
/* Bytes of a frame that make its fingerprint. */
#define FINGERPRINT_BYTES 64
/* Slots of the flood fingerprint table (a power of two): direct-mapped,
 * indexed by the fingerprint's low bits, so a newer frame displaces an older
 * one of the same slot (a cache, like the LRU it replaced, without the hash). */
#define FLOOD_KEYS_MAX 16384
/* Source MACs of flooded frames remembered (ports.bpf.c), a power of two. */
#define FLOOD_SOURCES 1024
#define ARP_TARGETS_MAX 4096
#define ARP_WAYS 4
#define NDP_TARGETS_MAX 2048
#define NDP_WAYS 4

/* Neighbour entries tracked (neigh.bpf.c), bounded LRU. */
#define NEIGH_KEYS_MAX 4096
#define FDB_KEYS_MAX 16384

/* Size of the drop_counts hash: distinct (port, reason, location, ethertype). */
#define DROP_KEYS_MAX 16384

/* A watched device (the `watch` array, indexed by ifindex). Userspace sets
 * `value` (WATCH_* | slot << WATCH_SLOT_SHIFT), then bumps `watch_gen`: the
 * BPF side keeps, per CPU, the verdict it reached for each net_device pointer
 * it met (watched or not, common.bpf.h), valid for one generation. */
struct watch_entry {
	__u32 value;
	__u32 pad;
};

/* One port's counters (PC_*), per CPU, in `port_counters` indexed by slot. */
struct port_ctrs {
	__u64 c[PORT_COUNTERS];
};

struct drop_key {
	__u64 location;   /* kernel text address that freed the skb */
	__u32 ifindex;    /* skb->dev at the time of the free */
	__u32 reason;     /* enum skb_drop_reason, as the running kernel numbers it */
	__u16 ethertype;  /* skb->protocol, host byte order */
	__u16 pad0;
	__u32 pad1;
};

struct drop_event {
	__u8 kind;        /* EVENT_DROP */
	__u8 frame_len;   /* bytes valid in frame[] */
	__u16 ethertype;  /* skb->protocol, host byte order */
	__u16 vlan_tci;   /* accelerated VLAN tag (0 if none) */
	__u16 pad0;
	__u32 ifindex;
	__u32 reason;
	__u32 wire_len;   /* bytes from the MAC header to the end of the frame */
	__u32 pad1;
	__u64 ts_ns;      /* bpf_ktime_get_ns() */
	__u64 location;
	__u8 frame[FRAME_BYTES];
};

struct fdb_key {
	__u8 mac[6];
	__u16 vlan;
};

struct fdb_move {
	__u64 count;      /* creations + moves seen for this MAC */
	__u64 last_ns;
	__u32 slot;       /* port it is on now */
	__u32 prev_slot;  /* port it was on before (0: none seen) */
};

struct fdb_event {
	__u8 kind;        /* EVENT_FDB */
	__u8 pad0;
	__u16 vlan;
	__u8 mac[6];
	__u16 pad1;
	__u32 ifindex;    /* port it was learned on */
	__u32 pad2;
	__u64 ts_ns;
};

struct frame_event {
	__u8 kind;        /* EVENT_ECHO or EVENT_LOOP */
	__u8 frame_len;
	__u16 how;        /* EVENT_LOOP: LOOP_* bits */
	__u32 ifindex;    /* ingress port */
	__u32 wire_len;
	__u32 prev_ifindex; /* EVENT_LOOP: where the previous pass entered (0: the bridge itself) */
	__u32 gap_ticks;  /* EVENT_LOOP: jiffies since that pass (round trip, flood_ingress()) */
	__u32 pad;
	__u64 ts_ns;
	__u8 frame[FRAME_BYTES];
};

/* What the wire says about one IPv4 address (ARP seen on the bridge's ports),
 * in `arp_targets`: a 4-way set-associative array (ARP_WAYS entries per set,
 * the set from a hash of the address, `ip` the tag), so an ARP frame costs
 * array reads the verifier inlines, not a hash lookup. A new address takes an
 * empty way, else the way with the fewest requests + replies (counted in
 * STAT_ARP_EVICTED). */
struct arp_target {
	__u32 ip;            /* network byte order; 0: empty */
	__u32 pad;
	__u64 requests;      /* ARP requests asking for it */
	__u64 replies;       /* ARP replies or gratuitous ARPs claiming it */
	__u64 conflicts;     /* claims by a MAC other than the first one seen */
	__u8 mac[6];         /* first MAC that claimed it */
	__u8 other_mac[6];   /* the latest different MAC that claimed it */
	__u32 asker_slot;    /* port of the latest request */
	__u32 claimer_slot;  /* port of the first claim */
	__u32 other_slot;    /* port of the latest conflicting claim */
};

/* What the wire says about one IPv6 address (neighbour discovery seen on the
 * bridge's ports, RFC 4861), in `ndp_targets`: set-associative like
 * arp_targets (NDP_WAYS ways, the set from a hash of the address), a new
 * address displacing the least used way (STAT_NDP_EVICTED). The address is
 * the target of a solicitation or advertisement, or the source of a router
 * advertisement (a router's link-local address). "Who" is the frame's
 * Ethernet source: the MAC the bridge learns, so the port it names is the
 * sender's (a target link-layer option may name another, as proxies do).
 * Loop copies (port_flood.bpf.h flood_ingress()) count in `copies` only, so the
 * other counts are what the hosts sent.
 *
 * A table of its own, not one keyed by 128-bit addresses with IPv4 mapped
 * in: every ARP frame would then hash and compare 16 bytes instead of 4, and
 * ARP entries would carry NDP's fields (DAD, flags, routers) in twice the
 * cache lines, for nothing the findings gain from seeing both in one place. */
struct ndp_target {
	__u8 addr[16];       /* network byte order; all zero: empty (:: is no target, no router) */
	__u64 solicits;      /* Neighbor Solicitations for it from an address */
	__u64 dad_probes;    /* solicitations for it from :: (Duplicate Address Detection) */
	__u64 adverts;       /* Neighbor Advertisements for it */
	__u64 solicited;     /* of those, with the Solicited flag (answers to a solicitation) */
	__u64 overrides;     /* of those, with the Override flag */
	__u64 routers;       /* Router Advertisements from it */
	__u64 conflicts;     /* advertisements (NA or RA) by a MAC other than the first one */
	__u64 elsewhere;     /* advertisements by the first MAC through another port than its first */
	__u64 dad_answered;  /* NAs by another MAC within DAD's wait after a probe: the address is taken */
	__u64 copies;        /* its NDP frames among the loop copies coming back */
	__u8 mac[6];         /* first MAC that advertised it */
	__u8 other_mac[6];   /* the latest different MAC that advertised it */
	__u8 prober_mac[6];  /* the latest DAD probe's */
	__u8 answer_mac[6];  /* the latest NA's that answered a DAD probe */
	__u32 asker_slot;    /* port of the latest solicitation */
	__u32 claimer_slot;  /* port of the first advertisement */
	__u32 other_slot;    /* port of the latest conflicting advertisement */
	__u32 echo_slot;     /* port of the latest copy, or of the first MAC advertising elsewhere */
	__u32 prober_slot;   /* port of the latest DAD probe */
	__u32 answer_slot;   /* port of the latest NA that answered a DAD probe */
	__u32 dad_tick;      /* jiffies (low 32 bits) of the latest DAD probe */
	__u32 pad;
};

/* A neighbour entry, keyed by namespace, device and address. */
struct neigh_key {
	__u32 netns;         /* net->ns.inum */
	__u32 ifindex;
	__u8 family;         /* AF_INET 2, AF_INET6 10 */
	__u8 pad[7];
	__u8 addr[16];
};

struct neigh_stats {
	__u64 failed;        /* entered NUD_FAILED (resolution gave up) */
	__u64 incomplete;    /* entered NUD_INCOMPLETE (resolution started) */
	__u64 reachable;     /* entered NUD_REACHABLE */
	__u64 stale;         /* entered NUD_STALE */
	__u64 lladdr_changes;/* the link-layer address of a valid entry changed */
	__u64 last_ns;
	__u8 state;          /* latest NUD_* state */
	__u8 pad[1];
	__u8 lladdr[6];      /* latest link-layer address */
	__u8 prev_lladdr[6]; /* the one before a change */
	__u8 pad2[2];
};

/* Packets the neighbour layer dropped, by namespace, device and reason. */
struct neigh_drop_key {
	__u32 netns;
	__u32 ifindex;
	__u32 reason;
};

struct neigh_event {
	__u8 kind;           /* EVENT_NEIGH */
	__u8 old_state;
	__u8 new_state;
	__u8 family;
	__u32 netns;
	__u32 ifindex;
	__u32 pad;
	__u64 ts_ns;
	__u8 addr[16];
	__u8 old_lladdr[6];
	__u8 new_lladdr[6];
	__u8 pad2[4];
};

/*
 * `brtrace trace` (bpf/trace.bpf.c): one ring-buffer record per step of a
 * frame through the bridge (EVENT_TRACE); tracer/trace_abi.py mirrors it.
 */
/* Most bytes of a frame a step can carry (SNAPLEN, a -D define, is <= this). */
#define TRACE_SNAP_MAX 128

/* What happened to the frame at this step. */
#define STEP_ENTERED 1     /* netif_receive_skb on a port: entered the bridge there */
#define STEP_DELIVERED 2   /* netif_receive_skb on the bridge device: delivered locally */
#define STEP_LEFT 3        /* net_dev_queue on a port: left the bridge through it */
#define STEP_ORIGINATED 4  /* net_dev_queue on the bridge device: sent by the host itself */
#define STEP_FREED 5       /* kfree_skb on the bridge or a port: dropped, with a reason */

/* Flags of a step. */
#define TF_VLAN_TAG 1      /* vlan_tci holds an accelerated tag (not in frame[]) */
#define TF_PENDING 2       /* recorded late: held back until a later step matched the port filter */

struct trace_event {
	__u8 kind;         /* EVENT_TRACE */
	__u8 step;         /* STEP_* */
	__u8 cap_len;      /* bytes valid in frame[] (<= SNAPLEN) */
	__u8 flags;        /* TF_* */
	__u32 ifindex;     /* skb->dev at this step */
	__u32 wire_len;    /* bytes from the MAC header to the end of the frame */
	__u32 reason;      /* STEP_FREED: enum skb_drop_reason */
	__u64 ts_ns;       /* bpf_ktime_get_ns() */
	__u64 skb;         /* the sk_buff's address: the same for a forwarded frame */
	__u64 head;        /* skb->head: shared by a flooded frame's clones */
	__u64 location;    /* STEP_FREED: kernel text address that freed it */
	__u16 vlan_tci;    /* with TF_VLAN_TAG */
	__u16 vlan_proto;  /* with TF_VLAN_TAG, network byte order as in the skb */
	__u16 cpu;         /* bpf_get_smp_processor_id() */
	__u16 pad0;
	__u8 frame[TRACE_SNAP_MAX]; /* only SNAPLEN bytes of it are sent */
};

#endif /* BRTRACE_H */
