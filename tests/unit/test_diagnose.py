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
