"""The -D defines that specialise brtrace's BPF C for the running kernel, all
from its BTF: struct field offsets, raw-tracepoint argument positions, and the
BTF ids the direct kernel reads cast to (tracer/kernel/kfunc.py).

No header's struct layout is trusted: headers of another kernel version serve
bcc, and these defines say where things are in this one.
"""

from __future__ import annotations

from tracer.errors import KernelFeatureError
from tracer.kernel.btf import KIND_FUNC, KIND_STRUCT, Btf

# (define, struct, member path): every kernel memory read the BPF side makes.
# common.bpf.h's reads come first; each hook group adds its own.
COMMON_FIELDS = (
    ("SKB_DEV_OFF", "sk_buff", "dev"),
    ("SKB_HEAD_OFF", "sk_buff", "head"),
    ("SKB_DATA_OFF", "sk_buff", "data"),
    ("SKB_LEN_OFF", "sk_buff", "len"),
    ("SKB_MAC_HEADER_OFF", "sk_buff", "mac_header"),
    ("SKB_PROTOCOL_OFF", "sk_buff", "protocol"),
    ("SKB_VLAN_TCI_OFF", "sk_buff", "vlan_tci"),
    ("DEV_IFINDEX_OFF", "net_device", "ifindex"),
    ("DEV_ND_NET_OFF", "net_device", "nd_net"),
    ("NET_NS_INUM_OFF", "net", "ns.inum"),
)

# Per hook group (bpf/<file>): extra fields, and (define, raw tracepoint,
# argument type or spellings) for positions in ctx->args[].
GROUPS = {
    "drops.bpf.c": ((), (
        ("ARG_SKB", "kfree_skb", "struct sk_buff *"),
        ("ARG_LOCATION", "kfree_skb", "void *"),
        ("ARG_REASON", "kfree_skb", "enum skb_drop_reason"),
    )),
    "forward.bpf.c": ((), (
        ("ARG_RX_SKB", "netif_receive_skb", "struct sk_buff *"),
        ("ARG_TX_SKB", "net_dev_queue", "struct sk_buff *"),
    )),
    "decide.bpf.c": ((
        ("BRPORT_DEV_OFF", "net_bridge_port", "dev"),
        ("BRPORT_STATE_OFF", "net_bridge_port", "state"),
    ), ()),
    "neigh.bpf.c": ((
        ("NEIGH_DEV_OFF", "neighbour", "dev"),
        ("NEIGH_TBL_OFF", "neighbour", "tbl"),
        ("NEIGH_STATE_OFF", "neighbour", "nud_state"),
        ("NEIGH_HA_OFF", "neighbour", "ha"),
        ("NEIGH_KEY_OFF", "neighbour", "primary_key"),
        ("TBL_FAMILY_OFF", "neigh_table", "family"),
    ), (
        ("ARG_NEIGH_UPDATE_DONE", "neigh_update_done", "struct neighbour *"),
        ("ARG_NEIGH_TIMER", "neigh_timer_handler", "struct neighbour *"),
        ("ARG_NEIGH_SEND_DONE", "neigh_event_send_done", "struct neighbour *"),
        ("ARG_NEIGH_SEND_DEAD", "neigh_event_send_dead", "struct neighbour *"),
    )),
    "trace.bpf.c": ((
        ("SKB_VLAN_PROTO_OFF", "sk_buff", "vlan_proto"),
    ), (
        ("ARG_RX_SKB", "netif_receive_skb", "struct sk_buff *"),
        ("ARG_TX_SKB", "net_dev_queue", "struct sk_buff *"),
        ("ARG_SKB", "kfree_skb", "struct sk_buff *"),
        ("ARG_LOCATION", "kfree_skb", "void *"),
        ("ARG_REASON", "kfree_skb", "enum skb_drop_reason"),
    )),
    "fdb.bpf.c": ((
        ("BR_DEV_OFF", "net_bridge", "dev"),
        ("BRPORT_DEV_OFF", "net_bridge_port", "dev"),
    ), (
        ("ARG_FDB_BR", "br_fdb_update", "struct net_bridge *"),
        ("ARG_FDB_PORT", "br_fdb_update", "struct net_bridge_port *"),
        ("ARG_FDB_ADDR", "br_fdb_update", ("unsigned char *", "const unsigned char *")),
        ("ARG_FDB_VID", "br_fdb_update", ("u16", "__u16")),
    )),
}

# Kept for tests and doctor: everything the drops view reads.
FIELD_DEFINES = COMMON_FIELDS
ARG_DEFINES = GROUPS["drops.bpf.c"][1]

# Direct kernel reads (tracer/kernel/kfunc.py): the kfunc, and the structs the
# C code reads through casts (common.bpf.h: KREAD()).
KFUNC = "bpf_rdonly_cast"
CAST_TYPES = {"BTF_ID_SK_BUFF": "sk_buff", "BTF_ID_NET_DEVICE": "net_device", "BTF_ID_NET": "net"}


def cast_ids(btf: Btf) -> dict | None:
    """{define: BTF id} for the kfunc and the cast types, or None if BTF lacks one."""
    try:
        out = {"KFUNC_RDONLY_CAST_ID": btf.find(KFUNC, KIND_FUNC)}
        for define, struct in CAST_TYPES.items():
            out[define] = btf.find(struct, KIND_STRUCT)
    except KernelFeatureError:
        return None
    return out


def kernel_defines(btf: Btf, sources=("drops.bpf.c",), direct_reads: bool = False) -> dict[str, int]:
    """Offsets and argument positions for this kernel, from its BTF; with
    direct_reads (Features.direct_reads), the BTF ids KREAD() casts to."""
    fields = list(COMMON_FIELDS)
    args = []
    for src in sources:
        extra_fields, extra_args = GROUPS[src]
        fields += extra_fields
        args += extra_args
    found = {name: btf.field(struct, path) for name, struct, path in dict.fromkeys(fields)}
    out = {name: f.offset for name, f in found.items()}
    # frame_start() (common.bpf.h) reads these four sk_buff fields with one
    # bpf_probe_read_kernel() of the span that holds them, when it is short.
    span = [found[n] for n in ("SKB_LEN_OFF", "SKB_MAC_HEADER_OFF", "SKB_HEAD_OFF", "SKB_DATA_OFF")]
    out["SKB_SPAN_START"] = min(f.offset for f in span)
    out["SKB_SPAN_LEN"] = max(f.offset + f.size for f in span) - out["SKB_SPAN_START"]
    for name, tp, type_name in args:
        out[name] = btf.arg_index(tp, type_name)
    ids = cast_ids(btf) if direct_reads else None
    out["KERNEL_READS_DIRECT"] = int(ids is not None)
    out.update(ids or {})
    return out
