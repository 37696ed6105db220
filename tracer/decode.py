"""Bytes from the kernel -> plain records. Pure: no bcc, no root.

A sampled drop arrives as a `struct drop_event` (bpf/brtrace.h) carrying the
first FRAME_BYTES bytes of the frame from its MAC header. This module turns it
into a dict with MACs, VLAN, ARP and IP fields, for JSON events and for the
explanations that need to know which MAC a frame was going to.
"""

from __future__ import annotations

import ctypes
import ipaddress
import struct

from tracer.abi import CONST, DropEvent, FdbEvent, FrameEvent, NeighEvent

ETHERTYPES = {
    0x0800: "ipv4", 0x0806: "arp", 0x86DD: "ipv6", 0x8100: "vlan", 0x88A8: "qinq",
    0x88CC: "lldp", 0x8035: "rarp", 0x8847: "mpls", 0x888E: "eapol",
}
IP_PROTOS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 2: "igmp", 47: "gre", 132: "sctp"}
ARP_OPS = {1: "request", 2: "reply"}
VLAN_TAGS = (0x8100, 0x88A8)


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def proto_name(ethertype: int) -> str:
    """A short protocol name for an ethertype (or 802.3 length field)."""
    if ethertype < 0x0600:
        return "llc"  # 802.3 length: STP BPDUs and other LLC frames
    return ETHERTYPES.get(ethertype, f"0x{ethertype:04x}")


def is_multicast(mac: str) -> bool:
    return bool(int(mac[:2], 16) & 1)


def decode_frame(frame: bytes, vlan_tci: int = 0) -> dict:
    """Parse Ethernet (+802.1Q/ad), ARP, IPv4, IPv6 and TCP/UDP ports from the
    start of a frame; fields that do not fit in `frame` are simply absent."""
    out: dict = {}
    if len(frame) < 14:
        return out
    out["dst_mac"], out["src_mac"] = mac_str(frame[0:6]), mac_str(frame[6:12])
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    vlans = [vlan_tci & 0x0FFF] if vlan_tci else []   # tag taken off by the device
    while ethertype in VLAN_TAGS and len(frame) >= off + 4:
        tci, ethertype = struct.unpack_from("!HH", frame, off)
        vlans.append(tci & 0x0FFF)
        off += 4
    if vlans:
        out["vlan"] = vlans[0] if len(vlans) == 1 else vlans
    out["ethertype"] = ethertype
    out["proto"] = proto_name(ethertype)
    if ethertype == 0x0806 and len(frame) >= off + 28:
        _decode_arp(frame, off, out)
    elif ethertype == 0x0800 and len(frame) >= off + 20:
        _decode_ipv4(frame, off, out)
    elif ethertype == 0x86DD and len(frame) >= off + 40:
        _decode_ipv6(frame, off, out)
    return out


def _decode_arp(frame: bytes, off: int, out: dict) -> None:
    htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, off)
    if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4:
        return
    out["arp_op"] = ARP_OPS.get(op, str(op))
    out["arp_sha"] = mac_str(frame[off + 8:off + 14])
    out["arp_spa"] = str(ipaddress.IPv4Address(frame[off + 14:off + 18]))
    out["arp_tha"] = mac_str(frame[off + 18:off + 24])
    out["arp_tpa"] = str(ipaddress.IPv4Address(frame[off + 24:off + 28]))
    if op == 1 and out["arp_spa"] == out["arp_tpa"]:
        out["arp_gratuitous"] = True


def _decode_ipv4(frame: bytes, off: int, out: dict) -> None:
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    out["src_ip"] = str(ipaddress.IPv4Address(frame[off + 12:off + 16]))
    out["dst_ip"] = str(ipaddress.IPv4Address(frame[off + 16:off + 20]))
    out["ip_proto"] = IP_PROTOS.get(proto, str(proto))
    _decode_ports(frame, off + ihl, proto, out)


def _decode_ipv6(frame: bytes, off: int, out: dict) -> None:
    nexthdr = frame[off + 6]
    out["src_ip"] = str(ipaddress.IPv6Address(frame[off + 8:off + 24]))
    out["dst_ip"] = str(ipaddress.IPv6Address(frame[off + 24:off + 40]))
    out["ip_proto"] = IP_PROTOS.get(nexthdr, str(nexthdr))
    _decode_ports(frame, off + 40, nexthdr, out)


