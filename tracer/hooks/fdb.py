"""Hook group `fdb` (bpf/fdb.bpf.c): FDB entries created or moved between
ports (bridge:br_fdb_update fires only then), per MAC and per port."""

from tracer import abi
from tracer.decode import parse_fdb_event
from tracer.hooks.base import Candidate, Hook, HookGroup


def read(mon, snap: dict) -> None:
    maps, names = mon.run.maps, snap["slot_names"]
    for slot, n in maps.fdb_learned(sorted(names)).items():
        snap["counters"].setdefault(names[slot], {})["fdb_learned"] = n
    snap["moves"] = [{**m, "port": names.get(m["slot"]),
                      "prev_port": names.get(m["prev_slot"]) if m["count"] > 1 else None}
                     for m in maps.fdb_moves()]


GROUP = HookGroup(
    name="fdb", source="fdb.bpf.c", hook="fdb",
    probes=(Hook("fdb", "FDB entries created or moved between ports (MAC flapping)", required=False,
                 candidates=(Candidate("raw_tracepoint", "br_fdb_update"),)),),
    fields=(("BR_DEV_OFF", "net_bridge", "dev"), ("BRPORT_DEV_OFF", "net_bridge_port", "dev")),
    args=(("ARG_FDB_BR", "br_fdb_update", "struct net_bridge *"),
          ("ARG_FDB_PORT", "br_fdb_update", "struct net_bridge_port *"),
          ("ARG_FDB_ADDR", "br_fdb_update", ("unsigned char *", "const unsigned char *")),
          ("ARG_FDB_VID", "br_fdb_update", ("u16", "__u16"))),
    maps={"fdb_port_counters": (abi.U32, abi.U64), "fdb_moves": (abi.FdbKey, abi.FdbMove)},
    events={abi.CONST["EVENT_FDB"]: parse_fdb_event},
    tracepoints=("br_fdb_update",),
    read=read,
)
