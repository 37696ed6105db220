"""Build small, disposable bridge labs in network namespaces, and break them on purpose.

Why this exists: brtrace claims "this frame was dropped on this port for this
reason".  The only honest way to test that is to build a bridge whose faults we
caused ourselves, send a known number of frames, and compare.  This module is
that lab: the demo (`scripts/demo`) and the integration tests use it.

Design rules, each for a reason:

* Everything lives in namespaces named ``<prefix>-...`` so that the root
  namespace (and other users of the machine) are never touched, and cleanup
  is "delete the namespaces we created".
* Addresses are deterministic and exposed (:class:`Host`), so a test knows the
  ground truth (which MAC sits behind which port) without asking the kernel.
* Every traffic generator is bounded in frames *and* seconds; every child
  process is ours, tracked by PID, and exits on its own after a bounded time.
* Only the standard library and the ``ip``/``bridge``/``nft`` tools: the lab
  must not depend on the code it is testing (pyroute2, bcc).

What each fault looks like at ``skb:kfree_skb`` on a 6.18 kernel is recorded
next to the helper that reproduces it (see ``FAULTS`` below).
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

# The interpreter used *inside* namespaces for child helpers.  The system
# python is used (not sys.executable) because child scripts need nothing but
# the standard library, and a venv interpreter may not be usable after
# `ip netns exec` remounts /sys.
CHILD_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

NETNS_RUN_DIR = "/run/netns"

# Ethertypes used by the frame builders.
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
# IEEE 802 "local experimental" ethertype: no protocol handler in the kernel,
# so frames of this type are easy to recognise (kfree_skb protocol=0xb588 when
# printed host-endian) and are never answered by a stack.
ETH_P_LAB = 0x88B5

BROADCAST = "ff:ff:ff:ff:ff:ff"

# Ground truth measured on kernel 6.18 with tracefs skb:kfree_skb (K=50 frames
# each, exactly K events unless noted).  fault -> (reason, location symbol).
# Note the symbols: drops done by a tail call are reported at the *caller*
# (br_forward's kfree_skb shows as br_handle_frame_finish), and nf_tables frees
# dropped packets itself (nft_do_chain, not nf_hook_slow).
FAULTS: Dict[str, tuple] = {
    "same_port": ("NOT_SPECIFIED", "br_handle_frame_finish"),   # +0x380, via br_forward
    "stp_blocking": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_listening": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_disabled": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_learning": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame_finish"),  # +0x190
    "mcast_source": ("MAC_INVALID_SOURCE", "br_handle_frame"),
    "nft_drop": ("NETFILTER_DROP", "nft_do_chain"),             # forward and input hooks
    "tap_stalled": ("FULL_RING", "tun_net_xmit"),               # exactly K - txqueuelen
    "tap_no_carrier_unicast": ("NOT_SPECIFIED", "br_handle_frame_finish"),
    "egress_mtu": ("NOT_SPECIFIED", "br_dev_queue_push_xmit"),  # non-IP frames
    "egress_mtu_ipv4_df": ("NOT_SPECIFIED", "br_nf_dev_queue_xmit"),  # br_netfilter path
    "veth_mtu": ("NOT_SPECIFIED", "__dev_forward_skb2"),
}


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


# --------------------------------------------------------------------------
# small process helpers
# --------------------------------------------------------------------------

def run(argv: Sequence[str], check: bool = True, timeout: float = 30.0,
        input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """Run one command with a timeout; raise LabError with its stderr on failure.

    Every lab action goes through here so a hung tool can never hang a test.
    """
    try:
        proc = subprocess.run(list(argv), input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:  # subprocess.run already killed the child
        raise LabError("%s timed out after %.0fs" % (" ".join(argv[:6]), timeout)) from None
    if check and proc.returncode != 0:
        raise LabError("%s failed (rc=%d): %s" % (
            " ".join(argv), proc.returncode, proc.stderr.decode(errors="replace").strip()))
    return proc


def ns_argv(netns: Optional[str], argv: Sequence[str]) -> List[str]:
    """Prefix argv with `ip netns exec NS` (or nothing for the root namespace)."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def netns_inode(name: str) -> int:
    """Inode of /run/netns/NAME: brtrace identifies namespaces by this number."""
    return os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    """True if `ip netns` knows NAME (its bind mount exists)."""
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _set_pdeathsig() -> None:
    """In a child: ask for SIGTERM when the parent dies, so no helper outlives us."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: children also have their own time bound
        pass


def _kill_pid(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Stop one child we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------
# frame builders (pure functions, easy to unit test)
# --------------------------------------------------------------------------

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


# --------------------------------------------------------------------------
# bounded traffic generators
# --------------------------------------------------------------------------

# Runs inside the namespace.  argv: ifname count interval frame-hex.
# Protocol 0 on the packet socket means "transmit only": it never receives,
# so the sender itself adds no receive-side drops to what we measure.
_SENDER = r"""
import errno, socket, sys, time
ifname, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
frame = bytes.fromhex(sys.argv[4])
seq = int(sys.argv[5]) if len(sys.argv) > 5 else -1
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 0))
sent = refused = 0
for i in range(count):
    if seq >= 0:
        frame = frame[:seq] + i.to_bytes(4, "big") + frame[seq + 4:]
    try:
        n = s.send(frame)
        if n != len(frame):
            sys.exit("short send %d/%d" % (n, len(frame)))
    except OSError as e:
        # ENOBUFS means the device's xmit dropped the frame *after* it left the
        # socket (e.g. veth peer MTU too small).  The frame was sent; retrying
        # would send more than `count`.
        if e.errno != errno.ENOBUFS:
            raise
        refused += 1
    sent += 1
    if interval:
        time.sleep(interval)
