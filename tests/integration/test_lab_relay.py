"""Lab.add_slow_peer_loop(): a layer-2 loop with a ~0.3 s round trip, built
without netem (this kernel has none) from a userspace relay between two taps.

Ground truth is taken from the kernel only (per-device counters from `ip -s`,
and timestamped frames from a packet socket), never from brtrace.  Each test
builds its own lab, keeps to a few seconds of traffic, and checks afterwards
that no namespace and no child of ours is left."""

import os
import select
import subprocess
import time

import pytest

from lab import (BROADCAST, CHILD_PYTHON, ETH_P_LAB, Lab, _kill_pid, ether,
                        ns_argv, send_frames)

pytestmark = pytest.mark.integration

DELAY = 0.3


def slow_lab() -> Lab:
    return Lab(prefix=f"brtslow{os.getpid() % 1000}", hosts=2)


# Runs inside a namespace: record every ETH_P_LAB frame seen on the given
# interfaces for `seconds`, with the kernel's receive timestamp (SO_TIMESTAMPNS),
# one line each: ifname in|out seconds payload[0:10]-hex.  tcpdump would do,
# but it is not installed everywhere; this needs only the standard library.
_CAPTURE = r"""
import select, socket, struct, sys, time
seconds, names = float(sys.argv[1]), sys.argv[2:]
ETH_P_ALL, SO_TIMESTAMPNS = 0x0003, 35
socks = {}
for name in names:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((name, 0))
    socks[s] = name
print("ready", flush=True)
end = time.monotonic() + seconds
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    for s in select.select(list(socks), [], [], left)[0]:
        data, anc, _flags, addr = s.recvmsg(2048, 64)
        # addr[0]: ETH_P_ALL sockets see other devices until bind() took effect.
        if addr[0] != socks[s] or data[12:14] != b"\x88\xb5":
            continue
        ts = [struct.unpack("qq", d[:16]) for _lvl, typ, d in anc if typ == SO_TIMESTAMPNS]
        t = ts[0][0] + ts[0][1] / 1e9 if ts else time.time()
        print(addr[0], "out" if addr[2] == socket.PACKET_OUTGOING else "in",
              "%.6f" % t, data[14:24].hex())
"""


class Capture:
    """A bounded capture child of ours in NETNS; lines() waits for it to finish."""

    def __init__(self, netns: str, ifnames, seconds: float):
        self.seconds = seconds
        self.proc = subprocess.Popen(
            ns_argv(netns, [CHILD_PYTHON, "-c", _CAPTURE, repr(seconds)] + list(ifnames)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10.0)
        if not ready or self.proc.stdout.readline().strip() != b"ready":
            self.kill()
            raise RuntimeError("capture did not start")

    def frames(self):
        """[(ifname, 'in'|'out', timestamp, payload_hex)] once the child is done."""
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 10)
        finally:
            self.kill()
        assert self.proc.returncode == 0, err.decode(errors="replace")
        rows = [line.split() for line in out.decode().splitlines()]
        return [(r[0], r[1], float(r[2]), r[3]) for r in rows]

    def kill(self):
        _kill_pid(self.proc)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream and not stream.closed:
                stream.close()


def rx(lab, port):
    return lab.link_stats(lab.bridge_ns, port)["rx_packets"]


def assert_cleaned_up(prefix, procs):
    """No namespace of this lab and none of our children (relay, watchdog) remain."""
    names = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                           check=True).stdout.decode()
    assert not [n for n in names.split() if n.startswith(prefix + "-")], names
    for proc in procs:
        assert proc.poll() is not None, "child %d still running" % proc.pid
        assert not os.path.exists("/proc/%d" % proc.pid), "pid %d still exists" % proc.pid


