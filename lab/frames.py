"""Frame builders (pure functions, easy to unit test), and what a sender sends."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Optional

# Ethertypes used by the frame builders.
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
# IEEE 802 "local experimental" ethertype: no protocol handler in the kernel,
# so frames of this type are easy to recognise (kfree_skb protocol=0xb588 when
# printed host-endian) and are never answered by a stack.
ETH_P_LAB = 0x88B5

BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac_bytes(mac: str) -> bytes:
    """'02:00:..' -> 6 bytes."""
    raw = bytes(int(part, 16) for part in mac.split(":"))
    if len(raw) != 6:
        raise ValueError("bad MAC %r" % mac)
    return raw


def pad60(frame: bytes) -> bytes:
    """Pad to the 60-byte Ethernet minimum (without FCS): veth does not pad for us."""
    return frame + b"\x00" * max(0, 60 - len(frame))


def ether(dst: str, src: str, ethertype: int, payload: bytes = b"") -> bytes:
    """An Ethernet II frame, padded to 60 bytes."""
    return pad60(mac_bytes(dst) + mac_bytes(src) + struct.pack("!H", ethertype) + payload)


def inet_checksum(data: bytes) -> int:
    """RFC 1071 ones-complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request(src_mac: str, src_ip: str, target_ip: str) -> bytes:
    """Broadcast who-has TARGET tell SRC."""
    body = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1)
    body += mac_bytes(src_mac) + socket.inet_aton(src_ip)
    body += b"\x00" * 6 + socket.inet_aton(target_ip)
    return ether(BROADCAST, src_mac, ETH_P_ARP, body)


def ipv4_udp(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str,
             sport: int, dport: int, payload: bytes = b"", ttl: int = 64,
             frame_len: Optional[int] = None) -> bytes:
    """An Ethernet/IPv4/UDP frame with correct IP and UDP checksums.

    frame_len, if given, grows the UDP payload so the whole frame (14-byte
    Ethernet header included) is exactly that long: handy for MTU tests.
    """
    if frame_len is not None:
        need = frame_len - 14 - 20 - 8
        if need < len(payload):
            raise ValueError("frame_len %d too small" % frame_len)
        payload = payload + b"\x00" * (need - len(payload))
    udp_len = 8 + len(payload)
    src, dst = socket.inet_aton(src_ip), socket.inet_aton(dst_ip)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", sport, dport, udp_len, 0) + payload
    csum = inet_checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, ttl, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    return ether(dst_mac, src_mac, ETH_P_IP, ip + udp)


def ipv6_icmp(dst_mac: str, src_mac: str, src: str, dst: str, icmp_type: int, body: bytes = b"",
              next_header: int = 58) -> bytes:
    """An Ethernet frame with an IPv6 header and an ICMPv6 message (or, with
    another next header, that payload). Checksums are not checked on a bridge."""
    payload = bytes([icmp_type, 0, 0, 0]) + body if next_header == 58 else body
    header = (bytes([0x60, 0, 0, 0]) + len(payload).to_bytes(2, "big") + bytes([next_header, 255])
              + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed)
    return ether(dst_mac, src_mac, 0x86DD, header + payload)


def neighbour_solicitation(src_mac: str, src: str, target: str) -> bytes:
    """A Neighbor Solicitation for `target`, to its solicited-node multicast
    group (ff02::1:ffXX:XXXX, MAC 33:33:ff:XX:XX:XX); src "::" makes it a
    Duplicate Address Detection probe."""
    low = ipaddress.IPv6Address(target).packed[-3:]
    group = ipaddress.IPv6Address(bytes.fromhex("ff0200000000000000000001ff") + low)
    mac = "33:33:ff:" + ":".join(f"{b:02x}" for b in low)
    return ipv6_icmp(mac, src_mac, src, str(group), 135, bytes(4) + ipaddress.IPv6Address(target).packed)


@dataclass(frozen=True)
class Frames:
    """What a sender sends: a template, and where a per-frame counter goes.

    Frame i carries base + (i % distinct) as a big-endian u32 at `offset`
    (distinct <= 1: the template unchanged)."""
    template: bytes
    offset: int = 0
    distinct: int = 1

    def frame(self, i: int) -> bytes:
        """Frame number i, as the sender builds it (lab/children/sender.c)."""
        if self.distinct <= 1:
            return self.template
        base = int.from_bytes(self.template[self.offset:self.offset + 4], "big")
        value = (base + i % self.distinct) & 0xFFFFFFFF
        return self.template[:self.offset] + value.to_bytes(4, "big") + self.template[self.offset + 4:]
