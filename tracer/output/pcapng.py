"""A minimal pcapng writer (no dependencies). Pure.

Layout written (pcapng, IETF draft-ietf-opsawg-pcapng; little-endian host order,
which the byte-order magic declares):

  Section Header Block   (0x0A0D0D0A) once, with shb_userappl
  Interface Description  (0x00000001) one per port, written at its first use:
                         LINKTYPE_ETHERNET, snaplen, if_name, if_description,
                         if_tsresol = 9 (timestamps in nanoseconds)
  Enhanced Packet Block  (0x00000006) one per step: interface id, 64-bit
                         timestamp, captured and original length, the bytes,
                         opt_comment and epb_flags (inbound/outbound)

Every block is `type, total length, body, total length`, bodies and option
values padded to 32 bits.
"""

from __future__ import annotations

import struct

SHB = 0x0A0D0D0A
IDB = 0x00000001
EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1

OPT_END = 0
OPT_COMMENT = 1
SHB_USERAPPL = 4
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
EPB_FLAGS = 2
# epb_flags bits 0-1: direction
INBOUND, OUTBOUND = 1, 2


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _options(opts) -> bytes:
    """(code, bytes) pairs -> option list with opt_endofopt (nothing if empty)."""
    out = b""
    for code, value in opts:
        if value is None:
            continue
        out += struct.pack("<HH", code, len(value)) + _pad(value)
    return out + struct.pack("<HH", OPT_END, 0) if out else b""


def _block(btype: int, body: bytes) -> bytes:
    body = _pad(body)
    total = 12 + len(body)
    return struct.pack("<II", btype, total) + body + struct.pack("<I", total)


def with_vlan_tag(data: bytes, tci: int, proto: int = 0x8100) -> bytes:
    """Put an accelerated VLAN tag (kept by the kernel beside the frame) back
    into the frame's bytes after the MAC addresses, as it was on the wire."""
    if len(data) < 12:
        return data
    return data[:12] + struct.pack("!HH", proto or 0x8100, tci) + data[12:]


class PcapngWriter:
    """Write to a binary stream; interfaces are added by name on first use."""

    def __init__(self, stream, snaplen: int = 262144, application: str = "brtrace"):
        self.stream = stream
        self.snaplen = snaplen
        self.ifaces: dict = {}         # name -> interface id
        self.packets = 0
        stream.write(_block(SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                            + _options([(SHB_USERAPPL, application.encode())])))

    def interface(self, name: str, description: str | None = None) -> int:
        """The interface id of `name`, writing its IDB the first time."""
        if name in self.ifaces:
            return self.ifaces[name]
        opts = [(IF_NAME, name.encode()),
                (IF_DESCRIPTION, description.encode() if description else None),
                (IF_TSRESOL, bytes([9]))]
        self.stream.write(_block(IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, self.snaplen)
                                 + _options(opts)))
        self.ifaces[name] = len(self.ifaces)
        return self.ifaces[name]

    def packet(self, iface: str, ts_ns: int, data: bytes, orig_len: int | None = None,
               comment: str | None = None, direction: int | None = None) -> None:
        """One Enhanced Packet Block; ts_ns is wall-clock nanoseconds since 1970."""
        if_id = self.interface(iface)
        data = bytes(data[:self.snaplen])
        orig = max(orig_len if orig_len is not None else len(data), len(data))
        opts = [(OPT_COMMENT, comment.encode() if comment else None),
                (EPB_FLAGS, struct.pack("<I", direction) if direction else None)]
        body = struct.pack("<IIIII", if_id, (ts_ns >> 32) & 0xFFFFFFFF, ts_ns & 0xFFFFFFFF,
                           len(data), orig)
        self.stream.write(_block(EPB, body + _pad(data) + _options(opts)))
        self.packets += 1

    def flush(self) -> None:
        self.stream.flush()
