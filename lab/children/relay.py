"""Lab child: a slow link without netem (this kernel has none), a userspace
relay between tap A (in the namespace it is started in, via `ip netns exec`)
and tap B (in another namespace, given as its /run/netns path).  Every frame
read from one tap is written to the other DELAY seconds later.

usage: relay.py TAP_A NETNS_B_PATH TAP_B HOLD MAX_FRAMES DELAY QUEUE_LIMIT

* One process, two namespaces: open tap A's fd first, then setns() into B
  and open tap B.  A tun fd stays bound to its device (and that device's
  namespace), so both fds keep working from wherever the process sits.
* A timed queue per direction, not a sleep per frame: frames arriving while
  others are held are held *concurrently*, so throughput is not 1/delay.
  The delay is constant, so release times are in arrival order and a FIFO
  (deque) is already sorted; select() sleeps until the next release.
* Bounded by HOLD seconds AND MAX_FRAMES frames relayed; each queue holds
  at most QUEUE_LIMIT frames (more are dropped and counted), so a storm
  through the relay cannot eat memory.
* Prints "ready" once both fds are open (both taps then have carrier), and
  "relayed N a2b N b2a N failed N dropped N" on exit, SIGTERM included.
"""

import collections
import ctypes
import errno
import fcntl
import os
import select
import signal
import struct
import sys
import time

tap_a, ns_b, tap_b = sys.argv[1], sys.argv[2], sys.argv[3]
hold, max_frames, delay = float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
limit = int(sys.argv[7])
TUNSETIFF, IFF_TAP, IFF_NO_PI, CLONE_NEWNET = 0x400454ca, 0x0002, 0x1000, 0x40000000


def stop(signum, frame):
    raise SystemExit(0)


signal.signal(signal.SIGTERM, stop)


def open_tap(name):
    # Non-blocking: we drain each fd until EAGAIN, and never block in write.
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def setns_net(path):
    nsfd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "setns"):          # Python >= 3.12
            os.setns(nsfd, CLONE_NEWNET)
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(nsfd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "setns(%s): %s" % (path, os.strerror(err)))
    finally:
        os.close(nsfd)


fd_a = open_tap(tap_a)
setns_net(ns_b)
fd_b = open_tap(tap_b)
print("ready", flush=True)

dest = {fd_a: fd_b, fd_b: fd_a}
queue = {fd_a: collections.deque(), fd_b: collections.deque()}   # by source fd
moved = {fd_a: 0, fd_b: 0}
n = failed = dropped = 0
gone = ""
end = time.monotonic() + hold
try:
    while n < max_frames and not gone:
        now = time.monotonic()
        for src, q in queue.items():              # release whatever is due
            while q and q[0][0] <= now and n < max_frames:
                frame = q.popleft()[1]
                try:
                    os.write(dest[src], frame)
                except OSError as e:
                    if e.errno == errno.EBADFD:   # the device was deleted
                        gone = tap_b if src == fd_a else tap_a
                        break
                    # EIO: tap down; EAGAIN/ENOBUFS: no room.  The frame is lost,
                    # as on a real link; anything else is a bug.
                    if e.errno not in (errno.EIO, errno.EAGAIN, errno.ENOBUFS):
                        raise
                    failed += 1
                    continue
                n += 1
                moved[src] += 1
        if n >= max_frames or gone or now >= end:
            break
        wake = min([end] + [q[0][0] for q in queue.values() if q])
        readable = select.select([fd_a, fd_b], [], [], max(0.0, wake - time.monotonic()))[0]
        arrived = time.monotonic()
        for src in readable:
            for _ in range(256):                  # a batch, so one side cannot starve the other
                try:
                    frame = os.read(src, 65536)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno != errno.EBADFD:
                        raise
                    gone = tap_a if src == fd_a else tap_b
                    break
                if len(queue[src]) >= limit:
                    dropped += 1
                else:
                    queue[src].append((arrived + delay, frame))
finally:
    print("relayed %d a2b %d b2a %d failed %d dropped %d%s" % (
        n, moved[fd_a], moved[fd_b], failed, dropped, (" gone " + gone) if gone else ""),
        flush=True)
