"""IPv6 frames for tests that need neighbour discovery or ICMPv6 on the wire
(the lab's own builders are IPv4 and ARP)."""

import ipaddress

from tracer.lab import ether


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
