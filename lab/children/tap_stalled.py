"""Lab child: attach to an existing tap and never read it.  The kernel queues
up to txqueuelen frames in the tap's ring, then drops (FULL_RING).

usage: tap_stalled.py TAP HOLD    (prints "ready" once attached; exits after HOLD s)
"""

import fcntl
import os
import struct
import sys
import time

TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454ca, 0x0002, 0x1000

name, hold = sys.argv[1], float(sys.argv[2])
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
print("ready", flush=True)
time.sleep(hold)
