"""Named, explained drop rows and their 80-column table, from fixed state."""

from pathlib import Path
from types import SimpleNamespace

from tracer.aggregate import DropState
from tracer.kernel.kallsyms import Kallsyms
from tracer.kernel.reasons import parse_kfree_skb_format
from tracer.monitor import Monitor
from tracer.output.table import drops_table
from tracer.report import drop_rows
from tracer.topology import Bridge, FdbEntry, Netns, Port

DATA = Path(__file__).parent / "data"
REASONS = parse_kfree_skb_format((DATA / "kfree_skb_format" / "6.18.txt").read_text())
KALLSYMS = Kallsyms.parse(
    "ffffffff82150000 T br_handle_frame\n"
    "ffffffff82151000 T br_handle_frame_finish\n"
    "ffffffff82152000 T br_dev_queue_push_xmit\n"
    "ffffffff82153000 T tun_net_xmit\n"
    "ffffffff82154000 T nf_hook_slow\n"
    "ffffffff82155000 T ip6_mc_input\n")
HANDLE, FINISH, PUSH, TUN, NF = (0xFFFFFFFF82150000 + 0x1000 * i + 0x40 for i in range(5))
NETNS = Netns("lab", "/run/netns/lab", 4026532000)


def port(ifindex, name, kind="veth", stp="forwarding", mtu=1500, txqlen=1000):
    return Port(ifindex, name, kind, f"02:00:00:00:00:{ifindex:02x}", mtu, "UP", txqlen, stp)


BRIDGE = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {
    3: port(3, "vnet0"), 4: port(4, "vnet1", stp="listening"), 5: port(5, "t3o", kind="tun", txqlen=10),
    6: port(6, "vnet2", mtu=1000)})
FDB = [FdbEntry("02:aa:00:00:00:01", 3, 0, False), FdbEntry("02:00:00:00:00:02", 3, 0, True)]


def rows_for(counts, samples=()):
    s = DropState()
    for rec in samples:
        s.add_sample(rec)
    s.fold_counts(counts, 1.0)
    return {(r.port, r.reason): r for r in drop_rows(s.groups(), BRIDGE, FDB, REASONS, KALLSYMS, {})}


def test_same_port_unicast_names_mac_and_port():
    nspec = REASONS.value("NOT_SPECIFIED")
    rows = rows_for({(3, nspec, FINISH, 0x0800): 50},
                    [{"ifindex": 3, "reason": nspec, "location": FINISH,
                      "dst_mac": "02:aa:00:00:00:01", "src_mac": "02:bb:00:00:00:01"}])
    r = rows[("vnet0", "NOT_SPECIFIED")]
    assert r.count == 50 and r.function == "br_handle_frame_finish"
    assert r.location == "br_handle_frame_finish+0x40" and r.stage == "bridge forwarding"
    assert "02:aa:00:00:00:01 is learned on vnet0" in r.explanation
    assert r.record()["kind"] == "drop" and r.record()["proto"] == "ipv4"


def test_same_port_rule_needs_evidence():
    """A NOT_SPECIFIED free without a matching FDB entry is not blamed on same-port."""
    nspec = REASONS.value("NOT_SPECIFIED")
    rows = rows_for({(3, nspec, FINISH, 0x0800): 5},
                    [{"ifindex": 3, "reason": nspec, "location": FINISH, "dst_mac": "02:cc:00:00:00:09"}])
    assert rows[("vnet0", "NOT_SPECIFIED")].explanation == ""


def test_reason_specific_explanations():
    stp, nf = REASONS.value("BRIDGE_INGRESS_STP_STATE"), REASONS.value("NETFILTER_DROP")
    full, big = REASONS.value("FULL_RING"), REASONS.value("PKT_TOO_BIG")
    rows = rows_for({(4, stp, HANDLE, 0x0806): 3, (3, nf, NF, 0x0800): 4,
                     (5, full, TUN, 0x0800): 40, (6, big, PUSH, 0x0800): 2})
    assert "STP state listening" in rows[("vnet1", "BRIDGE_INGRESS_STP_STATE")].explanation
    assert "nft list ruleset" in rows[("vnet0", "NETFILTER_DROP")].explanation
    assert "ip netns exec lab" in rows[("vnet0", "NETFILTER_DROP")].explanation
    assert "not reading" in rows[("t3o", "FULL_RING")].explanation
    assert "10 frames" in rows[("t3o", "FULL_RING")].explanation
    assert "MTU 1000" in rows[("vnet2", "PKT_TOO_BIG")].explanation


def test_unknown_reason_value_keeps_kernel_number():
    rows = rows_for({(3, 4242, HANDLE, 0x0800): 1})
    assert ("vnet0", "UNKNOWN_4242") in rows


