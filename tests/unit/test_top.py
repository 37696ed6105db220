"""`brtrace top` screens from a fixed state: header, sort orders, highlighted
findings, drill-down, keys, and every size from 200x50 down to one line."""

from dataclasses import replace

import pytest

from tracer.aggregate import BridgeState
from tracer.diagnose import Finding
from tracer.output.top import (DropLine, FindingLine, PortStats, TopState, apply_key, build_state,
                               duration, line_style, num, plain, render, total, with_data)
from tracer.report import DropRow

EXPL = ("the FDB places the destination behind the ingress port, so the bridge does not "
        "send the frame back out of it")

PORTS = (
    PortStats("br-int", rx_pps=12, tx_pps=0, bcast_pps=12, info="the bridge device itself"),
    PortStats("vnet0", rx_pps=100, tx_pps=30, bcast_pps=20, arp_pps=10, info="veth, forwarding, up, mtu 1500",
              counters=(("rx_packets", 1200, 100.0, 140.0), ("tx_packets", 300, 30.0, 30.0))),
    PortStats("t3o", rx_pps=60, tx_pps=60, bcast_pps=50, drops_pps=9, top_reason="NOT_SPECIFIED",
              moves_pps=4, echoes_pps=12, info="tun, forwarding, up, mtu 1500",
              counters=(("rx_packets", 120, 60.0, 60.0), ("tx_packets", 120, 60.0, 60.0),
                        ("rx_broadcast", 100, 50.0, 50.0), ("echoes", 24, 12.0, 12.0),
                        ("returns", 110, 55.0, 55.0)),
              drops=(DropLine("NOT_SPECIFIED", "br_handle_frame_finish", "br_handle_frame_finish+0x380",
                              18, 9.0, EXPL),
                     DropLine("FULL_RING", "tun_net_xmit", "tun_net_xmit+0x2b1", 4, 0.0))),
    PortStats("vnet1", rx_pps=25, tx_pps=150, bcast_pps=3, drops_pps=150,
              top_reason="BRIDGE_INGRESS_STP_STATE", info="veth, listening, up, mtu 1500"),
)
FINDINGS = (
    FindingLine("own_address_echo", "critical", ("t3o",),
                "24 frames entered br-int on t3o with one of the bridge's own MACs as source"),
    FindingLine("l2_loop", "critical", ("t3o",), "t3o reflects: 110 flooded frames came back"),
    FindingLine("mac_flap", "warning", ("vnet0", "t3o"),
                "MAC 02:aa:00:00:00:01 moved 8 times between vnet0 and t3o"),
)
STATE = TopState(bridge="br-int", netns="lab", mode="tracepoint", elapsed=125.4, interval=2.0,
                 events_lost=3, ports=PORTS, findings=FINDINGS)
HEADER = "brtrace top: br-int (netns lab)  tracepoint  up 2m05s  lost 3  missing none"

SCREEN_80x24 = [
    HEADER,
    "  PORT    RX/s*   TX/s  BCAST/s  ARP/s MOVE/s ECHO/s  DROP/s  TOP DROP REASON",
    ">!vnet0     100     30       20     10      0      0       0",
    " !t3o        60     60       50      0    4.0     12     9.0  NOT_SPECIFIED",
    "  vnet1      25    150      3.0      0      0      0     150  BRIDGE_INGRESS_ST~",
    "  br-int     12      0       12      0      0      0       0",
    "",
    "findings (3):",
    "!! echo t3o: 24 frames entered br-int on t3o with one of the bridge's own MACs ~",
    "!! loop t3o: t3o reflects: 110 flooded frames came back",
    "!! flapping (warning) vnet0,t3o: MAC 02:aa:00:00:00:01 moved 8 times between vn~",
] + [""] * 12 + [
    "q quit  s sort (rx pps)  p pause  j/k select  d/Enter drill",
]


def names(lines):
    """Port names of the table rows of a rendered screen, top to bottom."""
    return [line[2:].split()[0] for line in lines[2:] if line[:1] in " >" and line[1:2] in " !"
            and line[2:3] not in (" ", "")]


def fits(lines, width, height):
    return len(lines) <= height and all(len(line) <= width for line in lines)


# -- the main screen -----------------------------------------------------------------

def test_80x24_screen_is_pinned():
    assert render(STATE, 80, 24) == SCREEN_80x24


