"""Frames and ring-buffer records -> fields."""

import ctypes
import struct

import pytest

from tracer import abi
from tracer.decode import decode_frame, parse_drop_event, proto_name

GW = bytes.fromhex("020000000001")
VM = bytes.fromhex("020000000002")
BCAST = b"\xff" * 6


def arp_request(sha, spa, tpa):
    return (BCAST + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + sha + bytes(spa) + b"\x00" * 6 + bytes(tpa))


def ipv4_udp(src, dst, sport, dport):
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 0, 0, 64, 17, 0, bytes(src), bytes(dst))
    return GW + VM + b"\x08\x00" + ip + struct.pack("!HHHH", sport, dport, 8, 0)


def test_arp_request_fields():
    rec = decode_frame(arp_request(VM, [10, 0, 0, 2], [10, 0, 0, 1]))
    assert rec["proto"] == "arp"
    assert rec["dst_mac"] == "ff:ff:ff:ff:ff:ff" and rec["src_mac"] == "02:00:00:00:00:02"
    assert (rec["arp_op"], rec["arp_spa"], rec["arp_tpa"]) == ("request", "10.0.0.2", "10.0.0.1")
    assert "arp_gratuitous" not in rec


def test_gratuitous_arp_is_flagged():
    rec = decode_frame(arp_request(VM, [10, 0, 0, 2], [10, 0, 0, 2]))
    assert rec["arp_gratuitous"] is True


def test_ipv4_udp_ports():
    rec = decode_frame(ipv4_udp([10, 0, 0, 1], [10, 0, 0, 2], 1234, 9999))
    assert (rec["src_ip"], rec["dst_ip"], rec["ip_proto"]) == ("10.0.0.1", "10.0.0.2", "udp")
    assert (rec["src_port"], rec["dst_port"]) == (1234, 9999)


def test_vlan_tag_in_frame_and_accelerated():
    tagged = GW + VM + struct.pack("!HH", 0x8100, 42) + b"\x08\x06" + b"\x00" * 28
    assert decode_frame(tagged)["vlan"] == 42
    assert decode_frame(ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2), vlan_tci=7)["vlan"] == 7


def test_truncated_frames_yield_what_fits():
    assert decode_frame(b"\x00" * 10) == {}
    rec = decode_frame(ipv4_udp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)[:20])
    assert rec["proto"] == "ipv4" and "src_ip" not in rec


def test_proto_names():
    assert proto_name(0x0806) == "arp"
    assert proto_name(0x0026) == "llc"      # 802.3 length field: STP BPDU
    assert proto_name(0x1234) == "0x1234"


def test_parse_drop_event_roundtrip():
    ev = abi.DropEvent(kind=abi.CONST["EVENT_DROP"], ifindex=7, reason=119,
                       location=0xFFFFFFFF82159290, wire_len=42, ethertype=0x0806, ts_ns=5)
    frame = arp_request(VM, [10, 0, 0, 2], [10, 0, 0, 1])
    ev.frame_len = len(frame)
    ctypes.memmove(ev.frame, frame, len(frame))
    rec = parse_drop_event(bytes(ev))
    assert (rec["ifindex"], rec["reason"], rec["location"]) == (7, 119, 0xFFFFFFFF82159290)
    assert rec["arp_tpa"] == "10.0.0.1"
    with pytest.raises(ValueError):
        parse_drop_event(bytes(ev)[:10])
