"""Hook group `drops` (bpf/drops.bpf.c): every frame freed on the bridge or a
port (skb:kfree_skb), counted per (port, reason, location, ethertype), with
rate-limited samples."""

from tracer import abi
from tracer.decode import parse_drop_event
from tracer.hooks.base import Candidate, Hook, HookGroup

_U32, _U64 = abi.U32, abi.U64

ARGS = (
    ("ARG_SKB", "kfree_skb", "struct sk_buff *"),
    ("ARG_LOCATION", "kfree_skb", "void *"),
    ("ARG_REASON", "kfree_skb", "enum skb_drop_reason"),
)


def _decode(raw: bytes) -> dict:
    rec = parse_drop_event(raw)
    rec["kind"] = "drop"
    return rec


def read(mon, snap: dict) -> None:
    snap["drops"] = mon.run.maps.drop_counts()


GROUP = HookGroup(
    name="drops", source="drops.bpf.c", hook="drops",
    probes=(Hook("drops", "frames freed on the bridge and its ports, with the kernel's reason",
                 required=True, candidates=(Candidate("raw_tracepoint", "kfree_skb"),)),),
    args=ARGS,
    # The maps of common.bpf.h, which every group shares, are declared here
    # (drops is in every program but trace's, which declares them too).
    maps={"watch": (_U32, abi.WatchEntry), "watch_gen": (_U32, _U32), "stats": (_U32, _U64),
          "drop_counts": (abi.DropKey, _U64),
          # kfree_skb is where the neighbour layer's drops are seen too
          # (with NEIGH_DROPS); the neigh group reads them.
          "neigh_drops": (abi.NeighDropKey, _U64)},
    events={abi.CONST["EVENT_DROP"]: _decode},
    tracepoints=("kfree_skb",),
    read=read,
)
