"""IPv6 neighbour discovery per address on the wire (ports.bpf.c
ndp_targets): a gateway nobody answers, an address held twice, a duplicate
address detection probe answered, router advertisements from two MACs or
reflected, a storm of solicitations. Real guest stacks where the kernel's
behaviour gives the exact truth, lab frames elsewhere."""

import itertools
import os
import time

import pytest

from lab import CHILD_PYTHON, Lab, ipv6_icmp, neighbour_solicitation, ns_argv, run, send_frames

pytestmark = pytest.mark.integration

_ids = itertools.count(1)

_SEND_UDP6 = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x", (sys.argv[1], 9))
"""

# The port hooks both ways this kernel offers (as in test_loops.py): tcx, and
# the tracepoint fallback, which reads an NDP target with a second kernel read.
PORT_HOOKS = {"tcx": {}, "tracepoints": {"BRTRACE_AVOID": "tcx"}}


def v6lab(hosts=2):
    """A lab whose guests speak IPv6 (prefix brt6: this file's namespaces)."""
    return Lab(prefix=f"brt6{os.getpid() % 1000}x{next(_ids)}", hosts=hosts, ipv6=True)


@pytest.fixture
def lab():
    """conftest's lab (no IPv6 in the guests: lab frames only), named brt6."""
    with Lab(prefix=f"brt6{os.getpid() % 1000}x{next(_ids)}", hosts=2) as built:
        yield built


def neigh_cmd(lab, *extra):
    return ("neigh", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5",
            "--duration", "120", *extra)


def addrs(lab, host) -> str:
    return lab.ip(host.netns, "-6", "addr", "show", "dev", host.ifname).stdout.decode()


def add_addr(lab, host, addr, dad=True, want="valid", timeout=5.0) -> str:
    """Add an address and wait until duplicate address detection ended as
    `want` ("valid": no longer tentative; "dadfailed"); returns its line."""
    lab.ip(host.netns, "-6", "addr", "add", f"{addr}/64", "dev", host.ifname, *([] if dad else ["nodad"]))
    deadline = time.monotonic() + timeout
    while True:
        line = next((ln for ln in addrs(lab, host).splitlines() if f"{addr}/64" in ln), "")
        if ("dadfailed" in line) if want == "dadfailed" else ("tentative" not in line):
            return line
        assert time.monotonic() < deadline, addrs(lab, host)
        time.sleep(0.05)


def settle(lab):
    """Every guest's link-local address past its DAD, so what follows is
    all that is solicited."""
    deadline = time.monotonic() + 5
    while any("tentative" in addrs(lab, h) for h in lab.hosts):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_ipv6_gateway_that_never_answers(tracer_factory):
    """The guest's gateway 2001:db8::99 does not exist: 5 datagrams wait in
    the neighbour entry's queue while the kernel sends its mcast_solicit (3)
    solicitations, a second apart, then the entry goes INCOMPLETE -> FAILED."""
    with v6lab() as lab:
        h1 = lab.host(1)
        add_addr(lab, h1, "2001:db8::1", dad=False)
        settle(lab)
        t = tracer_factory(*neigh_cmd(lab, "--all-netns"))
        run(ns_argv(h1.netns, [CHILD_PYTHON, "-c", _SEND_UDP6, "2001:db8::99", "5"]), timeout=30)
        time.sleep(4.5)
        t.stop()
    (un,) = t.findings("ndp_unanswered")
    assert un["ports"] == [h1.port]
    assert un["evidence"] == {"ip": "2001:db8::99", "solicitations": 3, "advertisements": 0, "copies": 0}
    assert un["message"] == ("3 IPv6 neighbour solicitations for 2001:db8::99 (latest from "
                             f"{h1.port}) got no advertisement on {lab.bridge}: nothing behind the "
                             "bridge answers for 2001:db8::99")
    assert un["active"] is False          # the kernel gave up 1.5 s before the end
    ndp = {r["port"]: r for r in t.kind("ndp")}
    assert ndp[h1.port]["unanswered"] == [{"ip": "2001:db8::99", "solicitations": 3}]
    (nf,) = [f for f in t.findings("neigh_failed") if f["evidence"]["ip"] == "2001:db8::99"]
    # (the datagrams queued for it are not asserted: IPv6 does not free them as NEIGH_* drops here)
    assert nf["evidence"]["failed"] == 1
    assert nf["ports"][0].endswith("@" + h1.netns)
    (entry,) = [n for n in t.kind("neigh") if n["ip"] == "2001:db8::99"]
    assert (entry["state"], entry["incomplete"], entry["failed"]) == ("failed", 1, 1)
    assert not t.findings("ip_conflict") and not t.findings("rogue_ra")


@pytest.mark.parametrize("hooks", sorted(PORT_HOOKS))
def test_gateway_on_the_bridge_answers(tracer_factory, hooks):
    """The common KVM host: the gateway address is the bridge's own. Its
    advertisements leave through the bridge device (br_dev_xmit()), not a
    port, and still answer: three resolutions (the guest's entry flushed
    between them) are three solicitations answered, nothing unanswered."""
    with v6lab() as lab:
        h1 = lab.host(1)
        lab.ip(lab.bridge_ns, "-6", "addr", "add", "2001:db8::fe/64", "dev", lab.bridge, "nodad")
        add_addr(lab, h1, "2001:db8::1", dad=False)
        settle(lab)
        t = tracer_factory(*neigh_cmd(lab), env=PORT_HOOKS[hooks])
        for _ in range(3):
            run(ns_argv(h1.netns, [CHILD_PYTHON, "-c", _SEND_UDP6, "2001:db8::fe", "1"]), timeout=30)
            time.sleep(0.3)
            lab.ip(h1.netns, "-6", "neigh", "flush", "dev", h1.ifname)
        t.stop()
    ndp = {r["port"]: r for r in t.kind("ndp")}
    assert ndp[h1.port]["solicitations"] == 3 and ndp[h1.port]["unanswered"] == []
    assert not t.findings("ndp_unanswered") and not t.findings("ip_conflict")


def test_ipv6_address_held_by_two_guests(tracer_factory):
    """h1 holds 2001:db8::50 (its DAD passed); h2 is given it too with DAD
    off, so both keep it. h3's one datagram to it solicits it once: both
    answer, and the second answer is a conflicting advertisement."""
    with v6lab(hosts=3) as lab:
        h1, h2, h3 = lab.host(1), lab.host(2), lab.host(3)
        add_addr(lab, h1, "2001:db8::50")
        add_addr(lab, h2, "2001:db8::50", dad=False)
        add_addr(lab, h3, "2001:db8::3", dad=False)
        settle(lab)
        t = tracer_factory(*neigh_cmd(lab))
        run(ns_argv(h3.netns, [CHILD_PYTHON, "-c", _SEND_UDP6, "2001:db8::50", "1"]), timeout=30)
        time.sleep(1.0)               # stop before h3's entry is probed again (5 s later)
        t.stop()
    (c,) = t.findings("ip_conflict")
    assert c["evidence"]["kind"] == "advertised_by_two_macs" and c["evidence"]["ip"] == "2001:db8::50"
    assert sorted(c["ports"]) == sorted([h1.port, h2.port])
    assert sorted(c["evidence"]["macs"]) == sorted([h1.mac, h2.mac])
    assert c["evidence"]["conflicting_advertisements"] == 1 and c["evidence"]["advertisements"] == 2
    # solicited answers to a multicast solicitation carry the override flag (RFC 4861 7.2.4)
    assert c["evidence"]["overrides"] == 2
    assert c["severity"] == "critical" and "advertised by two MACs" in c["message"]
    assert not t.findings("ndp_unanswered")


def test_dad_probe_answered(tracer_factory):
    """h1 holds 2001:db8::50; h2 is given it with DAD on: its one probe (from
    ::) is answered by h1 and h2 marks the address dadfailed."""
    with v6lab() as lab:
        h1, h2 = lab.host(1), lab.host(2)
        add_addr(lab, h1, "2001:db8::50")
        settle(lab)
        t = tracer_factory(*neigh_cmd(lab))
        line = add_addr(lab, h2, "2001:db8::50", want="dadfailed")
        t.stop()
    assert "dadfailed" in line
    (c,) = t.findings("ip_conflict")
    ev = c["evidence"]
    assert ev["kind"] == "dad_answered" and ev["ip"] == "2001:db8::50"
    assert c["ports"] == [h2.port, h1.port]
    assert (ev["prober_mac"], ev["answer_mac"]) == (h2.mac, h1.mac)
    assert (ev["dad_probes"], ev["answers"]) == (1, 1)
    assert c["message"].startswith(f"the duplicate address detection probe for 2001:db8::50 from {h2.mac} "
                                   f"({h2.port}) was answered by {h1.mac} ({h1.port})")


def test_router_advertisements_from_two_macs_and_reflected(lab, tracer_factory):
    """RAs from two MACs (h1 from fe80::1, h2 from fe80::2): both ports named.
    A reflecting tap sends each back in: every one a reflected RA entering
    by the tap, not the routers' ports."""
    h1, h2 = lab.host(1), lab.host(2)
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=1000, comm="tincd")
    t = tracer_factory(*neigh_cmd(lab))
    for h, src, n in ((h1, "fe80::1", 3), (h2, "fe80::2", 2)):
        ra = ipv6_icmp("33:33:00:00:00:01", h.mac, src, "ff02::1", 134, bytes(12))
        # 0.3 s apart: each comes back from the tap before the next leaves
        send_frames(h.netns, h.ifname, ra, n, interval=0.3)
    t.stop(settle=0.8)
    rogue = {f["evidence"]["kind"]: [] for f in t.findings("rogue_ra")}
    for f in t.findings("rogue_ra"):
        rogue[f["evidence"]["kind"]].append(f)
    (several,) = rogue["several_routers"]
    assert several["ports"] == sorted([h1.port, h2.port]) and several["severity"] == "critical"
    assert {(r["mac"], r["port"], tuple(r["from"])) for r in several["evidence"]["routers"]} == {
        (h1.mac, h1.port, ("fe80::1",)), (h2.mac, h2.port, ("fe80::2",))}
    reflected = {f["evidence"]["ip"]: f for f in rogue["reflected_ra"]}
    assert sorted(reflected) == ["fe80::1", "fe80::2"]
    for ip, h, n in (("fe80::1", h1, 3), ("fe80::2", h2, 2)):
        f = reflected[ip]
        assert f["ports"] == [tap.name] and f["evidence"]["router_port"] == h.port
        assert (f["evidence"]["copies"], f["evidence"]["advertisements"]) == (n, n)


