"""Python's mirror of bpf/brtrace.h, the one ABI between the BPF programs and us.

Constants are read from the header itself, so they exist once. Struct layouts are
mirrored here with ctypes; tests/unit/test_abi.py compiles the header with the
host C compiler and checks that every size and offset agrees.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
HEADER = BPF_DIR / "brtrace.h"


def read_defines(path: Path = HEADER) -> dict[str, int]:
    """Integer #defines of a header (the ABI constants)."""
    out = {}
    for m in re.finditer(r"^#define\s+([A-Z_][A-Z0-9_]*)\s+(0x[0-9a-fA-F]+|\d+)\b",
                         path.read_text(), re.M):
        out[m.group(1)] = int(m.group(2), 0)
    return out


CONST = read_defines()
# Record kinds (EVENT_*) by value -> "drop", "fdb", ...
EVENT_KIND_NAMES = {v: k[6:].lower() for k, v in CONST.items() if k.startswith("EVENT_") and k != "EVENT_KINDS"}


def stat_kind_slot(kind: int, what: int) -> int:
    """brtrace.h's STAT_KIND_SLOT(kind, what): a record kind's stat slot."""
    return CONST["STAT_KIND_BASE"] + kind * CONST["STAT_PER_KIND"] + what
FRAME_BYTES = CONST["FRAME_BYTES"]


class WatchEntry(ctypes.Structure):
    _fields_ = [
        ("value", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class PortCtrs(ctypes.Structure):
    _fields_ = [("c", ctypes.c_uint64 * CONST["PORT_COUNTERS"])]


class DropKey(ctypes.Structure):
    _fields_ = [
        ("location", ctypes.c_uint64),
        ("ifindex", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("ethertype", ctypes.c_uint16),
        ("pad0", ctypes.c_uint16),
        ("pad1", ctypes.c_uint32),
    ]


class DropEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("frame_len", ctypes.c_uint8),
        ("ethertype", ctypes.c_uint16),
        ("vlan_tci", ctypes.c_uint16),
        ("pad0", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("wire_len", ctypes.c_uint32),
        ("pad1", ctypes.c_uint32),
        ("ts_ns", ctypes.c_uint64),
        ("location", ctypes.c_uint64),
        ("frame", ctypes.c_uint8 * FRAME_BYTES),
    ]


class FdbKey(ctypes.Structure):
    _fields_ = [("mac", ctypes.c_uint8 * 6), ("vlan", ctypes.c_uint16)]


class FdbMove(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
        ("slot", ctypes.c_uint32),
        ("prev_slot", ctypes.c_uint32),
    ]


class FdbEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("pad0", ctypes.c_uint8),
        ("vlan", ctypes.c_uint16),
        ("mac", ctypes.c_uint8 * 6),
        ("pad1", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
        ("ts_ns", ctypes.c_uint64),
    ]


class FrameEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("frame_len", ctypes.c_uint8),
        ("how", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("wire_len", ctypes.c_uint32),
        ("prev_ifindex", ctypes.c_uint32),
        ("gap_ticks", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("ts_ns", ctypes.c_uint64),
        ("frame", ctypes.c_uint8 * FRAME_BYTES),
    ]


class ArpTarget(ctypes.Structure):
    _fields_ = [
        ("ip", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("requests", ctypes.c_uint64),
        ("replies", ctypes.c_uint64),
        ("conflicts", ctypes.c_uint64),
        ("mac", ctypes.c_uint8 * 6),
        ("other_mac", ctypes.c_uint8 * 6),
        ("asker_slot", ctypes.c_uint32),
        ("claimer_slot", ctypes.c_uint32),
        ("other_slot", ctypes.c_uint32),
    ]


class NdpTarget(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8 * 16),
        ("solicits", ctypes.c_uint64),
        ("dad_probes", ctypes.c_uint64),
        ("adverts", ctypes.c_uint64),
        ("solicited", ctypes.c_uint64),
        ("overrides", ctypes.c_uint64),
        ("routers", ctypes.c_uint64),
        ("conflicts", ctypes.c_uint64),
        ("elsewhere", ctypes.c_uint64),
        ("dad_answered", ctypes.c_uint64),
        ("copies", ctypes.c_uint64),
        ("mac", ctypes.c_uint8 * 6),
        ("other_mac", ctypes.c_uint8 * 6),
        ("prober_mac", ctypes.c_uint8 * 6),
        ("answer_mac", ctypes.c_uint8 * 6),
        ("asker_slot", ctypes.c_uint32),
        ("claimer_slot", ctypes.c_uint32),
        ("other_slot", ctypes.c_uint32),
        ("echo_slot", ctypes.c_uint32),
        ("prober_slot", ctypes.c_uint32),
        ("answer_slot", ctypes.c_uint32),
        ("dad_tick", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


# ndp_target's counters, in the order of the struct (the map reader adds
# them up over the ways one address may hold).
NDP_COUNTS = ("solicits", "dad_probes", "adverts", "solicited", "overrides", "routers", "conflicts",
              "elsewhere", "dad_answered", "copies")


class NeighKey(ctypes.Structure):
    _fields_ = [
        ("netns", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 7),
        ("addr", ctypes.c_uint8 * 16),
    ]


class NeighStats(ctypes.Structure):
    _fields_ = [
        ("failed", ctypes.c_uint64),
        ("incomplete", ctypes.c_uint64),
        ("reachable", ctypes.c_uint64),
        ("stale", ctypes.c_uint64),
        ("lladdr_changes", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
        ("state", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 1),
        ("lladdr", ctypes.c_uint8 * 6),
        ("prev_lladdr", ctypes.c_uint8 * 6),
        ("pad2", ctypes.c_uint8 * 2),
    ]


class NeighDropKey(ctypes.Structure):
    _fields_ = [("netns", ctypes.c_uint32), ("ifindex", ctypes.c_uint32), ("reason", ctypes.c_uint32)]


class NeighEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("old_state", ctypes.c_uint8),
        ("new_state", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("netns", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("ts_ns", ctypes.c_uint64),
        ("addr", ctypes.c_uint8 * 16),
        ("old_lladdr", ctypes.c_uint8 * 6),
        ("new_lladdr", ctypes.c_uint8 * 6),
        ("pad2", ctypes.c_uint8 * 4),
    ]


# Every struct the header defines, by its C name (the ABI test walks this).
STRUCTS = {"watch_entry": WatchEntry, "port_ctrs": PortCtrs, "drop_key": DropKey, "drop_event": DropEvent,
           "fdb_key": FdbKey, "fdb_move": FdbMove, "fdb_event": FdbEvent, "frame_event": FrameEvent,
           "arp_target": ArpTarget, "ndp_target": NdpTarget, "neigh_key": NeighKey, "neigh_stats": NeighStats,
           "neigh_event": NeighEvent, "neigh_drop_key": NeighDropKey}

# Map key/value types of plain integers. The maps themselves are declared by
# the hook groups that define them (tracer/hooks/).
U32, U64 = ctypes.c_uint32, ctypes.c_uint64
# The ring buffer every record kind arrives through.
EVENTS_MAP = "events"

# Names of the per-port counters (PC_* in the header), by index.
PORT_COUNTER_NAMES = {v: k[3:].lower() for k, v in CONST.items() if k.startswith("PC_")}
# Names of the per-port decision counters (DEC_* in the header), by index;
# prefixed so they sit beside the port counters without clashing.
DECISION_NAMES = {v: "decided_" + k[4:].lower() for k, v in CONST.items() if k.startswith("DEC_")}