def test_200x50_screen():
    lines = render(STATE, 200, 50)
    assert len(lines) == 50 and fits(lines, 200, 50)
    assert lines[0] == HEADER
    assert lines[4] == "  vnet1      25    150      3.0      0      0      0     150  BRIDGE_INGRESS_STP_STATE"
    assert ("!! echo t3o: 24 frames entered br-int on t3o with one of the bridge's own MACs as source"
            in lines)
    assert "!! flapping (warning) vnet0,t3o: MAC 02:aa:00:00:00:01 moved 8 times between vnet0 and t3o" in lines
    assert lines[-1] == SCREEN_80x24[-1]
    assert not any(line.endswith("~") for line in lines)


def test_header_variants():
    s = replace(STATE, netns="", mode="", probes_missing=("forward", "fdb"), paused=True, elapsed=7300)
    assert render(s, 100, 10)[0] == ("brtrace top: br-int  no forward hook  up 2h01m  lost 3  "
                                     "missing forward,fdb  PAUSED")
    assert render(replace(STATE, mode="kprobe"), 100, 10)[0] == HEADER.replace("tracepoint", "kprobe")
    assert render(s, 100, 10)[-1] == "q quit  s sort (rx pps)  p resume  j/k select  d/Enter drill"


@pytest.mark.parametrize("key, order, title", [
    ("rx", ["vnet0", "t3o", "vnet1", "br-int"], "RX/s*"),
    ("drops", ["vnet1", "t3o", "br-int", "vnet0"], "DROP/s*"),
    ("bcast", ["t3o", "vnet0", "br-int", "vnet1"], "BCAST/s*"),
    ("name", ["br-int", "t3o", "vnet0", "vnet1"], "PORT*"),
])
def test_row_order_for_each_sort(key, order, title):
    for width, height in ((80, 24), (200, 50)):
        lines = render(replace(STATE, sort_key=key), width, height)
        assert names(lines) == order
        assert title in lines[1] and lines[1].count("*") == 1


def test_s_cycles_the_sort_columns():
    keys = [STATE.sort_key]
    s = STATE
    for _ in range(4):
        s = apply_key(s, "s")
        keys.append(s.sort_key)
    assert keys == ["rx", "drops", "bcast", "name", "rx"]
    assert render(replace(STATE, sort_key="bcast"), 80, 24)[-1].startswith("q quit  s sort (broadcast/s)")


def test_findings_are_highlighted_and_their_ports_flagged():
    lines = render(STATE, 80, 24)
    styles = {i: line_style(lines, i) for i in range(len(lines))}
    found = [lines[i] for i, st in styles.items() if st == "finding"]
    assert [f.split(":")[0] for f in found] == ["!! echo t3o", "!! loop t3o", "!! flapping (warning) vnet0,t3o"]
    assert styles[0] == "header" and styles[23] == "footer"
    assert styles[2] == "selected flagged"          # vnet0: selected (first row) and named by the flap
    assert styles[3] == "flagged" and lines[3].startswith(" !t3o")
    assert styles[4] == "" and styles[5] == ""       # vnet1 and br-int: nothing found there


def test_no_findings_says_so_without_highlight():
    lines = render(replace(STATE, findings=()), 80, 24)
    assert "  no loop, echo, flapping or storm seen" in lines
    assert not any(line.startswith("!") or line[1:2] == "!" for line in lines)


# -- selection and drill-down ----------------------------------------------------------

def test_selection_moves_in_sort_order_and_stops_at_the_ends():
    s = apply_key(STATE, "down")
    assert s.selected == "t3o"
    s = apply_key(apply_key(apply_key(s, "j"), "j"), "j")
    assert s.selected == "br-int"
    s = apply_key(s, "k")
    assert s.selected == "vnet1"
    assert render(s, 80, 24)[4].startswith("> vnet1")
    assert apply_key(STATE, "up").selected == "vnet0"
    assert apply_key(STATE, "q") is None
    assert apply_key(STATE, "x") == STATE


def test_drill_down_of_a_port_at_80x24():
    s = apply_key(apply_key(STATE, "j"), "d")
    assert (s.selected, s.drill_port) == ("t3o", "t3o")
    lines = render(s, 80, 24)
    assert fits(lines, 80, 24) and len(lines) == 24
    assert lines[0] == HEADER
    assert lines[1] == "  t3o: tun, forwarding, up, mtu 1500  MAC moves 4.0/s"
    assert lines[2] == "  COUNTER            TOTAL     /s PEAK/s  COUNTER            TOTAL     /s PEAK/s"
    assert lines[3] == "  rx_packets           120     60     60  echoes                24     12     12"
    body = "\n".join(lines)
    assert "  DROP REASON    LOCATION                        COUNT     /s" in lines
    assert "  NOT_SPECIFIED  br_handle_frame_finish+0x380       18    9.0 [1]" in lines
    assert "  FULL_RING      tun_net_xmit+0x2b1                  4      0" in lines
    assert "[1] the FDB places the destination behind the ingress port" in body
    assert "!! loop t3o: t3o reflects: 110 flooded frames came back" in lines
    assert lines[-1] == "q quit  d/Enter back  j/k other port  p pause"
    # up/down in the drill-down show the neighbouring port; d goes back
    nxt = apply_key(s, "j")
    assert nxt.drill_port == "vnet1" and "  no drops on vnet1" in render(nxt, 80, 24)
    assert render(nxt, 80, 24)[2] == "  no counters yet"
    back = apply_key(s, "enter")
    assert back.drill_port is None and back.selected == "t3o"
    assert render(back, 80, 24)[3].startswith(">!t3o")


