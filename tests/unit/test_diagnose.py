"""Findings from fixed counter snapshots: each detector fires on its evidence
and stays silent on a healthy bridge."""

from tracer.aggregate import BridgeState
from tracer.diagnose import Inputs, diagnose
from tracer.report import DropRow
from tracer.topology import Bridge, Netns, Port

NETNS = Netns("lab", "/run/netns/lab", 1)


def bridge(states=None):
    states = states or {}
    ports = {i: Port(i, n, "veth", f"02:00:00:00:00:{i:02x}", 1500, "UP", 1000, states.get(n, "forwarding"))
             for i, n in ((3, "vnet0"), (4, "vnet1"), (5, "t3o"), (6, "l1"), (7, "l2"))}
    return Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, ports)


def zero():
    return {k: 0 for k in ("rx_packets", "tx_packets", "rx_broadcast", "rx_multicast", "rx_arp",
                           "echoes", "returns", "reentries", "arp_duplicates", "fdb_learned")}


def state(snapshots, moves=(), dt=1.0):
    """Fold successive snapshots {port: {counter: value}} one interval apart."""
    st = BridgeState()
    for i, snap in enumerate(snapshots):
        counters = {p: {**zero(), **v} for p, v in snap.items()}
        st.fold(counters, list(moves) if i == len(snapshots) - 1 else [], i * dt)
    return st


def run(st, states=None, rows=()):
    return diagnose(Inputs(bridge=bridge(states), state=st, seconds=10.0, drop_rows=list(rows),
                           ns_prefix="ip netns exec lab "))


def types(findings):
    return sorted((f.type, tuple(f.ports)) for f in findings)


def test_healthy_bridge_has_no_findings():
    snaps = [{"vnet0": {"rx_packets": 0}}, {"vnet0": {"rx_packets": 100, "rx_arp": 2, "rx_broadcast": 2}}]
    moves = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 1, "port": "vnet0", "prev_port": None}]
    assert run(state(snaps, moves)) == []


def test_own_address_echo_names_the_port_and_the_confirming_step():
    st = state([{"t3o": {}}, {"t3o": {"echoes": 40}}])
    (f,) = run(st)
    assert (f.type, f.ports, f.evidence["frames"]) == ("own_address_echo", ["t3o"], 40)
    assert "ip netns exec lab ip link set t3o nomaster" in f.hint
    assert "own address as source address" in f.message


def test_mac_flap_needs_repeated_moves_between_ports():
    moves = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 9, "port": "t3o", "prev_port": "vnet0"}]
    (f,) = run(state([{}, {}], moves))
    assert f.type == "mac_flap" and sorted(f.ports) == ["t3o", "vnet0"]
    assert f.evidence["moves"] == 8
    few = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 3, "port": "t3o", "prev_port": "vnet0"}]
    assert run(state([{}, {}], few)) == []


def test_reflecting_port_versus_loop_between_ports():
    (f,) = run(state([{"t3o": {}}, {"t3o": {"returns": 30}}]))
    assert (f.type, f.ports, f.evidence["kind"]) == ("l2_loop", ["t3o"], "reflecting_port")
    (g,) = run(state([{}, {"l1": {"returns": 30}, "l2": {"reentries": 25}}]))
    assert (g.type, g.ports, g.evidence["kind"]) == ("l2_loop", ["l1", "l2"], "loop_between_ports")
    assert g.evidence["frames_back"] == 55


def loop_verdict(st):
    (f,) = [f for f in run(st) if f.type == "l2_loop"]
    return f.evidence["kind"], f.ports, f.culprit_ports


def test_ports_that_only_carry_the_storm_are_not_on_the_loop():
    """The VM's and the gateway's ports see a copy come in when their host
    resends a frame that is going round; against what the storm floods out
    to them that is a fraction of a percent, where the loop's ports get
    back about what they send."""
    storm = {"t3o": {"returns": 885, "tx_flooded": 900},
             "vnet0": {"returns": 10, "tx_flooded": 9000},
             "vnet1": {"returns": 5, "tx_flooded": 9000}}
    assert loop_verdict(state([{}, storm])) == ("reflecting_port", ["t3o"], ["t3o"])
    # Lower the share a port gets back and it drops off the loop.
    both = {"l1": {"returns": 800, "tx_flooded": 1000}, "l2": {"returns": 240, "tx_flooded": 1000}}
    assert loop_verdict(state([{}, both]))[1] == ["l1"]
    both["l2"]["returns"] = 260
    assert loop_verdict(state([{}, both])) == ("loop_between_ports", ["l1", "l2"], ["l1", "l2"])