def test_departed_port_keeps_its_name():
    s = DropState()
    s.fold_counts({(9, 2, HANDLE, 0x0800): 1}, 1.0)
    (row,) = drop_rows(s.groups(), BRIDGE, FDB, REASONS, KALLSYMS, {9: "vnet9"})
    assert row.port == "vnet9"


def test_table_fits_80_columns_and_numbers_notes():
    stp, full = REASONS.value("BRIDGE_INGRESS_STP_STATE"), REASONS.value("FULL_RING")
    rows = list(rows_for({(4, stp, HANDLE, 0x0806): 3, (5, full, TUN, 0x0800): 40}).values())
    lines = drops_table(sorted(rows, key=lambda r: -r.count), width=80)
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["PORT", "REASON", "FUNCTION", "PROTO", "COUNT", "/s"]
    assert lines[2].split()[0] == "t3o" and lines[2].split()[-2] == "40"
    assert any(line.startswith("[1] ") for line in lines)
    assert any(line.startswith("[2] ") for line in lines)


def test_empty_table_says_so():
    assert drops_table([]) == ["no drops on the bridge or its ports"]


def test_unicast_to_a_port_that_is_not_forwarding():
    """A tap without a reader is NO-CARRIER: frames for MACs behind it are freed."""
    nspec = REASONS.value("NOT_SPECIFIED")
    down = Port(7, "vnet7", "tun", "02:00:00:00:00:07", 1500, "DOWN", 1000, "disabled")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 7: down})
    fdb = [FdbEntry("02:dd:00:00:00:07", 7, 0, False)]
    s = DropState()
    s.add_sample({"ifindex": 3, "reason": nspec, "location": FINISH, "dst_mac": "02:dd:00:00:00:07"})
    s.fold_counts({(3, nspec, FINISH, 0x0800): 5}, 1.0)
    (row,) = drop_rows(s.groups(), bridge, fdb, REASONS, KALLSYMS, {})
    assert "02:dd:00:00:00:07 is learned on vnet7, which is not forwarding" in row.explanation
    assert "no reader" in row.explanation


def test_egress_mtu_not_specified_at_push_xmit():
    """On 6.18 the egress MTU free carries NOT_SPECIFIED; the function is the clue."""
    nspec = REASONS.value("NOT_SPECIFIED")
    rows = rows_for({(6, nspec, PUSH, 0x88B5): 4},
                    [{"ifindex": 6, "reason": nspec, "location": PUSH, "wire_len": 1400}])
    r = rows[("vnet2", "NOT_SPECIFIED")]
    assert r.stage == "bridge egress"
    assert "1400-byte frames are larger than vnet2 can carry (MTU 1000)" in r.explanation


def test_wide_table_shows_offsets_and_clone_suffixes_are_stripped():
    ks = Kallsyms.parse("ffffffff82160000 t __netif_receive_skb_core.constprop.0\n")
    s = DropState()
    s.fold_counts({(2, REASONS.value("UNHANDLED_PROTO"), 0xFFFFFFFF82160010, 0x88B5): 2}, 1.0)
    (row,) = drop_rows(s.groups(), BRIDGE, FDB, REASONS, ks, {})
    assert row.function == "__netif_receive_skb_core" and row.port == "br-int"
    assert row.location == "__netif_receive_skb_core.constprop.0+0x10"
    assert "harmless" in row.explanation
    wide = drops_table([row], width=120)
    assert wide[0].split()[2] == "LOCATION" and "constprop.0+0x10" in wide[2]
    assert all(len(line) <= 80 for line in drops_table([row], width=80))


def test_61_style_not_specified_drops_are_still_explained():
    """6.1 has no bridge drop reasons: the port state and the sampled source
    MAC explain NOT_SPECIFIED frees in br_handle_frame*()."""
    nspec = REASONS.value("NOT_SPECIFIED")
    learning = Port(8, "vnet8", "veth", "02:00:00:00:00:08", 1500, "UP", 1000, "learning")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 8: learning})
    s = DropState()
    s.add_sample({"ifindex": 3, "reason": nspec, "location": HANDLE, "src_mac": "01:00:5e:00:00:01"})
    s.fold_counts({(8, nspec, FINISH, 0x0800): 4, (3, nspec, HANDLE, 0x0800): 2}, 1.0)
    rows = {r.port: r for r in drop_rows(s.groups(), bridge, [], REASONS, KALLSYMS, {})}
    assert "STP state learning" in rows["vnet8"].explanation
    assert "01:00:5e:00:00:01" in rows["vnet0"].explanation


def _unicast_drop_rows(bridge, fdb, dst, moved=None, fdb_at=None):
    nspec = REASONS.value("NOT_SPECIFIED")
    s = DropState()
    s.add_sample({"ifindex": 3, "reason": nspec, "location": FINISH, "dst_mac": dst})
    s.fold_counts({(3, nspec, FINISH, 0x0800): 5}, 1.0)
    (row,) = drop_rows(s.groups(), bridge, fdb, REASONS, KALLSYMS, {}, moved=moved, fdb_at=fdb_at)
    return row