def _decode_ports(frame: bytes, off: int, proto: int, out: dict) -> None:
    if proto in (6, 17) and len(frame) >= off + 4:
        out["src_port"], out["dst_port"] = struct.unpack_from("!HH", frame, off)
    elif proto in (1, 58) and len(frame) >= off + 2:
        out["icmp_type"] = frame[off]


def parse_drop_event(raw: bytes) -> dict:
    """A ring-buffer record (struct drop_event) -> dict of its fields and the
    decoded frame. Raises ValueError on a short record."""
    if len(raw) < ctypes.sizeof(DropEvent):
        raise ValueError(f"short drop record: {len(raw)} bytes")
    ev = DropEvent.from_buffer_copy(raw[:ctypes.sizeof(DropEvent)])
    frame = bytes(ev.frame[:ev.frame_len])
    rec = {"ts_ns": ev.ts_ns, "ifindex": ev.ifindex, "reason": ev.reason,
           "location": ev.location, "wire_len": ev.wire_len, "ethertype": ev.ethertype}
    rec.update(decode_frame(frame, ev.vlan_tci))
    # skb->protocol is what the kernel decided; prefer it when the frame is cut short
    rec.setdefault("proto", proto_name(ev.ethertype))
    return rec


def parse_fdb_event(raw: bytes) -> dict:
    if len(raw) < ctypes.sizeof(FdbEvent):
        raise ValueError(f"short fdb record: {len(raw)} bytes")
    ev = FdbEvent.from_buffer_copy(raw[:ctypes.sizeof(FdbEvent)])
    return {"kind": "fdb", "ts_ns": ev.ts_ns, "mac": mac_str(bytes(ev.mac)), "vlan": ev.vlan,
            "ifindex": ev.ifindex}




def parse_frame_event(raw: bytes) -> dict:
    if len(raw) < ctypes.sizeof(FrameEvent):
        raise ValueError(f"short frame record: {len(raw)} bytes")
    ev = FrameEvent.from_buffer_copy(raw[:ctypes.sizeof(FrameEvent)])
    kind = "echo" if ev.kind == CONST["EVENT_ECHO"] else "loop"
    rec = {"kind": kind, "ts_ns": ev.ts_ns, "ifindex": ev.ifindex, "wire_len": ev.wire_len}
    if kind == "loop":
        # LOOP_* bits (brtrace.h): how this copy relates to the frame's previous pass.
        rec["how"] = "returned" if ev.how & CONST["LOOP_SENT"] else "reentered"
        rec["crossed"] = bool(ev.how & CONST["LOOP_CROSSED"])
        rec["at_origin"] = bool(ev.how & CONST["LOOP_AT_ORIGIN"])
        # an origin copy: a loop beyond the port, or its host repeating one frame fast
        rec["run"] = bool(ev.how & CONST["LOOP_RUN"])
        rec["prev_ifindex"] = ev.prev_ifindex
        rec["gap_ticks"] = ev.gap_ticks
    rec.update(decode_frame(bytes(ev.frame[:ev.frame_len])))
    return rec


# NUD_* states (include/uapi/linux/neighbour.h, stable ABI).
NUD_STATES = {0x00: "none", 0x01: "incomplete", 0x02: "reachable", 0x04: "stale", 0x08: "delay",
              0x10: "probe", 0x20: "failed", 0x40: "noarp", 0x80: "permanent"}


def nud_name(state: int) -> str:
    return NUD_STATES.get(state, f"0x{state:02x}")


def neigh_addr(family: int, raw: bytes) -> str:
    if family == 10:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return str(ipaddress.IPv4Address(bytes(raw[:4])))


def parse_neigh_event(raw: bytes) -> dict:
    if len(raw) < ctypes.sizeof(NeighEvent):
        raise ValueError(f"short neigh record: {len(raw)} bytes")
    ev = NeighEvent.from_buffer_copy(raw[:ctypes.sizeof(NeighEvent)])
    return {"kind": "neigh", "ts_ns": ev.ts_ns, "netns": ev.netns, "ifindex": ev.ifindex,
            "ip": neigh_addr(ev.family, bytes(ev.addr)), "old_state": nud_name(ev.old_state),
            "new_state": nud_name(ev.new_state), "old_lladdr": mac_str(bytes(ev.old_lladdr)),
            "new_lladdr": mac_str(bytes(ev.new_lladdr))}