def test_loop_beyond_a_port_when_copies_come_back_without_being_sent_there():
    """A loop between two other hosts of a VPN: this bridge's frames come back
    in through t3o again and again though the bridge never floods them back
    out of t3o (hairpin off): the loop is beyond t3o, nothing here ends it."""
    st = state([{}, {"t3o": {"returns": 40, "reentries": 4000, "tx_flooded": 60},
                     "vnet0": {"returns": 3, "tx_flooded": 30000}}])
    kind, ports, culprits = loop_verdict(st)
    assert (kind, ports, culprits) == ("loop_beyond_port", ["t3o"], [])
    (f,) = [f for f in run(st) if f.type == "l2_loop"]
    assert "loop beyond t3o" in f.message and "not on this bridge" in f.hint
    assert f.record()["culprit_ports"] == []
    # A reflector with hairpin on returns what it was sent: returns dominate.
    st = state([{}, {"t3o": {"returns": 4000, "reentries": 40, "tx_flooded": 4100}}])
    assert loop_verdict(st) == ("reflecting_port", ["t3o"], ["t3o"])


def test_copies_at_a_frames_first_port_are_a_loop_only_where_the_port_leads_on():
    """A storm already running when brtrace starts (or while watch had the
    port programs detached): brtrace first meets the storm's frame as one of
    its copies coming in by t3o, so every later copy comes in by the frame's
    first port, faster than a host repeats itself (origin_copies). Behind a
    VPN tap that is a loop beyond it; behind a guest's port it is the guest
    sending one frame over and over: a storm on that port, never a loop."""
    snaps = [{"t3o": {}, "vnet0": {}},
             {"t3o": {"origin_copies": 25000, "rx_broadcast": 25010, "host_repeats": 8},
              "vnet0": {"tx_flooded": 25010}}]

    def findings(label):
        return diagnose(Inputs(bridge=bridge(), state=state(snaps), seconds=10.0, drop_rows=[],
                               ns_prefix="ip netns exec lab ", labels={"t3o": label}))
    (loop,) = [f for f in findings("vpn tincd") if f.type == "l2_loop"]
    assert (loop.evidence["kind"], loop.ports, loop.culprit_ports, loop.active) == \
        ("loop_beyond_port", ["t3o"], [], True)
    assert loop.evidence["per_port"]["t3o"]["reentered"] == 25000
    guest = findings("vm web01")
    assert [f for f in guest if f.type == "l2_loop"] == []
    assert ("storm", ("t3o",)) in types(guest)


def test_verdict_is_the_same_from_a_late_start_and_holds_between_intervals():
    """A steady storm: brtrace started early sees the same ratios as one
    started minutes later, and the verdict does not change from one interval
    to the next."""
    def steady(start, n):
        return [{"l1": {"returns": 1000 * (start + i), "tx_flooded": 1010 * (start + i)},
                 "l2": {"returns": 990 * (start + i), "tx_flooded": 1000 * (start + i)},
                 "vnet0": {"returns": start + i, "tx_flooded": 2000 * (start + i)}}
                for i in range(n)]
    early = state(steady(1, 3))
    # Started late: the kernel counters start at zero then too.
    late = state([{p: {k: v - first for k, v in c.items()} for p, c in snap.items()}
                  for first, snap in [(0, s) for s in steady(300, 3)]])
    want = ("loop_between_ports", ["l1", "l2"], ["l1", "l2"])
    assert loop_verdict(early) == want and loop_verdict(late) == want
    st = BridgeState()
    for i, snap in enumerate(steady(1, 8)):
        st.fold({p: {**zero(), **v} for p, v in snap.items()}, [], float(i))
        if i:
            assert loop_verdict(st) == want