@pytest.mark.parametrize("hooks", sorted(PORT_HOOKS))
def test_ndp_targets_on_both_hook_modes(lab, tracer_factory, hooks):
    """The per-address table from lab frames, on tcx and on the tracepoint
    fallback: solicitations nobody answers, advertisements with their flags
    from two MACs, a DAD probe answered by another MAC."""
    h1, h2 = lab.host(1), lab.host(2)
    t = tracer_factory(*neigh_cmd(lab), env=PORT_HOOKS[hooks])
    a1, gone, held = "2001:db8::1", "2001:db8::99", "2001:db8::7"
    send_frames(h1.netns, h1.ifname, neighbour_solicitation(h1.mac, a1, gone), 4, interval=0.01)
    # h2 advertises `held` twice (solicited + override), h1 once (override only)
    na = lambda h, flags: ipv6_icmp(h1.mac, h.mac, held, a1, 136,  # noqa: E731
                                    bytes([flags, 0, 0, 0]) + bytes.fromhex("20010db8" + "0" * 22 + "07"))
    send_frames(h2.netns, h2.ifname, na(h2, 0x60), 2, interval=0.01)
    send_frames(h1.netns, h1.ifname, na(h1, 0x20), 1)
    # h1 probes `held` (DAD): h2, the first to advertise it, answers to all nodes
    send_frames(h1.netns, h1.ifname, neighbour_solicitation(h1.mac, "::", held), 1)
    send_frames(h2.netns, h2.ifname, ipv6_icmp("33:33:00:00:00:01", h2.mac, held, "ff02::1", 136,
                                               bytes([0x20, 0, 0, 0]) + bytes.fromhex("20010db8" + "0" * 22 + "07")), 1)
    t.stop()
    (un,) = t.findings("ndp_unanswered")
    assert un["ports"] == [h1.port] and un["evidence"]["solicitations"] == 4
    conflicts = {f["evidence"]["kind"]: f for f in t.findings("ip_conflict")}
    two = conflicts["advertised_by_two_macs"]
    assert two["ports"] == [h2.port, h1.port] and two["evidence"]["macs"] == [h2.mac, h1.mac]
    assert (two["evidence"]["advertisements"], two["evidence"]["conflicting_advertisements"],
            two["evidence"]["overrides"]) == (4, 1, 4)
    dad = conflicts["dad_answered"]
    assert dad["ports"] == [h1.port, h2.port] and (dad["evidence"]["dad_probes"], dad["evidence"]["answers"]) == (1, 1)


