"""Hook group `neigh` (bpf/neigh.bpf.c): the kernel's neighbour (ARP/NDP)
state machine, from the neigh:* tracepoints, in the bridge's namespace or
every one (--all-netns), and the packets it drops."""

from tracer import abi
from tracer.decode import parse_neigh_event
from tracer.hooks.base import Candidate, Hook, HookGroup

TRACEPOINTS = ("neigh_update_done", "neigh_timer_handler", "neigh_event_send_done", "neigh_event_send_dead")


def read(mon, snap: dict) -> None:
    maps = mon.run.maps
    neigh = [{**n, "dev": mon.device_name(n["netns"], n["ifindex"])} for n in maps.neigh_entries()]
    # Packets the neighbour layer dropped, by device (neigh --all-netns):
    # counted by the drops group's kfree_skb program (drops.bpf.c, NEIGH_DROPS).
    queue_drops: dict = {}
    for d in maps.neigh_drops():
        dev = mon.device_name(d["netns"], d["ifindex"])
        queue_drops.setdefault(dev, {})[mon.run.kernel.reasons.name(d["reason"])] = d["count"]
    for n in neigh:
        n["dropped"] = queue_drops.get(n["dev"], {})
    snap["neigh"] = neigh


GROUP = HookGroup(
    name="neigh", source="neigh.bpf.c", hook="neigh",
    probes=(Hook("neigh", "neighbour (ARP/NDP) state changes", required=False,
                 candidates=(Candidate("raw_tracepoint", "+".join(TRACEPOINTS)),)),),
    fields=(("NEIGH_DEV_OFF", "neighbour", "dev"), ("NEIGH_TBL_OFF", "neighbour", "tbl"),
            ("NEIGH_STATE_OFF", "neighbour", "nud_state"), ("NEIGH_HA_OFF", "neighbour", "ha"),
            ("NEIGH_KEY_OFF", "neighbour", "primary_key"), ("TBL_FAMILY_OFF", "neigh_table", "family")),
    args=(("ARG_NEIGH_UPDATE_DONE", "neigh_update_done", "struct neighbour *"),
          ("ARG_NEIGH_TIMER", "neigh_timer_handler", "struct neighbour *"),
          ("ARG_NEIGH_SEND_DONE", "neigh_event_send_done", "struct neighbour *"),
          ("ARG_NEIGH_SEND_DEAD", "neigh_event_send_dead", "struct neighbour *")),
    maps={"neigh_entries": (abi.NeighKey, abi.NeighStats)},
    events={abi.CONST["EVENT_NEIGH"]: parse_neigh_event},
    tracepoints=TRACEPOINTS,
    read=read,
)
