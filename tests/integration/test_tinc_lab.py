"""The tinc lab itself (lab.tinc), checked with kernel counters only.

Real tincd 1.0 in switch mode between three namespaced "KVM hosts".  No brtrace
here: the ground truth is `ip -s -j link` (t3o's rx packets = frames tincd wrote
into the tap) and `bridge fdb` (which port a MAC was last learned on), so these
tests tell whether the lab reproduces the incident before brtrace is asked to.
"""

import errno
import os
import time

import pytest

from lab import BROADCAST, ETH_P_LAB, ether, ping, run, ns_argv, send_frames
from lab.tinc import TincMesh

pytestmark = pytest.mark.integration


def _prefix(tag: str) -> str:
    return "brtinc%d%s" % (os.getpid() % 1000, tag)


def _leftovers(prefix: str) -> list:
    """Our namespaces and our tincds still alive (their argv names our netname)."""
    ns = run(["ip", "netns", "list"]).stdout.decode().split()
    procs = run(["pgrep", "-a", "tincd"], check=False).stdout.decode().splitlines()
    return [n for n in ns if n.startswith(prefix + "-")] + \
        [p for p in procs if "-n %s " % prefix in p]


@pytest.fixture
def mesh_factory():
    built = []

    def make(tag: str, **kw) -> TincMesh:
        m = TincMesh(prefix=_prefix(tag), nodes=3, hold=60.0, **kw)
        built.append(m)
        return m.__enter__()

    yield make
    for m in built:
        m.cleanup()
        m.cleanup()                      # safe twice
        assert _leftovers(m.prefix) == []
        assert m.tmpdir is None


def _rx(m, i, dev=None):
    return m.link_stats(i, dev)["rx_packets"]


def _wait_quiet(m, i, limit_pps=10.0, within=5.0) -> float:
    """Poll node i's t3o rx rate (0.5 s windows) until below limit_pps; return it."""
    end = time.monotonic() + within
    while True:
        rate = m.rx_rate(i, seconds=0.5)
        if rate < limit_pps or time.monotonic() > end:
            return rate


def _sample_fdb(m, mac, nodes, samples=20, gap=0.05) -> dict:
    """node -> set of ports MAC was learned on over `samples` readings."""
    seen = {i: set() for i in nodes}
    for _ in range(samples):
        for i in nodes:
            seen[i].add(m.fdb(i).get(mac))
        time.sleep(gap)
    return seen


def test_mesh_without_loop_delivers_each_broadcast_once(mesh_factory):
    m = mesh_factory("a")
    vm1, vm2, vm3 = m.vm(1), m.vm(2), m.vm(3)
    # Real tincd, PIDs tracked, t3o created by tincd and enslaved by tinc-up.
    assert set(m.tincd_pids()) == {1, 2, 3}
    for n in m.nodes:
        assert open("/proc/%d/comm" % n.pid).read().strip() == "tincd"
    assert m.ready_s < 20
    # VMs on different hosts reach each other only through tinc.
    assert ping(vm1.netns, vm3.ip, count=2) and ping(vm2.netns, vm3.ip, count=2)
    assert ping(vm3.netns, m.gateway.ip, count=2)

    before = {i: _rx(m, i) for i in (1, 2, 3)}
    K = 20
    send_frames(vm1.netns, vm1.ifname, ether(BROADCAST, vm1.mac, ETH_P_LAB, b"tinc-bcast"), K,
                interval=0.01)
    time.sleep(0.5)
    got = {i: _rx(m, i) - before[i] for i in (1, 2, 3)}
    # Every other node gets each broadcast once (a frame or two of ARP
    # refresh noise allowed); node 1's own t3o gets none back.
    assert K <= got[3] <= K + 3 and K <= got[2] <= K + 3, got
    assert got[1] <= 3, got
    # No flapping: VM 1 stays on vnet0 at home and behind t3o elsewhere.
    seen = _sample_fdb(m, vm1.mac, (1, 2, 3), samples=5)
    assert seen == {1: {vm1.port}, 2: {m.node(2).tap}, 3: {m.node(3).tap}}
    assert _wait_quiet(m, 3, within=1.0) < 10