def loops_cmd(lab):
    return ("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5",
            "--duration", "120")


def test_storm_of_neighbour_solicitations(lab, tracer_factory):
    """A guest floods solicitations for one address. Unicast (as a guest
    probing a neighbour sends them), they are no broadcast at all: the storm
    is named as an NDP storm, never "broadcast storm at 0/s". To the
    solicited-node group they are multicast: a broadcast storm whose figures
    include the solicitations. Either way nobody answers, and the storm is
    named as what may have kept the solicitations from their target."""
    h1 = lab.host(1)
    n = 2000
    gone = "2001:db8::99"
    multicast = neighbour_solicitation(h1.mac, "2001:db8::1", gone)
    unicast = bytes.fromhex("02b7000000aa") + multicast[6:]     # a MAC nobody has: flooded
    found = {}
    for name, frame in (("unicast", unicast), ("multicast", multicast)):
        t = tracer_factory(*loops_cmd(lab))
        time.sleep(0.7)         # rates start at the first interval's fold: the burst comes after it
        send_frames(h1.netns, h1.ifname, frame, n)
        t.stop(settle=1.2)                # past one whole interval after the burst
        assert t.ports()[h1.port]["ndp_ns"] == n
        (storm,) = t.findings("storm")
        (un,) = t.findings("ndp_unanswered")
        found[name] = storm
        assert storm["ports"] == [h1.port] and storm["evidence"]["peak_ndp_solicitations_per_second"] >= 100
        assert storm["evidence"]["top_ndp_targets"] == {gone: n}
        assert un["evidence"]["solicitations"] == n and "storm on " + h1.port in un["message"]
        assert un["evidence"]["maybe_suppressed_by"] == [{"type": "storm", "ports": [h1.port]}]
        assert not t.findings("ip_conflict")
        # 2000 identical multicast frames from one guest, far faster than a
        # host repeats itself: counted apart (origin copies; unicast frames are
        # not fingerprinted), and never a loop on its port
        assert (t.ports()[h1.port]["origin_copies"] > n // 2) == (name == "multicast")
        assert not t.findings("l2_loop")
    uni, multi = found["unicast"], found["multicast"]
    assert uni["evidence"]["kind"] == "ndp_storm" and uni["evidence"]["peak_broadcast_per_second"] == 0
    assert uni["message"].startswith(f"IPv6 neighbour solicitation storm on {h1.port}: up to ")
    assert "broadcast" not in uni["message"] and " 0 " not in uni["message"].split("(now")[0]
    assert multi["evidence"]["kind"] == "broadcast_storm"
    assert multi["message"].startswith(f"broadcast storm on {h1.port}: up to ")
    assert "IPv6 neighbour solicitations/s" in multi["message"] and "ARP" not in multi["message"]