def test_loop_evidence_round_trip_and_amplification():
    st = state([{}, {"l1": {"returns": 600, "tx_flooded": 600, "rx_broadcast": 602},
                     "l2": {"returns": 600, "tx_flooded": 600, "rx_broadcast": 600}}])
    st.round_trips = {"l1": [75] * 90 + [100] * 10, "l2": [75] * 100}
    st.first_loop_ns = 12_500_000_000
    (f,) = [f for f in diagnose(Inputs(bridge=bridge(), state=st, seconds=10.0, jiffy_ms=4.0,
                                       started_ns=10_000_000_000)) if f.type == "l2_loop"]
    ev = f.evidence
    assert ev["round_trip_ms"]["median"] == 300.0 and ev["round_trip_ms"]["p95"] == 400.0
    assert ev["copies_per_frame"] == 600.0        # 1200 copies of 2 frames seen new
    assert ev["first_seen_s"] == 2.5
    assert "round trip ~300 ms" in f.message


def test_stp_blocked_port_receiving_copies_is_not_a_loop():
    st = state([{}, {"l2": {"reentries": 500}}])
    assert run(st, states={"l2": "blocking"}) == []


def test_storm_by_peak_rate_with_duplicate_ratio():
    snaps = [{"vnet1": {}}, {"vnet1": {"rx_broadcast": 3000, "rx_arp": 3000, "arp_duplicates": 1500}},
             {"vnet1": {"rx_broadcast": 3010, "rx_arp": 3010, "arp_duplicates": 1500}}]
    (f,) = run(state(snaps))
    assert (f.type, f.ports) == ("storm", ["vnet1"])
    assert f.evidence["peak_arp_per_second"] == 3000.0 and f.evidence["broadcast_per_second"] == 10.0
    assert f.evidence["arp_duplicate_ratio"] == round(1500 / 3010, 3)


def test_not_forwarded_from_same_port_drops_mentions_flapping():
    row = DropRow("br-int", "lab", "t3o", "NOT_SPECIFIED", "br_handle_frame_finish", "x+0x1",
                  "bridge forwarding", "ipv4", {"ipv4": 12}, 12, 0.0, "...", same_port_mac="02:aa:00:00:00:01")
    moves = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 2, "port": "t3o", "prev_port": "vnet0"}]
    (f,) = run(state([{}, {}], moves), rows=[row])
    assert (f.type, f.ports, f.evidence["frames"]) == ("not_forwarded", ["t3o"], 12)
    assert "learned on vnet0, t3o (it moves)" in f.message


def neigh_entry(**kw):
    base = {"dev": "br-int", "ip": "10.0.0.1", "state": "reachable", "failed": 0, "incomplete": 0,
            "reachable": 0, "stale": 0, "lladdr_changes": 0, "lladdr": "02:00:00:00:00:01",
            "prev_lladdr": "00:00:00:00:00:00", "dropped": {}}
    return {**base, **kw}


def test_neighbour_findings_from_entries():
    st = state([{}, {}])
    st.neigh = [neigh_entry(ip="10.0.0.1", reachable=12, stale=11),            # churn
                neigh_entry(ip="10.0.0.2", lladdr_changes=2, prev_lladdr="02:00:00:00:00:09"),
                neigh_entry(ip="10.0.0.3", state="failed", failed=1, incomplete=1,
                            dropped={"NEIGH_FAILED": 4})]
    found = {f.type: f for f in run(st)}
    assert set(found) == {"arp_churn", "ip_conflict", "neigh_failed"}
    assert found["arp_churn"].evidence == {"ip": "10.0.0.1", "reachable": 12, "stale": 11}
    assert found["ip_conflict"].evidence["macs"] == ["02:00:00:00:00:09", "02:00:00:00:00:01"]
    assert found["neigh_failed"].evidence["dropped_by_reason"] == {"NEIGH_FAILED": 4}
    assert "4 NEIGH_* drops on br-int" in found["neigh_failed"].message


