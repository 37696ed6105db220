"""Hook group `trace` (bpf/trace.bpf.c, records at the end of bpf/brtrace.h): every step
of selected frames through the bridge, for `brtrace trace`, which decodes its
records itself (tracer/trace_abi.py, tracer/journey.py). It runs alone, on
the drops hook's tracepoint and the two the port hooks fall back to."""

from tracer import abi
from tracer.hooks import drops, ports
from tracer.hooks.base import HookGroup
from tracer.trace_abi import EVENT_TRACE, parse_trace_event

GROUP = HookGroup(
    name="trace", source="trace.bpf.c", hook="drops",
    fields=(("SKB_VLAN_PROTO_OFF", "sk_buff", "vlan_proto"),),
    args=ports.GROUP.args + drops.ARGS,
    maps={"watch": (abi.U32, abi.WatchEntry), "watch_gen": (abi.U32, abi.U32), "stats": (abi.U32, abi.U64)},
    events={EVENT_TRACE: parse_trace_event},
    tracepoints=ports.TRACEPOINTS + ("kfree_skb",),
)
