"""Hook group `ports` (bpf/ports.bpf.c): frames entering and leaving each
port (tcx programs linked to the bridge and its ports, or the
netif_receive_skb/net_dev_queue tracepoints): per-port counters, own-address
echoes, the ARP table, flood fingerprints and the copies that come back. It
also reconstructs the forwarding decisions where kprobes are missing."""

from tracer import abi
from tracer.decode import parse_frame_event
from tracer.hooks.base import Candidate, Hook, HookGroup

# Attached and detached again by BridgeRun.set_detail() when not on tcx.
TRACEPOINTS = ("netif_receive_skb", "net_dev_queue")


# ndp_target's ports, each named only when the count it belongs to is not
# zero (slot 0 is the bridge itself, a port in its own right).
_NDP_SLOTS = {"asker_slot": ("asker", ("solicits",)), "claimer_slot": ("claimer", ("adverts", "routers")),
              "other_slot": ("other", ("conflicts",)), "echo_slot": ("echo", ("copies", "elsewhere")),
              "prober_slot": ("prober", ("dad_probes",)), "answer_slot": ("answerer", ("dad_answered",))}


def ndp_named(t: dict, names: dict) -> dict:
    """An ndp_targets row with its slots turned into port names (None
    where nothing of that kind was seen)."""
    out = {k: v for k, v in t.items() if k not in _NDP_SLOTS}
    for slot_key, (name, counts) in _NDP_SLOTS.items():
        out[name] = names.get(t[slot_key]) if any(t[c] for c in counts) else None
    return out


def read(mon, snap: dict) -> None:
    maps, names = mon.run.maps, snap["slot_names"]
    for slot, values in maps.port_counters(sorted(names)).items():
        snap["counters"].setdefault(names[slot], {}).update(
            {abi.PORT_COUNTER_NAMES[i]: v for i, v in enumerate(values) if i in abi.PORT_COUNTER_NAMES})
    last = mon.last_snapshot
    if not maps.detail and "arp" in last:
        # Detached (watch, disarmed): the tables cannot change, and reading
        # them whole (6144 entries) is most of an idle second's work.
        snap["arp"], snap["ndp"] = last["arp"], last["ndp"]
        return
    snap["arp"] = [{**t, "asker": names.get(t["asker_slot"]), "claimer": names.get(t["claimer_slot"]),
                    "other": names.get(t["other_slot"])} for t in maps.arp_targets()]
    snap["ndp"] = [ndp_named(t, names) for t in maps.ndp_targets()]


GROUP = HookGroup(
    name="ports", source="ports.bpf.c", hook="ports",
    probes=(Hook("ports", "frames entering and leaving each port: counters, own-address echoes, "
                 "flood fingerprints", required=False,
                 candidates=(Candidate("tcx", "ingress+egress", "linked to the bridge and its ports only"),
                             Candidate("raw_tracepoint", "netif_receive_skb+net_dev_queue",
                                       "run for every device of the host, filtered in the program"))),),
    args=(("ARG_RX_SKB", "netif_receive_skb", "struct sk_buff *"),
          ("ARG_TX_SKB", "net_dev_queue", "struct sk_buff *")),
    maps={"port_counters": (abi.U32, abi.PortCtrs), "own_macs": (abi.U64, abi.U32),
          "own_mac_lo": (abi.U32, abi.U32), "arp_targets": (abi.U32, abi.ArpTarget),
          "ndp_targets": (abi.U32, abi.NdpTarget)},
    events={abi.CONST["EVENT_ECHO"]: parse_frame_event, abi.CONST["EVENT_LOOP"]: parse_frame_event},
    tracepoints=TRACEPOINTS,
    read=read,
)