print(sent, refused)
"""


def _sender_argv(netns: str, ifname: str, frame: bytes, count: int,
                 interval: float, seq_offset: Optional[int] = None) -> List[str]:
    if seq_offset is not None and not 0 <= seq_offset <= len(frame) - 4:
        raise ValueError("seq_offset must leave 4 bytes inside the frame")
    return ns_argv(netns, [CHILD_PYTHON, "-c", _SENDER, ifname, str(count), repr(interval),
                           frame.hex()] + ([str(seq_offset)] if seq_offset is not None else []))


def send_frames(netns: str, ifname: str, frame: bytes, count: int,
                interval: float = 0.0, timeout: Optional[float] = None,
                seq_offset: Optional[int] = None) -> int:
    """Send exactly `count` copies of `frame` out of IFNAME inside NETNS;
    with `seq_offset`, copy i carries i (4 bytes, big-endian) there, so
    every frame is a new one.

    Returns only after the child has sent them all (and says so); raises
    LabError otherwise.  A child process is used because the caller may be
    multi-threaded and setns() would move the whole thread.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if timeout is None:
        timeout = 10.0 + count * (interval + 0.01)
    proc = run(_sender_argv(netns, ifname, frame, count, interval, seq_offset), timeout=timeout)
    sent = _parse_sent(proc.stdout)
    if sent != count:
        raise LabError("sender reported %d of %d frames" % (sent, count))
    return sent


def start_sender(netns: str, ifname: str, frame: bytes, count: int,
                 interval: float) -> subprocess.Popen:
    """Like send_frames() but returns at once; finish with wait_sender().

    Lets several bounded generators run side by side (the demo does this).
    """
    return subprocess.Popen(_sender_argv(netns, ifname, frame, count, interval),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_set_pdeathsig)


def wait_sender(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a start_sender() child; kill it (by PID) if it overruns."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_pid(proc)
        proc.communicate()
        raise LabError("sender %d overran %.0fs" % (proc.pid, timeout)) from None
    if proc.returncode != 0:
        raise LabError("sender failed: %s" % err.decode(errors="replace").strip())
    return _parse_sent(out)


def _parse_sent(out: bytes) -> int:
    """The sender prints 'SENT REFUSED'; REFUSED frames were dropped by the
    device's xmit path (ENOBUFS) and still count as sent."""
    fields = out.decode().split()
    return int(fields[0]) if fields else -1


# Fallback for machines without iputils ping: ICMP echo over a raw socket.
# argv: dst count interval deadline.  Exit 0 if at least one reply arrived.
_PINGER = r"""
import os, select, socket, struct, sys, time
dst, count, interval, deadline = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
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
"""


def ping(netns: str, ip: str, count: int = 3, interval: float = 0.2,
         deadline: Optional[float] = None) -> bool:
    """Bounded ping (-c and -w) from NETNS; True if any reply came back.

    Uses iputils ping when installed, else an equivalent raw-socket child,
    because minimal images (like our CI VM) ship without ping.
    """
    if deadline is None:
        deadline = max(2.0, count * interval + 2.0)
    if shutil.which("ping"):
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                "-w", str(int(deadline + 0.999)), ip]
    else:
        argv = [CHILD_PYTHON, "-c", _PINGER, ip, str(count), repr(interval), repr(deadline)]
    return run(ns_argv(netns, argv), check=False, timeout=deadline + 10).returncode == 0


# --------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------

@dataclass
class Host:
    """One host namespace wired to the bridge by a veth pair: the ground truth."""
    index: int
    netns: str      # e.g. brtl-h1
    ifname: str     # host side, always eth0
    port: str       # bridge side, e.g. vnet0
    mac: str
    ip: str         # without prefix length


@dataclass
class TapPort:
    """A tap enslaved to the bridge, and the PID of its reader if we started one."""
    name: str
    reader: str
    proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None


@dataclass
class PeerLoop:
    """A second bridge joined to the lab bridge by several veth pairs: the ground truth.

    links[i] is (lab-bridge port, peer-bridge port) of link i+1.  With STP,
    `blocking` and `forwarding` list (netns, port) of the loop ports as
    measured once convergence finished (`converge_s` after the links came
    up), so a test can read counters with Lab.link_stats(netns, port)
    without asking which side won.  `root` is "lab" or "peer": which bridge
    we made STP root (the blocking port is then on the *other* bridge).
    """
    netns: str                         # <prefix>-peer
    bridge: str                        # br-peer
    mac: str
    links: List[tuple]                 # [(lab_port, peer_port), ...]
    stp: bool
    root: Optional[str] = None
    converge_s: Optional[float] = None
    states: Dict[tuple, str] = field(default_factory=dict)   # (netns, port) -> state
    watchdog: Optional[subprocess.Popen] = None
    broken: List[str] = field(default_factory=list)          # lab ports deleted

    @property
    def blocking(self) -> List[tuple]:
        return [k for k, st in self.states.items() if st == "blocking"]

    @property
    def forwarding(self) -> List[tuple]:
        return [k for k, st in self.states.items() if st == "forwarding"]


# Runs inside the lab's bridge namespace: after `hold` seconds, delete the
# given veths (ending a broadcast storm) even if the test never called
# break_loop().  argv: hold dev...
_LOOP_WATCHDOG = r"""
import subprocess, sys, time
time.sleep(float(sys.argv[1]))
for dev in sys.argv[2:]:
    subprocess.run(["ip", "link", "del", dev], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30)
"""


# Runs inside the bridge namespace: attach to an existing tap and never read.
# The kernel queues up to txqueuelen frames in the tap's ring, then drops.
_STALLED_READER = r"""
import fcntl, os, struct, sys, time
name, hold = sys.argv[1], float(sys.argv[2])
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454ca, 0x0002, 0x1000
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
print("ready", flush=True)
time.sleep(hold)
"""

# Runs inside the bridge namespace: attach to an existing tap and write every
# frame read from it straight back, unchanged -- a "looping VPN" (tinc or
# OpenVPN in tap mode whose far end reflects).  argv: name hold max_frames
# delay.  Bounded by `hold` seconds AND `max_frames` reflections; prints
# "reflected N" on exit (also on SIGTERM) so the caller learns the count.
_REFLECTOR = r"""
import errno, fcntl, os, select, signal, struct, sys, time
name, hold, max_frames, delay = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454ca, 0x0002, 0x1000
def stop(signum, frame):
    raise SystemExit(0)
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
"""


@dataclass
class SlowPeerLoop(PeerLoop):
    """A peer bridge joined to the lab bridge by one fast link and one slow one.

    links[0] is the relayed link (lab tap <prefix>s1, peer tap s1p), links[1]
    the veth pair (<prefix>l1, p1).  The order is chosen so that break_loop()
    (keep=1) and the watchdog delete the *veth*: the storm stops and the relay
    keeps running undisturbed until stop_relay() or cleanup.  `relay` is our
    child that copies frames between the two taps, holding each `delay` s;
    `relay_stats` is what it reported when stopped: relayed (= a2b + b2a),
    a2b (lab tap -> peer tap), b2a (peer tap -> lab tap), failed (writes the
    kernel refused), dropped (queue full).
    """
    delay: float = 0.0
    relay_link: tuple = ()                                   # (lab tap, peer tap)
    relay: Optional[subprocess.Popen] = None
    relay_stats: Dict[str, int] = field(default_factory=dict)