def test_one_broadcast_circulates_at_the_relay_pace():
    """One broadcast in a loop with a 0.3 s link: each loop port of the lab
    bridge receives it about every 0.3 s (about 10 in 3 s, not thousands), and
    nothing more once the fast link is deleted.  The relay's own counts match
    the lab tap's counters exactly."""
    with slow_lab() as lab:
        loop = lab.add_slow_peer_loop(delay=DELAY, hold=30.0)
        procs = [loop.relay, loop.watchdog]
        (tap, tap_peer), (veth, veth_peer) = loop.links
        assert loop.relay_link == (tap, tap_peer) and tap == lab.prefix + "s1"
        assert loop.states == {(lab.bridge_ns, tap): "forwarding",
                               (loop.netns, tap_peer): "forwarding",
                               (lab.bridge_ns, veth): "forwarding",
                               (loop.netns, veth_peer): "forwarding"}
        before = {p: rx(lab, p) for p in (tap, veth)}
        h = lab.host(1)
        send_frames(h.netns, h.ifname, ether(BROADCAST, h.mac, ETH_P_LAB, b"slow"), 1)
        window = 3.0
        t0 = time.monotonic()
        time.sleep(window)
        got = {p: rx(lab, p) - before[p] for p in (tap, veth)}
        elapsed = time.monotonic() - t0
        # One copy circulates each way; each passes every loop port once a lap.
        expected = elapsed / DELAY
        for port, n in got.items():
            assert 0.7 * expected <= n <= 1.3 * expected, (port, n, expected)

        lab.break_loop()                          # deletes the veth, keeps the relay
        assert loop.broken == [veth]
        time.sleep(2 * DELAY)                     # frames still held in the relay land
        settled = lab.link_stats(lab.bridge_ns, tap)
        host_port = lab.link_stats(lab.bridge_ns, h.port)
        time.sleep(1.0)
        assert lab.link_stats(lab.bridge_ns, tap) == settled
        assert lab.link_stats(lab.bridge_ns, h.port) == host_port

        relayed = lab.stop_relay()
        stats = loop.relay_stats
        assert relayed == stats["a2b"] + stats["b2a"] and stats["failed"] == stats["dropped"] == 0
        # The relay read everything the bridge sent into the tap and wrote what
        # the tap received: its counts are the tap's counters.
        assert (stats["a2b"], stats["b2a"]) == (settled["tx_packets"], settled["rx_packets"])
        assert loop.relay is None and lab.stop_relay() is None
    assert_cleaned_up(lab.prefix, procs)


def test_consecutive_laps_are_one_delay_apart():
    """Timestamped capture on both lab-side loop ports: each copy of the frame
    comes back every `delay` s (within 25%), on the tap and on the veth."""
    with slow_lab() as lab:
        loop = lab.add_slow_peer_loop(delay=DELAY, hold=30.0)
        procs = [loop.relay, loop.watchdog]
        (tap, _), (veth, _) = loop.links
        cap = Capture(lab.bridge_ns, [tap, veth], seconds=2.5)
        procs.append(cap.proc)
        h = lab.host(1)
        send_frames(h.netns, h.ifname, ether(BROADCAST, h.mac, ETH_P_LAB, b"slow"), 1)
        frames = cap.frames()
        lab.break_loop()
        lab.stop_relay()
    assert_cleaned_up(lab.prefix, procs)

    for port in (tap, veth):
        arrivals = [t for dev, way, t, _ in frames if dev == port and way == "in"]
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        assert len(gaps) >= 5, (port, arrivals)
        assert all(0.75 * DELAY <= g <= 1.25 * DELAY for g in gaps), (port, gaps)
    # The round trip, seeding included: the first copy to come back in on the
    # tap is the one the bridge flooded out of the veth at seeding time.
    first_out = min(t for dev, way, t, _ in frames if dev == veth and way == "out")
    first_back = min(t for dev, way, t, _ in frames if dev == tap and way == "in")
    assert 0.75 * DELAY <= first_back - first_out <= 1.25 * DELAY


def test_relay_holds_a_burst_concurrently():
    """20 different broadcasts sent back to back all come back one delay after
    they left (a timed queue, not one frame per delay), so the loop carries
    ~20/delay frames a second per port."""
    burst = 20
    with slow_lab() as lab:
        loop = lab.add_slow_peer_loop(delay=DELAY, hold=30.0)
        procs = [loop.relay, loop.watchdog]
        (tap, _), (veth, _) = loop.links
        cap = Capture(lab.bridge_ns, [tap], seconds=1.5)
        procs.append(cap.proc)
        h = lab.host(1)
        # Bytes 14..18 "burst", then a 4-byte sequence number: every frame differs.
        send_frames(h.netns, h.ifname, ether(BROADCAST, h.mac, ETH_P_LAB, b"burst" + bytes(4)),
                    burst, seq_offset=19)
        frames = cap.frames()
        lab.break_loop()
        relayed = lab.stop_relay()
    assert_cleaned_up(lab.prefix, procs)

    def first(way):
        seen = {}
        for _dev, w, t, payload in frames:
            if w == way:
                seen.setdefault(payload, t)
        return seen

    went, came = first("out"), first("in")
    assert len(went) == burst and set(came) == set(went), (len(went), len(came))
    laps = [came[p] - went[p] for p in went]
    assert all(0.75 * DELAY <= lap <= 1.25 * DELAY for lap in laps), laps
    # In 1.5 s each frame came back in on the tap ~1.5/delay times.
    back = sum(1 for _dev, w, _t, _p in frames if w == "in")
    assert back >= 0.7 * burst * 1.5 / DELAY, back
    assert relayed >= 2 * back * 0.9
