"""`brtrace neigh` on real neighbour trouble: a gateway that never answers, an
IP claimed by two MACs."""

import time

import pytest

from lab import CHILD_PYTHON, arp_request, ns_argv, run, send_frames

_SEND_UDP = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x", (sys.argv[1], 9))
"""

pytestmark = pytest.mark.integration


def neigh_cmd(lab, *extra):
    return ("neigh", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5",
            "--duration", "120", *extra)



def test_gateway_that_never_answers(lab, tracer_factory):
    h1 = lab.host(1)
    t = tracer_factory(*neigh_cmd(lab, "--all-netns"))
    # The guest's gateway 10.77.0.99 does not exist: 5 datagrams wait in the
    # entry's queue while ARP goes unanswered (3 requests, one a second), the
    # entry goes INCOMPLETE -> FAILED and the 5 are dropped with it.
    run(ns_argv(h1.netns, [CHILD_PYTHON, "-c", _SEND_UDP, "10.77.0.99", "5"]), timeout=30)
    time.sleep(4.0)
    t.stop()
    arp = {r["port"]: r for r in t.kind("arp")}
    # The kernel's mcast_solicit (3): exactly 3 broadcast requests.
    assert arp[h1.port]["requests"] == 3 and arp[h1.port]["replies"] == 0
    assert arp[h1.port]["unanswered"] == [{"ip": "10.77.0.99", "requests": 3}]
    (un,) = t.findings("arp_unanswered")
    assert un["ports"] == [h1.port] and un["evidence"] == {"ip": "10.77.0.99", "requests": 3, "replies": 0}
    (nf,) = t.findings("neigh_failed")
    assert nf["evidence"]["ip"] == "10.77.0.99" and nf["evidence"]["failed"] == 1
    assert nf["evidence"]["dropped_by_reason"] == {"NEIGH_FAILED": 5}
    # The guest's entry lives in the guest's namespace: named by ifindex there.
    assert nf["ports"][0].startswith("ifindex ") and nf["ports"][0].endswith("@" + h1.netns)
    (entry,) = [n for n in t.kind("neigh") if n["ip"] == "10.77.0.99"]
    assert (entry["state"], entry["incomplete"], entry["failed"]) == ("failed", 1, 1)


def test_ip_claimed_by_two_macs(lab, tracer_factory):
    h1, h2 = lab.host(1), lab.host(2)
    t = tracer_factory(*neigh_cmd(lab))
    # h1 and h2 both announce 10.77.0.50 (gratuitous ARP), 3 times each.
    for h in (h1, h2):
        send_frames(h.netns, h.ifname, arp_request(h.mac, "10.77.0.50", "10.77.0.50"), 3, interval=0.02)
    t.stop()
    (c,) = t.findings("ip_conflict")
    assert c["evidence"]["ip"] == "10.77.0.50"
    assert sorted(c["evidence"]["macs"]) == sorted([h1.mac, h2.mac])
    assert c["evidence"]["conflicting_claims"] == 3
    assert sorted(c["ports"]) == sorted([h1.port, h2.port])
    arp = {r["port"]: r for r in t.kind("arp")}
    assert arp[h1.port]["gratuitous"] == 3 and arp[h2.port]["gratuitous"] == 3
