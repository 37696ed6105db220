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


def kernel_defines(btf: Btf, fields=(), args=(), direct_reads: bool = False) -> dict[str, int]:
    """Offsets and argument positions for this kernel, from its BTF: common.bpf.h's
    fields and those the hook groups declare (tracer/hooks: `fields` as
    (define, struct, member path), `args` as (define, raw tracepoint, argument
    type or its spellings) for positions in ctx->args[]); with direct_reads
    (Features.direct_reads), the BTF ids KREAD() casts to."""
    fields = list(COMMON_FIELDS) + list(fields)
    args = list(args)
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
