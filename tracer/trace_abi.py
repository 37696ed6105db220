"""Python's mirror of `brtrace trace`'s records (the end of bpf/brtrace.h). Pure.

Constants are read from the header; the struct is mirrored with ctypes and
tests/unit/test_trace_abi.py checks it against the host C compiler. A record
on the ring is the header of `struct trace_event` plus SNAPLEN bytes of the
frame (not the whole TRACE_SNAP_MAX array), so parse_trace_event() accepts any
length from the header on.
"""

from __future__ import annotations

import ctypes
import ipaddress

from tracer.abi import BPF_DIR, read_defines

HEADER = BPF_DIR / "brtrace.h"
CONST = read_defines(HEADER)
SNAP_MAX = CONST["TRACE_SNAP_MAX"]
EVENT_TRACE = CONST["EVENT_TRACE"]


class TraceEvent(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_uint8),
        ("step", ctypes.c_uint8),
        ("cap_len", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ifindex", ctypes.c_uint32),
        ("wire_len", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("ts_ns", ctypes.c_uint64),
        ("skb", ctypes.c_uint64),
        ("head", ctypes.c_uint64),
        ("location", ctypes.c_uint64),
        ("vlan_tci", ctypes.c_uint16),
        ("vlan_proto", ctypes.c_uint16),
        ("cpu", ctypes.c_uint16),
        ("pad0", ctypes.c_uint16),
        ("frame", ctypes.c_uint8 * SNAP_MAX),
    ]


STRUCTS = {"trace_event": TraceEvent}
HEADER_SIZE = TraceEvent.frame.offset

# STEP_* -> the name records and pcapng comments use.
STEP_NAMES = {v: k[5:].lower() for k, v in CONST.items() if k.startswith("STEP_")}


def parse_trace_event(raw: bytes) -> dict:
    """One ring-buffer record -> dict (frame bytes included, cut to cap_len).
    Raises ValueError on a record that is not a trace step or is short."""
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"short trace record: {len(raw)} bytes")
    if raw[0] != EVENT_TRACE:
        raise ValueError(f"not a trace record (kind {raw[0]})")
    ev = TraceEvent.from_buffer_copy(raw[:HEADER_SIZE].ljust(ctypes.sizeof(TraceEvent), b"\0"))
    cap = min(ev.cap_len, len(raw) - HEADER_SIZE, ev.wire_len)
    vlan = ev.flags & CONST["TF_VLAN_TAG"]
    return {"step": STEP_NAMES.get(ev.step, str(ev.step)), "ts_ns": ev.ts_ns, "skb": ev.skb,
            "head": ev.head, "ifindex": ev.ifindex, "wire_len": ev.wire_len,
            "reason": ev.reason, "location": ev.location, "cpu": ev.cpu,
            "vlan_tci": ev.vlan_tci if vlan else None,
            "vlan_proto": int.from_bytes(ev.vlan_proto.to_bytes(2, "little"), "big") if vlan else None,
            "held": bool(ev.flags & CONST["TF_PENDING"]),
            "frame": bytes(raw[HEADER_SIZE:HEADER_SIZE + cap])}


def mac_filter(mac: str) -> int:
    """FILTER_MAC for a MAC: its 6 bytes in a little-endian u64 (0: none)."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return int.from_bytes(raw, "little")


def ip_filter(ip: str) -> int:
    """FILTER_IP for an IPv4 address: its 4 bytes in a little-endian u32."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def ip6_filter(ip: str) -> dict:
    """FILTER_IP6 and its four words for an IPv6 address: each 4 bytes of it
    in a little-endian u32, as trace.bpf.c's ip6_at() loads them."""
    raw = ipaddress.IPv6Address(ip).packed
    return {"FILTER_IP6": 1, **{f"FILTER_IP6_W{i}": int.from_bytes(raw[4 * i:4 * i + 4], "little")
                                for i in range(4)}}