# A slow link without netem (this kernel has none): a userspace relay between
# tap A (in the namespace we are started in, via `ip netns exec`) and tap B
# (in another namespace, given as its /run/netns path).  Every frame read from
# one tap is written to the other `delay` seconds later.  argv: tap_a
# netns_b_path tap_b hold max_frames delay queue_limit.
#
# * One process, two namespaces: open tap A's fd first, then setns() into B
#   and open tap B.  A tun fd stays bound to its device (and that device's
#   namespace), so both fds keep working from wherever the process sits.
# * A timed queue per direction, not a sleep per frame: frames arriving while
#   others are held are held *concurrently*, so throughput is not 1/delay.
#   The delay is constant, so release times are in arrival order and a FIFO
#   (deque) is already sorted; select() sleeps until the next release.
# * Bounded by `hold` seconds AND `max_frames` frames relayed; each queue
#   holds at most `queue_limit` frames (more are dropped and counted), so a
#   storm through the relay cannot eat memory.
# * Prints "ready" once both fds are open (both taps then have carrier), and
#   "relayed N a2b N b2a N failed N dropped N" on exit, SIGTERM included.
_RELAY = r"""
import collections, errno, fcntl, os, select, signal, struct, sys, time
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
            import ctypes
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
"""


class Lab:
    """A bridge namespace with N host namespaces, built on enter, removed on exit.

    Layout (prefix "brtl", bridge "br-int", hosts=2)::

        brtl-h1:eth0 <-veth-> vnet0 --+
                                      br-int   (in brtl-br)
        brtl-h2:eth0 <-veth-> vnet1 --+

    Host i (1-based) has MAC 02:b7:00:00:00:0i and IP 10.77.0.i/24; the bridge
    has MAC 02:b7:00:00:00:fe and no IP (it only switches).  IPv6 is disabled
    in every lab namespace by default, because DAD/MLD/RS chatter otherwise
    adds floods and drops that make exact counts impossible; for the same
    reason multicast snooping is off (see build()).
    """

    def __init__(self, prefix: str = "brtl", hosts: int = 2, bridge: str = "br-int",
                 port_prefix: str = "vnet", stp: bool = False, ipv6: bool = False,
                 mac_base: str = "02:b7:00:00:00", subnet: str = "10.77.0",
                 mcast_snooping: bool = False):
        self.prefix = prefix
        self.bridge = bridge
        self.bridge_ns = "%s-br" % prefix
        self.bridge_mac = "%s:fe" % mac_base
        self.n_hosts = hosts
        self.port_prefix = port_prefix
        self.stp = stp
        self.ipv6 = ipv6
        self.mac_base = mac_base
        self.subnet = subnet
        self.mcast_snooping = mcast_snooping
        self.hosts: List[Host] = []
        self.taps: Dict[str, TapPort] = {}
        self._namespaces: List[str] = []   # in creation order; cleanup deletes these
        self._children: List[subprocess.Popen] = []
        self._nft_table: Optional[str] = None
        self.peer_loop: Optional[PeerLoop] = None

    # ---- context manager ------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---- building -------------------------------------------------------
    def ip(self, netns: Optional[str], *args: str, check: bool = True):
        """`ip -n NS ARGS`: the one place lab topology commands go through."""
        return run(["ip"] + (["-n", netns] if netns else []) + list(args), check=check)

    def add_netns(self, name: str) -> str:
        """Create a namespace, remember it for cleanup, bring lo up, quiet IPv6."""
        if netns_exists(name):
            raise LabError("namespace %s already exists (stale lab? run cleanup)" % name)
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        if not self.ipv6:
            self.sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")
        return name

    def sysctl(self, netns: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl (writes /proc/sys inside NS)."""
        run(ns_argv(netns, ["sysctl", "-q", "-w", "%s=%s" % (key, value)]))

    def host_mac(self, i: int) -> str:
        return "%s:%02x" % (self.mac_base, i)

    def build(self) -> None:
        """Create bridge namespace, bridge, and every host; all links up."""
        self.add_netns(self.bridge_ns)
        stp = self._stp_args(self.stp)
        # Snooping off by default: with it on, the bridge joins 224.0.0.106
        # (multicast router discovery) and floods an IGMP report to every
        # port about 0-1 s after it comes up.  Measured: that one frame takes
        # a slot in a stalled tap's ring and is dropped by each host's IP
        # stack (ip_rcv_finish_core), spoiling exact drop counts.
        snoop = ["mcast_snooping", "1" if self.mcast_snooping else "0"]
        self.ip(self.bridge_ns, "link", "add", self.bridge, "address", self.bridge_mac,
                "type", "bridge", *stp, *snoop)
        self.ip(self.bridge_ns, "link", "set", self.bridge, "up")
        for i in range(1, self.n_hosts + 1):
            self.add_host(i)
        if self.stp:
            self.wait_stp_settled()

    @staticmethod
    def _stp_args(on: bool) -> List[str]:
        """`ip link add ... type bridge` arguments for STP on or off.

        With STP on, use the kernel's minimum timers (2 s forward delay,
        1 s hello) so a lab converges in about 4 s instead of 30.
        """
        if not on:
            return ["stp_state", "0"]
        return ["stp_state", "1", "forward_delay", "200", "hello_time", "100",
                "max_age", "600"]

    def add_host(self, i: int) -> Host:
        """Host namespace <prefix>-hI with eth0, wired to bridge port <port_prefix>{I-1}."""
        host = Host(index=i, netns=self.add_netns("%s-h%d" % (self.prefix, i)),
                    ifname="eth0", port="%s%d" % (self.port_prefix, i - 1),
                    mac=self.host_mac(i), ip="%s.%d" % (self.subnet, i))
        self.ip(self.bridge_ns, "link", "add", host.port, "type", "veth",
                "peer", "name", host.ifname, "netns", host.netns)
        self.ip(host.netns, "link", "set", host.ifname, "address", host.mac)
        self.ip(host.netns, "addr", "add", host.ip + "/24", "dev", host.ifname)
        self.ip(host.netns, "link", "set", host.ifname, "up")
        self.ip(self.bridge_ns, "link", "set", host.port, "master", self.bridge)
        self.ip(self.bridge_ns, "link", "set", host.port, "up")
        self.hosts.append(host)
        return host

    def host(self, i: int) -> Host:
        """Host by 1-based index."""
        return self.hosts[i - 1]

    # ---- faults and knobs -----------------------------------------------
    def add_tap(self, name: str, reader: str = "none", hold: float = 120.0,
                txqueuelen: Optional[int] = None, max_frames: int = 100000,
                delay: float = 0.0, comm: Optional[str] = None) -> TapPort:
        """Add tap NAME to the bridge.  reader="none": nobody opens it (NO-CARRIER,
        the bridge treats the port as disabled).  reader="stalled": a child of
        ours attaches and never reads, so frames pile up in the tap's ring and
        then drop.  reader="reflect": a child of ours reads every frame and
        writes it straight back into the tap, unchanged (after `delay` s), like
        a tinc/OpenVPN tap whose far end loops: each frame the bridge sends
        out of the tap comes back in on it, with a source MAC the bridge has
        already learned elsewhere (or owns: then the kernel logs "received
        packet on NAME with own address as source address").  The reflector
        stops after `max_frames` frames or `hold` seconds, whichever first;
        stop_tap_reader() returns how many it reflected.  `comm` renames the
        reflector's process (e.g. "tincd"), as a VPN daemon would be seen in
        /proc.  Any child exits after `hold` seconds or on cleanup.
        """
        if reader not in ("none", "stalled", "reflect"):
            raise ValueError("reader must be 'none', 'stalled' or 'reflect'")
        if max_frames < 0 or delay < 0:
            raise ValueError("max_frames and delay must be >= 0")
        self.ip(self.bridge_ns, "tuntap", "add", "dev", name, "mode", "tap")
        tap = TapPort(name=name, reader=reader)
        self.taps[name] = tap
        if txqueuelen is not None:
            self.ip(self.bridge_ns, "link", "set", name, "txqueuelen", str(txqueuelen))
        self.ip(self.bridge_ns, "link", "set", name, "master", self.bridge)
        self.ip(self.bridge_ns, "link", "set", name, "up")
        if reader != "none":
            self.start_tap_reader(name, reader, hold, max_frames, delay, comm)
        return tap

    def start_tap_reader(self, name: str, reader: str, hold: float = 120.0,
                         max_frames: int = 100000, delay: float = 0.0,
                         comm: Optional[str] = None) -> None:
        """Give tap NAME (added with reader "none", or stopped) a "stalled" or
        "reflect" reader, as add_tap() describes: the port gets its carrier now."""
        tap = self.taps[name]
        if tap.proc is not None:
            raise LabError("tap %s already has a reader" % name)
        if reader == "stalled":
            tap.proc = self._start_tap_child(name, _STALLED_READER, [repr(hold)])
        elif reader == "reflect":
            tap.proc = self._start_tap_child(name, _REFLECTOR, [repr(hold), str(max_frames),
                                                                repr(delay)] + ([comm] if comm else []))
        else:
            raise ValueError("reader must be 'stalled' or 'reflect'")
        tap.reader = reader

    def _start_tap_child(self, name: str, script: str, args: Sequence[str]) -> subprocess.Popen:
        """Start a child that attaches to tap NAME; return once it says "ready".

        Waiting matters: until the child holds the fd the tap has no carrier
        and the bridge port is disabled, so frames sent earlier would not
        reach it at all.
        """
        argv = ns_argv(self.bridge_ns, [CHILD_PYTHON, "-c", script, name] + list(args))
        return self._start_ready_child(argv, "tap child for %s" % name)

    def _start_ready_child(self, argv: Sequence[str], what: str) -> subprocess.Popen:
        """Start a child of ours (tracked for cleanup) and wait, bounded, for its
        "ready" line; kill it by PID and raise with its stderr otherwise."""
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_set_pdeathsig)
        self._children.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            _kill_pid(proc)
            raise LabError("%s did not start: %s" % (
                what, proc.stderr.read().decode(errors="replace").strip()))
        return proc

    def stop_tap_reader(self, name: str, timeout: float = 5.0) -> Optional[int]:
        """Stop tap NAME's child (by PID) and return how many frames it reflected.

        None for readers that do not count (stalled) or if the count was lost.
        The tap stays on the bridge, now without carrier (reader "none").
        """
        tap = self.taps[name]
        proc, tap.proc = tap.proc, None
        if proc is None:
            return None
        tap.reader = "none"
        _kill_pid(proc, grace=timeout)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        if proc in self._children:
            self._children.remove(proc)
        fields = out.split()
        if "reflected" in fields:
            return int(fields[fields.index("reflected") + 1])
        return None

    STP_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}

    def set_stp_state(self, port: str, state: int) -> None:
        """Force a port's STP state with `bridge link set ... state N`; needs STP off.

        Measured on 6.18: 0, 1 and 2 stick, but 4 (blocking) does not: with STP
        off every port is "designated", so the kernel's port-state selection
        moves a blocking port straight to forwarding.  We check and raise
        rather than let a test believe the port blocks.  For a real blocking
        port use Lab(stp=True) and add_loop().
        """
        run(["bridge", "-n", self.bridge_ns, "link", "set", "dev", port, "state", str(state)])
        actual = self.stp_state(port)
        if actual != self.STP_STATES[state]:
            raise LabError("port %s is %s after setting state %d (%s); with STP off the "
                           "kernel does not keep 'blocking': use Lab(stp=True).add_loop()"
                           % (port, actual, state, self.STP_STATES[state]))

    def stp_state(self, port: str) -> str:
        """Current STP state name of a port, as `bridge -j link` reports it."""
        out = run(["bridge", "-n", self.bridge_ns, "-j", "link", "show", "dev", port]).stdout
        return json.loads(out)[0].get("state", "?")

    def add_loop(self, a: Optional[str] = None, b: Optional[str] = None,
                 settle: float = 15.0) -> tuple:
        """Wire a veth pair with BOTH ends on the bridge: a layer-2 loop.

        Only allowed with Lab(stp=True): kernel STP then blocks one end, which
        is the honest way to get a port in state "blocking".  Flooded frames
        leave through the forwarding end and are dropped entering the
        blocking end.  Waits (bounded by `settle` s) until no port is in
        listening/learning; returns (forwarding_end, blocking_end).
        """
        if not self.stp:
            raise LabError("add_loop() without STP would make a broadcast storm")
        a = a or self.prefix + "loopa"
        b = b or self.prefix + "loopb"
        self.ip(self.bridge_ns, "link", "add", a, "type", "veth", "peer", "name", b)
        for end in (a, b):
            self.ip(self.bridge_ns, "link", "set", end, "master", self.bridge)
            self.ip(self.bridge_ns, "link", "set", end, "up")
        self.wait_stp_settled(settle)
        states = {end: self.stp_state(end) for end in (a, b)}
        blocking = [e for e, st in states.items() if st == "blocking"]
        if len(blocking) != 1:
            raise LabError("loop did not converge to one blocking end: %r" % states)
        other = b if blocking[0] == a else a
        return other, blocking[0]

    def wait_stp_settled(self, timeout: float = 15.0) -> None:
        """Poll until no bridge port is listening or learning (bounded)."""
        end = time.monotonic() + timeout
        while True:
            out = run(["bridge", "-n", self.bridge_ns, "-j", "link"]).stdout
            states = [p.get("state") for p in json.loads(out)]
            if not any(st in ("listening", "learning") for st in states):
                return
            if time.monotonic() > end:
                raise LabError("STP still converging after %.0fs: %r" % (timeout, states))
            time.sleep(0.25)

    def stp_states(self, netns: str) -> Dict[str, str]:
        """port -> STP state name for every port of the bridge(s) in NETNS."""
        out = run(["bridge", "-n", netns, "-j", "link"]).stdout
        return {p["ifname"]: p.get("state", "?") for p in json.loads(out or b"[]")}

    # ---- a second bridge, joined to ours twice: a real layer-2 loop -------
    PEER_BRIDGE = "br-peer"

    def add_peer_bridge_loop(self, links: int = 2, stp: bool = False, root: str = "peer",
                             hold: float = 60.0, settle: float = 20.0) -> PeerLoop:
        """Add bridge br-peer in namespace <prefix>-peer, joined to the lab bridge by
        `links` veth pairs (<prefix>l1 <-> p1, <prefix>l2 <-> p2, ...), all up.

        Why a second bridge rather than add_loop(): two switches cabled twice
        is how real loops happen, and it lets the redundant port block on
        either side.  stp must equal Lab(stp=...): the lab bridge keeps its own
        setting, and a half-STP loop would quietly not storm.

        stp=False: nothing blocks.  Lab namespaces are silent (no IPv6, no
        snooping), so the loop is quiet until someone floods a frame; then a
        single broadcast circulates forever (links=2: one copy each way, each
        lap also delivered to every host; links>=3 multiplies it every hop).
        End it with break_loop().  As a bound, a watchdog child of ours does
        the same after `hold` seconds (its clock starts before the links come
        up), and cleanup deletes the namespaces.

        stp=True: STP on br-peer too, with the lab's minimum timers; the
        bridge named by `root` ("peer" or "lab") is made STP root through its
        priority, so the blocking ports (links-1 of them) end up on the other
        bridge.  Waits, bounded by `settle` seconds, until no port of either
        bridge is listening/learning and exactly links-1 loop ports block.
        The watchdog runs here too (a deleted link is a topology change, so
        keep `hold` longer than the test).

        Returns the PeerLoop (also kept as self.peer_loop): links, per-port
        states, which (netns, port) block/forward, convergence time.
        """
        if links < 2:
            raise ValueError("a loop needs links >= 2")
        if root not in ("lab", "peer"):
            raise ValueError("root must be 'lab' or 'peer'")
        if bool(stp) != bool(self.stp):
            raise LabError("add_peer_bridge_loop(stp=%s) on Lab(stp=%s): both bridges must "
                           "agree (build the Lab with stp=%s)" % (stp, self.stp, stp))
        loop = self._new_peer_bridge(PeerLoop, stp, root)
        netns = loop.netns
        for i in range(1, links + 1):
            loop.links.append(self._add_peer_veth(loop, "%sl%d" % (self.prefix, i), "p%d" % i))
        self._start_loop_watchdog(loop, hold)
        start = time.monotonic()
        for lab_port, peer_port in loop.links:
            self.ip(self.bridge_ns, "link", "set", lab_port, "up")
            self.ip(netns, "link", "set", peer_port, "up")
        if stp:
            self._wait_peer_loop_converged(loop, start, settle)
        else:
            self.peer_loop_states()
        return loop

    def _new_peer_bridge(self, cls: type, stp: bool, root: str, **extra) -> PeerLoop:
        """Namespace <prefix>-peer with bridge br-peer up in it, as a `cls`
        (PeerLoop or SlowPeerLoop) kept in self.peer_loop; no links yet."""
        if self.peer_loop is not None:
            raise LabError("this lab already has a peer bridge loop")
        netns = self.add_netns("%s-peer" % self.prefix)
        loop = cls(netns=netns, bridge=self.PEER_BRIDGE, mac="%s:fd" % self.mac_base,
                   links=[], stp=bool(stp), root=root if stp else None, **extra)
        self.peer_loop = loop
        args = self._stp_args(bool(stp))
        if stp:
            # Bridge id = priority then MAC; the lab bridge keeps the default
            # 32768, so 4096 makes the peer root and 61440 makes it lose.
            args += ["priority", "4096" if root == "peer" else "61440"]
        self.ip(netns, "link", "add", loop.bridge, "address", loop.mac, "type", "bridge",
                *args, "mcast_snooping", "0")
        self.ip(netns, "link", "set", loop.bridge, "up")
        return loop

    def _add_peer_veth(self, loop: PeerLoop, lab_port: str, peer_port: str) -> tuple:
        """Veth LAB_PORT (on the lab bridge) <-> PEER_PORT (on br-peer), both
        still down: the caller brings links up once its watchdog runs."""
        self.ip(self.bridge_ns, "link", "add", lab_port, "type", "veth",
                "peer", "name", peer_port, "netns", loop.netns)
        self.ip(self.bridge_ns, "link", "set", lab_port, "master", self.bridge)
        self.ip(loop.netns, "link", "set", peer_port, "master", loop.bridge)
        return lab_port, peer_port

    def _start_loop_watchdog(self, loop: PeerLoop, hold: float) -> None:
        """Child of ours that deletes every loop link but the first after `hold` s."""
        argv = ns_argv(self.bridge_ns, [CHILD_PYTHON, "-c", _LOOP_WATCHDOG, repr(hold)]
                       + [lab for lab, _ in loop.links[1:]])
        loop.watchdog = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        self._children.append(loop.watchdog)

    # ---- the same, with one link ~`delay` s long: a slow layer-2 loop ----
    RELAY_QUEUE_LIMIT = 10000   # frames held per direction before the relay drops

    def add_slow_peer_loop(self, delay: float = 0.3, hold: float = 60.0,
                           max_frames: int = 10000) -> SlowPeerLoop:
        """Add bridge br-peer in <prefix>-peer (as add_peer_bridge_loop does),
        joined to the lab bridge by one veth pair (<prefix>l1 <-> p1, fast) and
        one slow link: tap <prefix>s1 on the lab bridge, tap s1p on br-peer,
        and a relay child of ours copying frames between them, each held
        `delay` seconds.  STP is off on both bridges (needs Lab(stp=False)).

        Why: a loop whose round trip is ~`delay` instead of microseconds, so
        a single broadcast circulates at a countable rate (about 1/delay
        frames a second per port and direction) rather than as a storm, as
        when two sites are bridged over a slow VPN *and* a backup link.  This
        kernel has no netem, hence the userspace relay.

        Bounds: the relay stops after `hold` s or `max_frames` frames
        relayed; a watchdog deletes the veth after `hold` s (clock started
        before the links come up); cleanup kills both and deletes the
        namespaces.  break_loop() deletes the veth (links[1]): the storm stops
        within `delay` s, the relay keeps running; stop_relay() stops it and
        returns how many frames it relayed.

        Returns the SlowPeerLoop (also self.peer_loop): links ==
        [(<prefix>s1, s1p), (<prefix>l1, p1)], relay_link, delay, relay.
        """
        if delay < 0 or hold <= 0 or max_frames < 0:
            raise ValueError("need delay >= 0, hold > 0 and max_frames >= 0")
        if self.stp:
            raise LabError("add_slow_peer_loop() needs Lab(stp=False): it is a loop on purpose")
        lab_tap, peer_tap = self.prefix + "s1", "s1p"
        loop = self._new_peer_bridge(SlowPeerLoop, False, "peer", delay=delay,
                                     relay_link=(lab_tap, peer_tap))
        # The taps are admin-up now but have no carrier (the bridge port is
        # "disabled") until the relay opens them; a tap must be up before
        # anyone writes into it (else EIO).
        for netns, tap, bridge in ((self.bridge_ns, lab_tap, self.bridge),
                                   (loop.netns, peer_tap, loop.bridge)):
            self.ip(netns, "tuntap", "add", "dev", tap, "mode", "tap")
            self.ip(netns, "link", "set", tap, "master", bridge)
            self.ip(netns, "link", "set", tap, "up")
        loop.links.append(loop.relay_link)
        loop.links.append(self._add_peer_veth(loop, "%sl1" % self.prefix, "p1"))
        self._start_loop_watchdog(loop, hold)
        argv = ns_argv(self.bridge_ns, [CHILD_PYTHON, "-c", _RELAY, lab_tap,
                                        netns_path(loop.netns), peer_tap, repr(hold),
                                        str(max_frames), repr(delay),
                                        str(self.RELAY_QUEUE_LIMIT)])
        loop.relay = self._start_ready_child(argv, "relay %s <-> %s" % (lab_tap, peer_tap))
        # The veth comes up last: only now is the loop closed.
        lab_port, peer_port = loop.links[1]
        self.ip(self.bridge_ns, "link", "set", lab_port, "up")
        self.ip(loop.netns, "link", "set", peer_port, "up")
        self.peer_loop_states()
        return loop

    def stop_relay(self, timeout: float = 5.0) -> Optional[int]:
        """Stop the slow loop's relay (by PID); return how many frames it relayed.

        The per-direction counts land in peer_loop.relay_stats.  None if there
        is no running relay or its report was lost.  Both taps lose carrier.
        """
        loop = self.peer_loop
        proc = getattr(loop, "relay", None)
        if proc is None:
            return None
        loop.relay = None
        _kill_pid(proc, grace=timeout)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        if proc in self._children:
            self._children.remove(proc)
        fields = out.split()
        # "relayed N a2b N b2a N failed N dropped N [gone TAP]": key/value pairs.
        stats = {k: int(v) for k, v in zip(fields[::2], fields[1::2]) if v.isdigit()}
        loop.relay_stats = stats
        return stats.get("relayed")

    def _wait_peer_loop_converged(self, loop: PeerLoop, start: float, settle: float) -> None:
        """Poll both bridges until STP settled with links-1 blocking loop ports."""
        end = start + settle
        while True:
            lab, peer = self.stp_states(self.bridge_ns), self.stp_states(loop.netns)
            states = self._fill_loop_states(loop, lab, peer)
            busy = [p for p, st in list(lab.items()) + list(peer.items())
                    if st in ("listening", "learning")]
            if not busy and len(loop.blocking) == len(loop.links) - 1 \
                    and len(loop.forwarding) == len(loop.links) + 1:
                loop.converge_s = time.monotonic() - start
                return
            if time.monotonic() > end:
                raise LabError("peer loop not converged after %.0fs: %r" % (
                    settle, {"%s:%s" % k: v for k, v in states.items()}))
            time.sleep(0.1)

    def peer_loop_states(self) -> Dict[tuple, str]:
        """Re-read the STP state of every remaining loop port: (netns, port) -> state."""
        loop = self.peer_loop
        if loop is None:
            raise LabError("no peer bridge loop (call add_peer_bridge_loop first)")
        return self._fill_loop_states(loop, self.stp_states(self.bridge_ns),
                                      self.stp_states(loop.netns))

    def _fill_loop_states(self, loop: PeerLoop, lab: Dict[str, str],
                          peer: Dict[str, str]) -> Dict[tuple, str]:
        """Set loop.states from one reading of each bridge's port states."""
        loop.states = {}
        for lab_port, peer_port in loop.links:
            if lab_port in loop.broken:
                continue
            loop.states[(self.bridge_ns, lab_port)] = lab.get(lab_port, "?")
            loop.states[(loop.netns, peer_port)] = peer.get(peer_port, "?")
        return loop.states

    def break_loop(self, keep: int = 1) -> List[str]:
        """Delete every loop link except link number `keep` (1-based): the storm stops.

        With links=2 this deletes exactly one veth pair.  Deleting the lab end
        removes its peer in <prefix>-peer too.  Stops the watchdog (by PID),
        since nothing is left for it to do.  Returns the deleted lab ports.
        """
        loop = self.peer_loop
        if loop is None:
            raise LabError("no peer bridge loop to break")
        if not 1 <= keep <= len(loop.links):
            raise ValueError("keep must be 1..%d" % len(loop.links))
        victims = [lab for i, (lab, _) in enumerate(loop.links, 1)
                   if i != keep and lab not in loop.broken]
        for dev in victims:
            # check=False: the watchdog may have beaten us to it.
            self.ip(self.bridge_ns, "link", "del", dev, check=False)
            loop.broken.append(dev)
        if loop.watchdog is not None:
            _kill_pid(loop.watchdog)
            if loop.watchdog in self._children:
                self._children.remove(loop.watchdog)
            loop.watchdog = None
        self.peer_loop_states()
        return victims

    def set_mtu(self, netns: str, dev: str, mtu: int) -> None:
        self.ip(netns, "link", "set", dev, "mtu", str(mtu))

    def set_bridge_mtu(self, mtu: int) -> None:
        """Set the bridge's MTU explicitly (this stops it auto-following its ports)."""
        self.set_mtu(self.bridge_ns, self.bridge, mtu)

    def add_fdb(self, mac: str, port: str) -> None:
        """Static FDB entry: frames to MAC go only to PORT (no flooding)."""
        run(["bridge", "-n", self.bridge_ns, "fdb", "replace", mac, "dev", port,
             "master", "static"])

    def nft_drop(self, hook: str = "forward", match: str = "udp dport 9999",
                 table: Optional[str] = None) -> None:
        """Add a bridge-family nftables rule `MATCH drop` on HOOK in the bridge ns."""
        table = table or self.prefix.replace("-", "_")
        chain = "lab_" + hook
        script = ("table bridge %s {\n chain %s {\n  type filter hook %s priority 0; policy accept;\n"
                  "  %s counter drop\n }\n}\n") % (table, chain, hook, match)
        run(ns_argv(self.bridge_ns, ["nft", "-f", "-"]), input=script.encode())
        self._nft_table = table

    def nft_counters(self) -> str:
        """The lab's nft table listing (rule counters = kernel's own drop count)."""
        if not self._nft_table:
            return ""
        return run(ns_argv(self.bridge_ns, ["nft", "list", "table", "bridge",
                                            self._nft_table])).stdout.decode()

    def link_stats(self, netns: str, dev: str) -> dict:
        """rx/tx packet and drop counters of one device (from `ip -s -j link`)."""
        out = run(["ip", "-n", netns, "-s", "-j", "link", "show", "dev", dev]).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"rx_packets": stats["rx"]["packets"], "rx_dropped": stats["rx"]["dropped"],
                "tx_packets": stats["tx"]["packets"], "tx_dropped": stats["tx"]["dropped"]}

    def netns_inode(self, name: str) -> int:
        return netns_inode(name)

    def bridge_ifindexes(self) -> List[int]:
        """The bridge and its ports, by ifindex in the bridge's namespace."""
        links = json.loads(run(["ip", "-n", self.bridge_ns, "-j", "link", "show"]).stdout)
        return sorted(link["ifindex"] for link in links
                      if link.get("ifname") == self.bridge or link.get("master") == self.bridge)

    # ---- cleanup --------------------------------------------------------
    def cleanup(self) -> None:
        """Kill our children by PID, then delete exactly the namespaces we created.

        Safe to call twice and after a partial build.  Deleting a namespace
        destroys its veths, taps and bridge, and with it any nft table.
        """
        for proc in self._children:
            try:
                _kill_pid(proc)
            except Exception:  # noqa: BLE001 - best effort: clean-up goes on to the next child
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self._children.clear()
        for tap in self.taps.values():
            self.ip(self.bridge_ns, "link", "del", tap.name, check=False)
        self.taps.clear()
        for name in reversed(self._namespaces):
            if netns_exists(name):
                run(["ip", "netns", "del", name], check=False)
        self._namespaces.clear()
        self.hosts.clear()
        self.peer_loop = None


