"""Lab child: attach to an existing tap and write every frame read from it
straight back, unchanged -- a "looping VPN" (tinc or OpenVPN in tap mode whose
far end reflects).

usage: tap_reflector.py TAP HOLD MAX_FRAMES DELAY [COMM]

Bounded by HOLD seconds AND MAX_FRAMES reflections.  Prints "ready" once
attached and "reflected N failed N" on exit (also on SIGTERM), so the caller
learns the count.  COMM renames the process (PR_SET_NAME), as a VPN daemon
would be seen in /proc.
"""

import errno
import fcntl
import os
import select
import signal
import struct
import sys
import time

TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454ca, 0x0002, 0x1000


def stop(signum, frame):
    raise SystemExit(0)


name, hold, max_frames, delay = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
signal.signal(signal.SIGTERM, stop)
if len(sys.argv) > 5:   # look like a VPN daemon to /proc/PID/comm (PR_SET_NAME)
    import ctypes
    ctypes.CDLL(None).prctl(15, sys.argv[5].encode(), 0, 0, 0)
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
print("ready", flush=True)
end = time.monotonic() + hold
n = failed = 0
try:
    while n + failed < max_frames:
        left = end - time.monotonic()
        if left <= 0:
            break
        if not select.select([fd], [], [], left)[0]:
            break
        frame = os.read(fd, 65536)
        if delay:
            time.sleep(min(delay, max(0.0, end - time.monotonic())))
        try:
            os.write(fd, frame)
        except OSError as e:
            # EIO: the tap went down under us; anything else is a real bug.
            if e.errno != errno.EIO:
                raise
            failed += 1
            continue
        n += 1
finally:
    print("reflected %d failed %d" % (n, failed), flush=True)