def test_arp_on_the_wire_findings():
    st = state([{}, {}])
    st.arp = [{"ip": "10.0.0.9", "requests": 5, "replies": 0, "conflicts": 0, "mac": "", "other_mac": "",
               "asker": "vnet0", "claimer": None, "other": None},
              {"ip": "10.0.0.8", "requests": 2, "replies": 0, "conflicts": 0, "mac": "", "other_mac": "",
               "asker": "vnet0", "claimer": None, "other": None}]
    (f,) = run(st)
    assert (f.type, f.ports, f.evidence["requests"]) == ("arp_unanswered", ["vnet0"], 5)


def test_mac_flap_stays_active_through_a_short_last_interval():
    """Seen: `active: false, 0/s` while the MAC moved 12 times a second to the
    end, because the 0.1 s tail folded at exit decided it."""
    st = BridgeState(interval=1.0)
    for i, t in enumerate((0.0, 1.0, 2.0, 3.0, 3.1)):
        count = 1 + 12 * min(i, 3)           # no move counted in the 0.1 s tail
        st.fold({"t3o": zero(), "vnet0": zero()},
                [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": count, "port": "t3o", "prev_port": "vnet0"}], t)
    (f,) = run(st)
    assert f.type == "mac_flap" and f.active is True
    assert f.evidence["moves_per_second"] == 10.9          # 12 moves over the last 1.1 s
    assert f.evidence["peak_moves_per_second"] == 12.0


def test_storm_of_arp_replies_points_at_the_broadcast_storm_elsewhere():
    """Seen: "broadcast storm on gw0: up to 0 broadcast/multicast frames/s, up
    to 55482 ARP/s": the gateway's unicast replies to a storm on another port."""
    snaps = [{"gw0": {}, "vnet1": {}},
             {"gw0": {"rx_arp": 55482, "arp_replies": 55482},
              "vnet1": {"rx_broadcast": 60000, "rx_arp": 60000, "arp_requests": 60000}},
             {"gw0": {"rx_arp": 110000, "arp_replies": 110000},
              "vnet1": {"rx_broadcast": 120000, "rx_arp": 120000, "arp_requests": 120000}}]
    found = {f.ports[0]: f for f in run(state(snaps))}
    assert sorted(found) == ["gw0", "vnet1"] and {f.type for f in found.values()} == {"storm"}
    gw, storm = found["gw0"], found["vnet1"]
    assert gw.severity == "warning" and gw.active
    assert "broadcast storm on gw0" not in gw.message and "0 broadcast" not in gw.message
    assert gw.message == ("gw0 sends up to 55482 ARP replies/s (now 54518/s): it answers an ARP storm "
                          "that enters elsewhere (see the storm on vnet1)")
    assert "stop the broadcast storm on vnet1" in gw.hint and "tcpdump -eni vnet1" in gw.hint
    assert gw.evidence["peak_arp_replies_per_second"] == 55482.0
    assert gw.evidence["arp_replies_per_second"] == 54518.0
    assert gw.evidence["storm_ports"] == ["vnet1"] and gw.evidence["kind"] == "answering_arp_storm"
    assert storm.severity == "critical" and storm.message.startswith("broadcast storm on vnet1")
    assert "up to 60000 ARP requests/s" in storm.message
    # replies alone, and no storm on any port: no broadcast storm claimed anywhere
    (alone,) = run(state([{"gw0": {}}, {"gw0": {"rx_arp": 500, "arp_replies": 500}}]))
    assert alone.message.startswith("gw0 sends up to 500 ARP replies/s") and alone.evidence["storm_ports"] == []
    assert "no port of br-int shows a broadcast storm" in alone.message


def test_storm_judged_on_arp_requests_not_replies():
    """ARP requests alone (under the broadcast threshold) make a storm; the
    replies of that port are in its evidence."""
    snaps = [{"vnet0": {}}, {"vnet0": {"rx_broadcast": 300, "rx_arp": 450, "arp_requests": 300,
                                       "arp_replies": 150}}]
    (f,) = run(state(snaps))
    assert f.message.startswith("broadcast storm on vnet0: up to 300 broadcast/multicast frames/s")
    assert "up to 300 ARP requests/s" in f.message
    assert f.evidence["peak_arp_replies_per_second"] == 150.0 and f.severity == "warning"


def _unanswered_target(ip="198.51.100.10"):
    return {"ip": ip, "requests": 40, "replies": 0, "conflicts": 0, "mac": "", "other_mac": "",
            "asker": "vnet0", "claimer": None, "other": None}


def test_arp_unanswered_when_the_bridge_suppressed_the_requests():
    """Seen: "nothing behind the bridge answers for 198.51.100.10" while the VM
    was there: the requests were suppressed (not_forwarded) on the way."""
    row = DropRow("br-int", "lab", "t3o", "NOT_SPECIFIED", "br_handle_frame_finish", "x+0x1",
                  "bridge forwarding", "arp", {"arp": 12}, 12, 0.0, "...", same_port_mac="02:aa:00:00:00:01")
    st = state([{}, {}])
    st.arp = [_unanswered_target()]
    found = {f.type: f for f in run(st, rows=[row])}
    f = found["arp_unanswered"]
    assert "nothing behind the bridge answers" not in f.message
    assert f.message == ("40 ARP requests for 198.51.100.10 (latest from vnet0) got no reply on br-int, but the "
                         "requests may have been suppressed or lost on the way (not_forwarded on t3o): "
                         "that is not proof that nothing answers for 198.51.100.10")
    assert f.hint.startswith("deal with the not_forwarded finding on t3o first")
    assert f.evidence["maybe_suppressed_by"] == [{"type": "not_forwarded", "ports": ["t3o"]}]
    # a storm during the run counts too
    st2 = state([{"vnet1": {}}, {"vnet1": {"rx_broadcast": 3000}}])
    st2.arp = [_unanswered_target()]
    f2 = {f.type: f for f in run(st2)}["arp_unanswered"]
    assert "(storm on vnet1)" in f2.message and "deal with the storm finding on vnet1" in f2.hint
    # without such a finding the plain conclusion stands
    st3 = state([{}, {}])
    st3.arp = [_unanswered_target()]
    (f3,) = run(st3)
    assert "nothing behind the bridge answers for 198.51.100.10" in f3.message
    assert "maybe_suppressed_by" not in f3.evidence


def test_mac_flap_names_where_the_mac_lives_and_where_it_is_wrongly_learned():
    moves = [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 40, "port": "t3o", "prev_port": "vnet0"}]
    st = state([{}, {"t3o": {"returns": 300, "tx_flooded": 310}, "vnet0": {"tx_flooded": 310}}], moves)
    (f,) = [f for f in run(st) if f.type == "mac_flap"]
    assert f.evidence["lives_on"] == "vnet0" and f.evidence["wrongly_learned_on"] == ["t3o"]
    assert "lives behind vnet0 and is wrongly learned on t3o" in f.message
    # Without a loop port among them, nothing is claimed.
    (g,) = [f for f in run(state([{}, {}], moves)) if f.type == "mac_flap"]
    assert g.evidence["lives_on"] is None and "lives behind" not in g.message


def test_one_way_loop_through_this_bridge_versus_a_loop_beyond_a_port():
    """Copies come in only by l1 and are never sent back out there. Where the
    bridge floods them out of a port that leads on to another switch (a VPN
    tap, a veth whose other end is a bridge's port) and nothing comes back by
    it, the loop runs one way through this bridge; where the other ports lead
    only to guests, the loop lies beyond l1."""
    counts = {"l1": {"reentries": 2000, "returns": 10}, "t3o": {"tx_flooded": 2100},
              "vnet0": {"tx_flooded": 2100}, "l2": {"tx_flooded": 2100}}

    def verdict(labels=None, onward=None):
        found = diagnose(Inputs(bridge=bridge(), state=state([{}, counts]), seconds=10.0,
                                labels=labels or {}, onward=onward or {}))
        (f,) = [f for f in found if f.type == "l2_loop"]
        return f.evidence["kind"], f.ports, f.culprit_ports, f.evidence.get("one_way")

    assert verdict() == ("loop_beyond_port", ["l1"], [], None)
    assert verdict(labels={"t3o": "vpn tincd", "vnet0": "vm web01"}) == (
        "loop_between_ports", ["l1", "t3o"], ["l1", "t3o"], {"out": ["t3o"], "in": "l1"})
    assert verdict(onward={"l2": True, "vnet0": False}) == (
        "loop_between_ports", ["l1", "l2"], ["l1", "l2"], {"out": ["l2"], "in": "l1"})
    # A port the storm hardly reaches is not where it goes out.
    counts["l2"]["tx_flooded"] = 100
    assert verdict(onward={"l2": True})[0] == "loop_beyond_port"


def test_a_switch_port_with_a_weak_way_back_is_on_the_loop():
    """tinc carries one direction of the loop much better than the other: the
    direct link gets back what the bridge sends, the VPN tap only a little.
    A port that leads on to another switch and gets copies back is on the
    loop; a guest's port with the same few copies is not."""
    counts = {"l1": {"returns": 2000, "reentries": 500, "tx_flooded": 300},
              "t3o": {"returns": 100, "tx_flooded": 2500}, "vnet0": {"returns": 100, "tx_flooded": 2600}}

    def verdict(labels):
        found = diagnose(Inputs(bridge=bridge(), state=state([{}, counts]), seconds=10.0, labels=labels))
        (f,) = [f for f in found if f.type == "l2_loop"]
        return f.evidence["kind"], f.ports

    assert verdict({"t3o": "vpn tincd", "vnet0": "vm web01"}) == ("loop_between_ports", ["l1", "t3o"])
    assert verdict({"vnet0": "vm web01"}) == ("reflecting_port", ["l1"])


# -- IPv6 neighbour discovery on the wire (ndp_targets rows, hooks.ports.ndp_named()) --

def ndp_target(ip, **kw):
    base = {"ip": ip, "solicits": 0, "dad_probes": 0, "adverts": 0, "solicited": 0, "overrides": 0,
            "routers": 0, "conflicts": 0, "elsewhere": 0, "dad_answered": 0, "copies": 0,
            "mac": "00:00:00:00:00:00", "other_mac": "00:00:00:00:00:00",
            "prober_mac": "00:00:00:00:00:00", "answer_mac": "00:00:00:00:00:00",
            "asker": None, "claimer": None, "other": None, "echo": None, "prober": None, "answerer": None}
    return {**base, **kw}


def ndp_state(*snapshots, counters=None):
    """Fold ndp_targets snapshots one second apart (port counters fixed)."""
    st = BridgeState(interval=1.0)
    for i, rows in enumerate(snapshots):
        st.fold({p: {**zero(), **v} for p, v in (counters or {"vnet0": {}}).items()}, [], float(i),
                ndp=list(rows))
    return st


def test_ndp_unanswered_counts_solicitations_not_dad_probes():
    gone = ndp_target("2001:db8::99", solicits=3, asker="vnet0")
    probing = ndp_target("fe80::2b7:ff:fe00:1", dad_probes=5, prober="vnet0")     # DAD unanswered: success
    answered = ndp_target("2001:db8::1", solicits=9, adverts=9, asker="vnet0", claimer="vnet1")
    two = ndp_target("2001:db8::98", solicits=2, asker="vnet0")                   # under the minimum
    st = ndp_state([dict(gone, solicits=1), probing, answered, two], [gone, probing, answered, two])
    (f,) = run(st)
    assert (f.type, f.ports, f.severity) == ("ndp_unanswered", ["vnet0"], "warning")
    assert f.message == ("3 IPv6 neighbour solicitations for 2001:db8::99 (latest from vnet0) got no "
                         "advertisement on br-int: nothing behind the bridge answers for 2001:db8::99")
    assert f.evidence == {"ip": "2001:db8::99", "solicitations": 3, "advertisements": 0, "copies": 0}
    assert "tcpdump -eni vnet0 icmp6" in f.hint and "INCOMPLETE -> FAILED" in f.hint
    assert f.active                                   # 2 more in the last second
    (quiet,) = run(ndp_state([gone], [gone], [gone]))
    assert not quiet.active                           # none over the last window


def test_ndp_unanswered_when_a_storm_may_have_lost_the_solicitations():
    gone = ndp_target("2001:db8::99", solicits=40, asker="vnet0")
    st = ndp_state([gone], [gone], counters={"vnet0": {}, "vnet1": {}})
    st.fold({"vnet0": zero(), "vnet1": {**zero(), "rx_multicast": 3000}}, [], 2.0, ndp=[gone])
    f = {f.type: f for f in run(st)}["ndp_unanswered"]
    assert f.message == ("40 IPv6 neighbour solicitations for 2001:db8::99 (latest from vnet0) got no "
                         "advertisement on br-int, but the solicitations may have been suppressed or lost "
                         "on the way (storm on vnet1): that is not proof that nothing answers for 2001:db8::99")
    assert f.hint.startswith("deal with the storm finding on vnet1 first; if solicitations for 2001:db8::99")
    assert f.evidence["maybe_suppressed_by"] == [{"type": "storm", "ports": ["vnet1"]}]


def test_ipv6_address_advertised_by_two_macs_names_both_ports():
    held = ndp_target("2001:db8::50", adverts=2, solicited=2, overrides=2, conflicts=1,
                      mac="02:b7:00:00:00:01", claimer="vnet0", other_mac="02:b7:00:00:00:02", other="vnet1")
    (f,) = run(ndp_state([held], [held]))
    assert (f.type, f.ports, f.severity) == ("ip_conflict", ["vnet0", "vnet1"], "critical")
    assert f.message == ("2001:db8::50 is advertised by two MACs: 02:b7:00:00:00:01 (vnet0) and "
                         "02:b7:00:00:00:02 (vnet1), 1 conflicting IPv6 advertisements")
    assert f.evidence["kind"] == "advertised_by_two_macs" and f.evidence["overrides"] == 2
    assert "nodad" in f.hint
    assert not f.active                               # no new conflict over the last window


def test_dad_probe_answered_names_prober_and_holder():
    taken = ndp_target("2001:db8::50", dad_probes=1, adverts=1, overrides=1, dad_answered=1,
                       mac="02:b7:00:00:00:01", claimer="vnet0", prober_mac="02:b7:00:00:00:02",
                       prober="vnet1", answer_mac="02:b7:00:00:00:01", answerer="vnet0")
    (f,) = run(ndp_state([], [taken]))
    assert (f.type, f.ports, f.severity, f.active) == ("ip_conflict", ["vnet1", "vnet0"], "warning", True)
    assert f.message == ("the duplicate address detection probe for 2001:db8::50 from 02:b7:00:00:00:02 "
                         "(vnet1) was answered by 02:b7:00:00:00:01 (vnet0): 2001:db8::50 is already in use "
                         "behind vnet0, so the host behind vnet1 leaves it unconfigured (`dadfailed`)")
    assert f.evidence == {"kind": "dad_answered", "ip": "2001:db8::50",
                          "macs": ["02:b7:00:00:00:02", "02:b7:00:00:00:01"],
                          "prober_mac": "02:b7:00:00:00:02", "answer_mac": "02:b7:00:00:00:01",
                          "dad_probes": 1, "answers": 1}


def test_router_advertisements_from_two_macs_and_reflected():
    r1 = ndp_target("fe80::1", routers=3, mac="02:b7:00:00:00:01", claimer="vnet1", copies=3, echo="t3o")
    r2 = ndp_target("fe80::2", routers=2, mac="02:b7:00:00:00:02", claimer="vnet0")
    found = {f.evidence["kind"]: f for f in run(ndp_state([r1, r2], [r1, r2]))}
    several, reflected = found["several_routers"], found["reflected_ra"]
    assert (several.type, several.ports, several.severity) == ("rogue_ra", ["vnet0", "vnet1"], "critical")
    assert several.message == ("router advertisements on br-int come from 2 MACs: 02:b7:00:00:00:02 (vnet0, "
                               "from fe80::2), 02:b7:00:00:00:01 (vnet1, from fe80::1); guests take each as a "
                               "default router, with its prefixes")
    assert "RA guard, RFC 6105" in several.hint and "tcpdump -eni vnet0 'icmp6 and ip6[40] == 134'" in several.hint
    assert (reflected.type, reflected.ports, reflected.severity) == ("rogue_ra", ["t3o"], "warning")
    assert reflected.message.startswith("router advertisements from 02:b7:00:00:00:01 (fe80::1), the router "
                                        "behind vnet1, also enter br-int through t3o: 3 came back in")
    assert reflected.evidence["router_port"] == "vnet1" and reflected.evidence["came_back"] == 3
    # One router, never back elsewhere: nothing to say.
    assert run(ndp_state([r2], [r2])) == []
    # One link-local address advertised by two MACs: two routers, and a conflict.
    shared = ndp_target("fe80::1", routers=4, conflicts=2, mac="02:b7:00:00:00:01", claimer="vnet1",
                        other_mac="02:b7:00:00:00:02", other="vnet0")
    assert types(run(ndp_state([shared]))) == [("ip_conflict", ("vnet1", "vnet0")),
                                               ("rogue_ra", ("vnet0", "vnet1"))]


def test_storm_of_unicast_solicitations_is_not_called_a_broadcast_storm():
    """Solicitations to a unicast MAC: no broadcast/multicast figure at all;
    the headline names the NDP storm, never "broadcast storm at 0/s"."""
    snaps = [{"vnet0": {}}, {"vnet0": {"ndp_ns": 4000}}, {"vnet0": {"ndp_ns": 4000}}]
    (f,) = run(state(snaps))
    assert (f.type, f.ports, f.severity) == ("storm", ["vnet0"], "critical")
    assert f.message == ("IPv6 neighbour solicitation storm on vnet0: up to 4000 IPv6 neighbour "
                         "solicitations/s (now 0/s)")
    assert f.evidence["kind"] == "ndp_storm" and not f.active
    assert "ip6[40] == 135" in f.hint


def test_multicast_solicitations_make_a_broadcast_storm_with_ndp_figures():
    snaps = [{"vnet0": {}}, {"vnet0": {"rx_multicast": 3000, "ndp_ns": 3000, "ndp_duplicates": 1500}}]
    (f,) = run(state(snaps))
    assert f.message == ("broadcast storm on vnet0: up to 3000 broadcast/multicast frames/s (now 3000/s), "
                         "up to 3000 IPv6 neighbour solicitations/s (now 3000/s); 50% of NDP frames are "
                         "copies coming back")
    assert f.evidence["ndp_duplicate_ratio"] == 0.5 and f.evidence["peak_ndp_solicitations_per_second"] == 3000


def test_storm_of_advertisements_answers_a_solicitation_storm_elsewhere():
    snaps = [{"gw0": {}, "vnet1": {}},
             {"gw0": {"ndp_na": 900}, "vnet1": {"rx_multicast": 1000, "ndp_ns": 1000}}]
    found = {f.ports[0]: f for f in run(state(snaps))}
    gw = found["gw0"]
    assert gw.message == ("gw0 sends up to 900 IPv6 neighbour advertisements/s (now 900/s): it answers a "
                          "solicitation storm that enters elsewhere (see the storm on vnet1)")
    assert gw.evidence["kind"] == "answering_ndp_storm" and gw.severity == "warning"
    assert "stop the storm on vnet1" in gw.hint and "broadcast storm" not in gw.hint


def test_arp_findings_are_active_only_while_their_counts_move():
    """arp_unanswered and the IPv4 ip_conflict follow the requests and claims
    over the rate window, as the NDP findings do: a gateway asked for once,
    long ago, is history, not an ongoing fault."""
    st = BridgeState()
    conflict = {"ip": "10.0.0.7", "requests": 0, "replies": 2, "conflicts": 0, "mac": "02:00:00:00:00:07",
                "other_mac": "02:00:00:00:00:08", "asker": None, "claimer": "vnet0", "other": "vnet1"}
    asked = _unanswered_target()
    for i, (n, c) in enumerate(((10, 0), (20, 1), (40, 3))):    # still asking, still conflicting
        st.fold({}, [], float(i), arp=[{**asked, "requests": n}, {**conflict, "conflicts": c}])
    found = {f.type: f for f in run(st)}
    assert found["arp_unanswered"].active and found["ip_conflict"].active
    for i in (3, 4, 5):                                              # both stopped
        st.fold({}, [], float(i), arp=[{**asked, "requests": 40}, {**conflict, "conflicts": 3}])
    found = {f.type: f for f in run(st)}
    assert not found["arp_unanswered"].active and not found["ip_conflict"].active
    assert found["ip_conflict"].ports == ["vnet0", "vnet1"]