def test_a_tap_in_operstate_unknown_has_a_reader():
    """A tap is UNKNOWN while its reader (tincd, a VM) has it open: that is not
    "no reader". Only DOWN (no carrier) means the reader is gone."""
    tap = Port(5, "t3o", "tun", "02:00:00:00:00:05", 1500, "UNKNOWN", 500, "forwarding")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 5: tap})
    fdb = [FdbEntry("02:dd:00:00:00:05", 5, 0, False)]
    row = _unicast_drop_rows(bridge, fdb, "02:dd:00:00:00:05")
    assert "no reader" not in row.explanation and "not forwarding" not in row.explanation
    # the same tap without its reader: DOWN
    gone = Port(5, "t3o", "tun", "02:00:00:00:00:05", 1500, "DOWN", 500, "forwarding")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 5: gone})
    row = _unicast_drop_rows(bridge, fdb, "02:dd:00:00:00:05")
    assert "learned on t3o, which is not forwarding (link down) (a tap with no reader" in row.explanation
    # a veth whose link is down is not a tap
    veth = Port(5, "l1", "veth", "02:00:00:00:00:05", 1500, "LOWERLAYERDOWN", 1000, "forwarding")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 5: veth})
    row = _unicast_drop_rows(bridge, fdb, "02:dd:00:00:00:05")
    assert "(link lowerlayerdown): the bridge cannot deliver" in row.explanation
    assert "tap" not in row.explanation


def test_an_fdb_read_after_the_mac_moved_may_be_stale():
    """Seen: a same-port drop on a direct link explained from an FDB dumped
    after the MAC had moved on (to t3o)."""
    tap = Port(5, "t3o", "tun", "02:00:00:00:00:05", 1500, "UNKNOWN", 500, "forwarding")
    bridge = Bridge(2, "br-int", "02:00:00:00:00:02", 1500, NETNS, {3: port(3, "vnet0"), 5: tap})
    mac = "02:dd:00:00:00:05"
    moved = {mac: {"ports": ["vnet0", "t3o"], "moved_at": 11.0}}
    row = _unicast_drop_rows(bridge, [FdbEntry(mac, 5, 0, False)], mac, moved=moved, fdb_at=12.0)
    assert row.explanation == (
        "destination 02:dd:00:00:00:05 moves between vnet0, t3o, vnet0 among them: while it is learned "
        "on vnet0, the ingress port, the bridge will not send a frame back out of the port it came in on "
        "(look for a looped or reflecting device) (the FDB was read at +12.0 s, after 02:dd:00:00:00:05 "
        "moved between vnet0, t3o; it may be stale)")
    # the same-port explanation carries the note too
    row = _unicast_drop_rows(bridge, [FdbEntry(mac, 3, 0, False)], mac, moved=moved, fdb_at=12.0)
    assert "02:dd:00:00:00:05 is learned on vnet0, the ingress port" in row.explanation
    assert row.explanation.endswith("(the FDB was read at +12.0 s, after 02:dd:00:00:00:05 moved between "
                                    "vnet0, t3o; it may be stale)")
    # moves seen after the dump
    row = _unicast_drop_rows(bridge, [FdbEntry(mac, 3, 0, False)], mac,
                             moved={mac: {"ports": ["vnet0", "t3o"], "moved_at": 14.0}}, fdb_at=12.0)
    assert row.explanation.endswith("(the FDB was read at +12.0 s, while 02:dd:00:00:00:05 moves between "
                                    "vnet0, t3o, seen moving until +14.0 s; it may be stale)")
    # a MAC that never moved: no note
    row = _unicast_drop_rows(bridge, [FdbEntry(mac, 3, 0, False)], mac, fdb_at=12.0)
    assert "stale" not in row.explanation


def test_monitor_hands_moved_macs_to_the_explanations():
    run = SimpleNamespace(cfg=SimpleNamespace(interval=1.0), started=100.0,
                          maps=SimpleNamespace(on_events=lambda callback: None))
    m = Monitor(run)
    assert m.bridge_state.configured_interval == 1.0
    for t, count, where in ((101.0, 1, "vnet0"), (102.0, 4, "t3o"), (103.0, 4, "t3o")):
        m.bridge_state.fold({}, [{"mac": "02:dd:00:00:00:05", "vlan": 0, "count": count, "port": where,
                                  "prev_port": "vnet0" if count > 1 else None},
                                 {"mac": "02:ee:00:00:00:01", "vlan": 0, "count": 1, "port": "vnet0",
                                  "prev_port": None}], t)
    assert m.moved_macs() == {"02:dd:00:00:00:05": {"ports": ["vnet0", "t3o"], "moved_at": 2.0}}