def test_drill_down_at_200x50_and_narrow():
    s = replace(STATE, selected="t3o", drill_port="t3o")
    wide = render(s, 200, 50)
    assert fits(wide, 200, 50) and "  FULL_RING      tun_net_xmit+0x2b1                  4      0" in wide
    narrow = render(s, 60, 30)
    assert fits(narrow, 60, 30)
    assert narrow[2] == "  COUNTER            TOTAL     /s PEAK/s"      # one column of counters
    assert narrow[3] == "  rx_packets           120     60     60"


def test_drill_into_a_port_that_left():
    s = replace(STATE, selected="gone0", drill_port="gone0")
    assert render(s, 80, 24)[1] == "  gone0: not on the bridge"


# -- sizes --------------------------------------------------------------------------

@pytest.mark.parametrize("width, height", [(80, 24), (200, 50), (100, 30), (60, 12), (40, 8), (30, 5),
                                           (80, 4), (12, 3), (80, 2), (80, 1), (1, 1), (0, 10), (80, 0)])
def test_every_size_fits_and_keeps_header_and_footer(width, height):
    for state in (STATE, replace(STATE, drill_port="t3o", selected="t3o"), replace(STATE, findings=()),
                  replace(STATE, ports=())):
        lines = render(state, width, height)
        assert fits(lines, width, height), (width, height, lines)
        if width and height:
            assert lines[0] == (HEADER if width >= len(HEADER) else HEADER[:width - 1] + "~")
        if width >= 20 and height >= 2:
            assert lines[-1].startswith("q quit")
            assert len(lines) == height


def test_small_screen_keeps_the_selected_row_and_a_finding():
    ports = tuple(PortStats(f"p{i:02d}", rx_pps=100 - i) for i in range(30))
    s = replace(STATE, ports=ports, selected="p25")
    lines = render(s, 80, 10)
    assert len(lines) == 10 and lines[0] == HEADER and lines[-1].startswith("q quit")
    assert any(line.startswith(">") and "p25" in line for line in lines)
    assert any(line.startswith("!! echo t3o") for line in lines)
    assert lines[1].startswith("  PORT")
    top = render(replace(s, selected="p00"), 80, 10)
    assert top[2].startswith("> p00")


# -- pause and refresh ----------------------------------------------------------------

def test_pause_and_new_data_keep_the_view_settings():
    view = apply_key(apply_key(apply_key(STATE, "p"), "s"), "j")
    assert view.paused and view.sort_key == "drops" and view.selected == "t3o"
    fresh = replace(STATE, elapsed=200.0, ports=PORTS[:2])
    merged = with_data(view, fresh)
    assert (merged.elapsed, merged.paused, merged.sort_key, merged.selected) == (200.0, True, "drops", "t3o")
    assert "PAUSED" in render(merged, 100, 10)[0]


def test_plain_output_has_no_footer_or_selection():
    lines = plain(STATE, 80)
    assert lines[0] == HEADER and lines[1] == SCREEN_80x24[1]
    assert lines[2] == " !vnet0     100     30       20     10      0      0       0"
    assert not any(line.startswith((">", "q quit")) for line in lines)
    assert lines[-3:] == SCREEN_80x24[8:11]


# -- from the aggregated state -------------------------------------------------------------

def _counters(**values):
    base = {k: 0 for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_broadcast",
                           "rx_multicast", "rx_arp", "echoes", "returns", "reentries",
                           "arp_duplicates", "fdb_learned")}
    return {**base, **values}


def _row(port, reason, location, count, rate, explanation=""):
    return DropRow("br-int", "lab", port, reason, location.split("+")[0], location, "", "LAB",
                   {"LAB": count}, count, rate, explanation)