# --------------------------------------------------------------------------
# ground truth from tracefs (independent of brtrace's BPF code)
# --------------------------------------------------------------------------

TRACEFS = "/sys/kernel/tracing"


@dataclass
class Drop:
    """One skb:kfree_skb line, with the device the skb was last seen on."""
    reason: str
    location: str     # symbol+0xoff/0xsize as tracefs prints it
    protocol: int     # skb->protocol as printed (network order read as host int)
    skbaddr: str
    dev: Optional[str]

    @property
    def symbol(self) -> str:
        return self.location.split("+")[0]


class KfreeSkbTrace:
    """Record skb:kfree_skb in a private tracefs instance (instances/NAME).

    Why a private instance: the global buffer may be in use by others, and an
    instance can be created, enabled and removed without touching it.
    net:netif_receive_skb and net:net_dev_queue are recorded too, only so each
    drop can be attributed to the device its skb was last seen on (kfree_skb
    itself carries no device).  Use as a context manager around the traffic.
    """

    EVENTS = ("skb/kfree_skb", "net/netif_receive_skb", "net/net_dev_queue")

    def __init__(self, name: str = "brtl", buffer_kb: int = 4096, consume: bool = False):
        self.dir = os.path.join(TRACEFS, "instances", name)
        self.buffer_kb = buffer_kb
        self.events = self.EVENTS + (("skb/consume_skb",) if consume else ())
        self.lines: List[str] = []

    def _write(self, rel: str, value: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(value)

    def __enter__(self) -> "KfreeSkbTrace":
        if not os.path.isdir(os.path.join(TRACEFS, "instances")):
            raise LabError("tracefs not mounted at %s" % TRACEFS)
        if not os.path.isdir(self.dir):
            os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", str(self.buffer_kb))
            self._write("trace", "")
            for ev in self.events:
                self._write("events/%s/enable" % ev, "1")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stop(self) -> List[str]:
        """Disable events and keep the buffer's lines."""
        for ev in self.events:
            try:
                self._write("events/%s/enable" % ev, "0")
            except OSError:
                pass
        with open(os.path.join(self.dir, "trace")) as f:
            self.lines = [line for line in f.read().splitlines() if line and not line.startswith("#")]
        return self.lines

    def close(self) -> None:
        """Disable our events and remove the instance (idempotent)."""
        if not os.path.isdir(self.dir):
            return
        if not self.lines:
            try:
                self.stop()
            except OSError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass

    def drops(self) -> List[Drop]:
        """Parse kfree_skb lines, attributing each to the skb's last device."""
        last_dev: Dict[str, str] = {}
        out = []
        for line in self.lines:
            if "netif_receive_skb:" in line or "net_dev_queue:" in line:
                dev = _field(line, "dev=")
                addr = _field(line, "skbaddr=")
                if dev and addr:
                    last_dev[addr] = dev
            elif "kfree_skb:" in line:
                addr = _field(line, "skbaddr=")
                out.append(Drop(reason=line.rsplit("reason: ", 1)[-1].strip(),
                                location=_field(line, "location=") or "?",
                                protocol=int(_field(line, "protocol=") or 0),
                                skbaddr=addr or "", dev=last_dev.pop(addr, None)))
        return out


def _field(line: str, key: str) -> Optional[str]:
    """Value after KEY up to the next space in a trace line."""
    at = line.find(key)
    if at < 0:
        return None
    return line[at + len(key):].split(" ", 1)[0]


def summarize(drops: Sequence[Drop], devices: Optional[Sequence[str]] = None) -> Dict[tuple, int]:
    """Count drops by (reason, symbol, dev), keeping only DEVICES if given."""
    counts: Dict[tuple, int] = {}
    for d in drops:
        if devices is not None and d.dev not in devices:
            continue
        key = (d.reason, d.symbol, d.dev)
        counts[key] = counts.get(key, 0) + 1
    return counts


# --------------------------------------------------------------------------
# demo: several reproduced faults at once
# --------------------------------------------------------------------------

DEMO_TAP_MAC = "02:b7:00:00:aa:01"


@dataclass
class DemoPlan:
    """What build_demo() set up, so drive_demo() and tests know what to expect."""
    faults: Dict[str, str] = field(default_factory=dict)   # fault -> port it shows on


def build_demo(lab: Lab) -> DemoPlan:
    """Turn a Lab with >= 4 hosts into a bridge with five different faults.

    h1 is the talker.  vnet1 (h2) is held in STP listening; vnet2 (h3) has a too-small
    MTU; an nft rule drops UDP/9999; tap `<prefix>tap0` has a stalled reader; and
    frames to h1's own MAC sent by h1 come back to the same port.
    """
    if len(lab.hosts) < 4:
        raise LabError("build_demo needs a Lab with hosts >= 4")
    plan = DemoPlan()
    # "listening" rather than "blocking": with STP off the kernel only keeps
    # 0-2 (see set_stp_state); the drop path and reason are the same.
    lab.set_stp_state(lab.host(2).port, 1)
    plan.faults["stp_listening"] = lab.host(2).port
    lab.set_bridge_mtu(1500)
    lab.set_mtu(lab.bridge_ns, lab.host(3).port, 1000)
    plan.faults["egress_mtu_ipv4_df"] = lab.host(3).port
    lab.nft_drop("forward", "udp dport 9999")
    plan.faults["nft_drop"] = lab.host(1).port
    tap = lab.add_tap(lab.prefix + "tap0", reader="stalled", hold=120.0, txqueuelen=10)
    lab.add_fdb(DEMO_TAP_MAC, tap.name)
    plan.faults["tap_stalled"] = tap.name
    plan.faults["same_port"] = lab.host(1).port
    plan.faults["mcast_source"] = lab.host(1).port
    return plan


def demo_frames(lab: Lab) -> Dict[str, tuple]:
    """fault -> (netns, ifname, frame) that triggers it once."""
    h1, h2, h3, h4 = lab.host(1), lab.host(2), lab.host(3), lab.host(4)
    return {
        # STP listening: h2 talks to h4, vnet1 refuses it.
        "stp_listening": (h2.netns, h2.ifname, ipv4_udp(h4.mac, h2.mac, h2.ip, h4.ip, 4000, 5000)),
        # Egress MTU: 1400-byte frame to h3, whose bridge port has MTU 1000.
        "egress_mtu_ipv4_df": (h1.netns, h1.ifname,
                       ipv4_udp(h3.mac, h1.mac, h1.ip, h3.ip, 4000, 5000, frame_len=1400)),
        # nft: UDP/9999 forwarded h1 -> h4.
        "nft_drop": (h1.netns, h1.ifname, ipv4_udp(h4.mac, h1.mac, h1.ip, h4.ip, 4000, 9999)),
        # Stalled tap: frames to the tap's static FDB entry.
        "tap_stalled": (h1.netns, h1.ifname, ether(DEMO_TAP_MAC, h1.mac, ETH_P_LAB, b"tap")),
        # Same port: h1 sends to its own (learned) MAC.
        "same_port": (h1.netns, h1.ifname, ether(h1.mac, h1.mac, ETH_P_LAB, b"hairpin")),
        # Multicast source MAC.
        "mcast_source": (h1.netns, h1.ifname,
                         ether(h4.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"mcast-src")),
    }


def drive_demo(lab: Lab, seconds: float = 10.0, rate: int = 20) -> Dict[str, int]:
    """Send every demo fault `rate` times a second for `seconds`, all in parallel.

    Bounded: each generator sends exactly seconds*rate frames and is killed
    if it overruns.  Returns frames sent per fault.  h3 and h4 announce
    themselves first (one broadcast each, which also lands in the stalled
    tap's ring), so frames to them are forwarded rather than flooded.
    """
    for h in (lab.host(3), lab.host(4)):   # one broadcast each: the bridge learns them
        send_frames(h.netns, h.ifname, ether(BROADCAST, h.mac, ETH_P_LAB, b"hello"), 1)
    count = max(1, int(seconds * rate))
    procs = {name: start_sender(netns, ifname, frame, count, 1.0 / rate)
             for name, (netns, ifname, frame) in demo_frames(lab).items()}
    sent = {}
    try:
        for name, proc in procs.items():
            sent[name] = wait_sender(proc, timeout=seconds * 2 + 15)
    finally:
        for proc in procs.values():
            _kill_pid(proc)
    return sent
