"""The lab's frame sender in Python, for machines without a C compiler: the
same arguments, output and bounds as sender.c (read it for the details), one
frame per send() and slower.

usage: sender.py [-f] IFNAME COUNT SECONDS FRAME-HEX OFFSET DISTINCT [RATE]
"""

import errno
import signal
import socket
import sys
import time

SOL_PACKET, PACKET_QDISC_BYPASS = 263, 20

args = sys.argv[1:]
fast = args[:1] == ["-f"]
if fast:
    args = args[1:]
if len(args) not in (6, 7):
    sys.exit("usage: sender.py [-f] IFNAME COUNT SECONDS FRAME-HEX OFFSET DISTINCT [RATE]")
ifname, count, seconds = args[0], int(args[1]), float(args[2])
tmpl, offset, distinct = bytes.fromhex(args[3]), int(args[4]), int(args[5])
rate = float(args[6]) if len(args) > 6 else 0.0
if len(tmpl) < 14 or offset < 0 or offset + 4 > len(tmpl):
    sys.exit("bad frame or offset")
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
base = int.from_bytes(tmpl[offset:offset + 4], "big")


def frame(i):
    if distinct <= 1:
        return tmpl
    value = (base + i % distinct) & 0xffffffff
    return tmpl[:offset] + value.to_bytes(4, "big") + tmpl[offset + 4:]


# Precomputed where that is cheap: per-frame bytes slicing halves the rate.
frames = [frame(i) for i in range(min(max(distinct, 1), 65536))]
n_frames = len(frames) if distinct <= 65536 else 0
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # protocol 0: transmit only
if fast:
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
s.bind((ifname, 0))
burst = 64 if fast else 1
send, sent, refused, start = s.send, 0, 0, time.monotonic()
end = start + seconds
while sent < count and not stop:
    if rate > 0:   # paced: no frame before its time
        wait = start + sent / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
            continue
    for _ in range(min(burst, count - sent)):
        try:
            send(frames[sent % n_frames] if n_frames else frame(sent))
        except OSError as e:
            # ENOBUFS: the device dropped the frame after it left the socket;
            # it was sent, and sending it again would exceed COUNT.
            if e.errno != errno.ENOBUFS:
                raise
            refused += 1
        sent += 1
    if time.monotonic() >= end:
        break
print(sent, refused)