def test_build_state_from_bridge_state_rows_and_findings():
    st = BridgeState()
    ports = ("br-int", "vnet0", "t3o")
    st.fold({p: _counters() for p in ports},
            [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 1, "port": "vnet0", "prev_port": None},
             {"mac": "02:aa:00:00:00:02", "vlan": 0, "count": 1, "port": "vnet0", "prev_port": None}], 10.0)
    st.fold({"br-int": _counters(rx_packets=8),
             "vnet0": _counters(rx_packets=200, tx_packets=60, rx_broadcast=30, rx_multicast=10, rx_arp=20),
             "t3o": _counters(rx_packets=120, tx_packets=120, echoes=24)},
            [{"mac": "02:aa:00:00:00:01", "vlan": 0, "count": 9, "port": "t3o", "prev_port": "vnet0"},
             {"mac": "02:aa:00:00:00:02", "vlan": 0, "count": 5, "port": "vnet0", "prev_port": "t3o"}], 12.0)
    rows = [_row("t3o", "NOT_SPECIFIED", "br_handle_frame_finish+0x380", 18, 6.0, EXPL),
            _row("t3o", "FULL_RING", "tun_net_xmit+0x2b1", 40, 3.0),
            _row("t3o", "NETFILTER_DROP", "nft_do_chain+0x4d2", 100, 0.0),
            _row("old0", "NOT_SPECIFIED", "__dev_forward_skb2+0x10", 5, 2.0),
            _row("old1", "NOT_SPECIFIED", "__dev_forward_skb2+0x10", 5, 0.0)]
    found = [Finding("mac_flap", "br-int", ["vnet0", "t3o"], "warning", "flap", "h"),
             Finding("l2_loop", "br-int", ["t3o"], "critical", "loop", "h"),
             Finding("own_address_echo", "br-int", ["t3o"], "critical", "echo", "h")]
    # the FDB now has ...:01 on t3o; ...:02 is not in it
    s = build_state(bridge="br-int", netns="lab", mode="tracepoint", elapsed=2.0, events_lost=0,
                    ports={"br-int": "the bridge device itself", "t3o": "tun", "vnet0": "veth"},
                    bridge_state=st, drop_rows=rows, findings=found,
                    fdb_ports={("02:aa:00:00:00:01", 0): "t3o"})
    by = {p.name: p for p in s.ports}
    assert list(by) == ["br-int", "t3o", "vnet0", "old0"]          # old1 left and is quiet
    assert by["old0"].info == "left the bridge"
    v, t = by["vnet0"], by["t3o"]
    assert (v.rx_pps, v.tx_pps, v.bcast_pps, v.arp_pps) == (100.0, 30.0, 20.0, 10.0)
    assert (t.echoes_pps, t.drops_pps, t.top_reason) == (12.0, 9.0, "NOT_SPECIFIED")
    assert t.moves_pps == 4.0                     # 8 moves of ...:01 in 2 s, now on t3o
    assert v.moves_pps == 0.0
    assert by["br-int"].moves_pps == 0.0 and by["br-int"].rx_pps == 4.0
    assert [d.reason for d in t.drops] == ["NETFILTER_DROP", "FULL_RING", "NOT_SPECIFIED"]
    assert t.drops[2] == DropLine("NOT_SPECIFIED", "br_handle_frame_finish",
                                  "br_handle_frame_finish+0x380", 18, 6.0, EXPL)
    assert dict((c, (tot, r)) for c, tot, r, _pk in v.counters)["rx_packets"] == (200, 100.0)
    assert [c for c, *_ in t.counters][:3] == ["rx_packets", "rx_bytes", "tx_packets"]
    assert [f.type for f in s.findings] == ["own_address_echo", "l2_loop", "mac_flap"]
    assert s.findings[2].ports == ("vnet0", "t3o") and s.interval == 2.0
    # ...:02 moved 4 times; not in the FDB it counts nowhere, in it (any VLAN) for its port
    s2 = build_state(bridge="br-int", ports={"t3o": "", "vnet0": ""}, bridge_state=st,
                     fdb_ports={("02:aa:00:00:00:02", 5): "vnet0", ("02:aa:00:00:00:01", 0): "vnet0"})
    assert {p.name: p.moves_pps for p in s2.ports} == {"t3o": 0.0, "vnet0": 6.0}


def test_number_formats():
    assert [num(v) for v in (0, 0.04, 0.5, 9.94, 12.4, 99999, 123456, 999400, 1234567)] == \
        ["0", "0.0", "0.5", "9.9", "12", "99999", "123k", "999k", "1.2M"]
    assert [total(v) for v in (0, 99_999_999, 123_456_789, 123_456_789_000)] == ["0", "99999999", "123M", "123G"]
    assert [duration(s) for s in (0, 59.9, 60, 3599, 3600, 86399)] == ["0s", "59s", "1m00s", "59m59s",
                                                                       "1h00m", "23h59m"]
