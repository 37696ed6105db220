"""Hook group `forward` (bpf/forward.bpf.c): the bridge's own forwarding
decisions, from kprobes on br_forward, br_flood and br_pass_frame_up, where
the kernel has kprobes; BridgeRun adds it to a run that has the port hooks.
Without kprobes the decisions are reconstructed from the port hooks."""

from tracer import abi
from tracer.hooks.base import Candidate, Hook, HookGroup


def read(mon, snap: dict) -> None:
    names = snap["slot_names"]
    for slot, values in mon.run.maps.decisions(sorted(names)).items():
        snap["counters"].setdefault(names[slot], {}).update(
            {abi.DECISION_NAMES[i]: v for i, v in enumerate(values) if i in abi.DECISION_NAMES})


GROUP = HookGroup(
    name="forward", source="forward.bpf.c", hook="forward",
    probes=(Hook("forward", "bridge forwarding decisions (ingress port, unicast/flood/local, egress)",
                 required=False,
                 candidates=(Candidate("fentry", "br_forward+br_flood+br_pass_frame_up", implemented=False),
                             Candidate("kprobe", "br_forward+br_flood+br_pass_frame_up"),
                             Candidate("reconstructed", "ports+kfree_skb",
                                       "from the frames entering and leaving each port, and the frees"))),),
    fields=(("BRPORT_DEV_OFF", "net_bridge_port", "dev"), ("BRPORT_STATE_OFF", "net_bridge_port", "state")),
    maps={"decisions": (abi.U32, abi.U64)},
    read=read,
)
