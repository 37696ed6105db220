"""Lab child, for machines without iputils ping: ICMP echo over a raw socket.

usage: pinger.py DST COUNT INTERVAL DEADLINE    (exit 0 if at least one reply arrived)
"""

import os
import select
import socket
import struct
import sys
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff


dst, count, interval, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident, got, sent = os.getpid() & 0xffff, set(), 0
end = time.monotonic() + deadline
next_send = time.monotonic()
while time.monotonic() < end and len(got) < count:
    now = time.monotonic()
    if sent < count and now >= next_send:
        body = b"brtl-ping" + bytes(47)
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, sent)
        s.sendto(struct.pack("!BBHHH", 8, 0, csum(hdr + body), ident, sent) + body, (dst, 0))
        sent += 1
        next_send = now + interval
    wait = max(0.0, min(end, next_send if sent < count else end) - time.monotonic())
    r, _, _ = select.select([s], [], [], wait)
    if r:
        pkt = s.recv(2048)
        ihl = (pkt[0] & 15) * 4
        t, _, _, i, seq = struct.unpack("!BBHHH", pkt[ihl:ihl + 8])
        if t == 0 and i == ident:
            got.add(seq)
print("%d/%d" % (len(got), sent))
sys.exit(0 if got else 1)