def test_direct_link_closes_loop_through_tinc(mesh_factory, record_property):
    m = mesh_factory("b")
    vm1 = m.vm(1)
    link = m.add_direct_link(1, 2, hold=20.0)     # watchdog deletes it after 20 s anyway
    assert m.node(1).direct_ports == {2: "dl2"} and m.node(2).direct_ports == {1: "dl1"}
    # A loop in silent namespaces is quiet until someone floods.
    assert m.rx_rate(3, seconds=0.5) < 10

    c0, t0, cpu0 = _rx(m, 3), time.monotonic(), m.tincd_cpu()
    assert m.seed_storm(node=1) == 1                # ONE ARP request from VM 1
    time.sleep(1.0)
    rate = m.rx_rate(3, seconds=1.0)                # pps seen by a third node
    c1, t1, cpu1 = _rx(m, 3), time.monotonic(), m.tincd_cpu()
    seen = _sample_fdb(m, vm1.mac, (1, 2))
    cpu = {i: round((cpu1[i] - cpu0[i]) / (t1 - t0), 2) for i in cpu1}
    record_property("storm_rx_pps_node3_t3o", round(rate))
    record_property("tincd_cpu_share", cpu)
    print("storm: node 3 t3o rx %.0f pps; tincd CPU share %r; VM1 MAC ports %r"
          % (rate, cpu, seen))
    # Within ~2 s of one frame, node 3 received thousands (measured ~30k pps).
    assert c1 - c0 > 1000, (c1 - c0, rate)
    assert rate > 500
    # VM 1's MAC left its real port at home, and flaps between the loop's ports.
    assert seen[1] - {vm1.port}, seen
    assert len(seen[1]) >= 2 or len(seen[2]) >= 2, seen

    m.break_direct_link(1, 2)
    assert link.broken and link.watchdog is None and m.node(1).direct_ports == {}
    after = _wait_quiet(m, 3, within=5.0)
    record_property("after_break_rx_pps_node3_t3o", round(after))
    assert after < 10, after


def _kmsg_reader():
    """/dev/kmsg positioned at its end (only records logged from now on), or None."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def _kmsg_lines(fd) -> list:
    lines = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except OSError as e:
            if e.errno == errno.EPIPE:       # records overwritten under us: go on
                continue
            if e.errno == errno.EAGAIN:
                return lines
            raise
        if not rec:
            return lines
        lines.append(rec.decode(errors="replace").split(";", 1)[-1].strip())


def test_own_frames_come_back_through_t3o(mesh_factory, record_property):
    m = mesh_factory("c")
    n3, vm3 = m.node(3), m.vm(3)
    m.set_bridge_ip(3, "10.88.0.103/24")      # the host's own address lives on br-int
    m.add_direct_link(1, 2, hold=20.0)
    kmsg = _kmsg_reader()
    try:
        m.seed_storm(node=1)
        time.sleep(0.5)
        # Node 3's own frames enter the loop and come back on its t3o: the
        # bridge's ARP (from its own MAC) and one broadcast from its VM.
        run(ns_argv(n3.netns, ["ping", "-c", "1", "-W", "1", "10.88.0.249"]), check=False)
        send_frames(vm3.netns, vm3.ifname, ether(BROADCAST, vm3.mac, ETH_P_LAB, b"vm3"), 1)
        seen = _sample_fdb(m, vm3.mac, (3,), samples=10)
        time.sleep(0.5)
        lines = _kmsg_lines(kmsg) if kmsg is not None else None
    finally:
        if kmsg is not None:
            os.close(kmsg)
    m.break_direct_link(1, 2)
    # Counter truth: VM 3's MAC, at home on vnet0, was learned on t3o.
    assert n3.tap in seen[3], seen
    assert _wait_quiet(m, 3) < 10

    wanted = "%s: received packet on %s with own address as source address (addr:%s" % (
        n3.bridge, n3.tap, n3.bridge_mac)
    hits = [line for line in (lines or []) if wanted in line]
    record_property("own_address_kmsg_lines", len(hits))
    print("kmsg own-address lines for node 3: %d" % len(hits))
    if not hits:
        # Not a failure: the printk is net_ratelimit()ed (10 per 5 s, shared
        # by the whole machine), so a parallel test can use up the budget.
        pytest.skip("own-address printk not seen (kmsg %s; rate-limited?)"
                    % ("unreadable" if lines is None else "read"))
