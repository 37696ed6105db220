"""Steps -> journeys -> verdicts, from synthetic steps (tracer/journey.py)."""

from tracer.journey import Journeys, verdict
from lab import ETH_P_LAB, ether

H1, H2, H3 = "02:b7:00:00:00:01", "02:b7:00:00:00:02", "02:b7:00:00:00:03"
BCAST = "ff:ff:ff:ff:ff:ff"
MS = 1_000_000


def step(kind, port, ts, skb, head=None, data=None, **kw):
    return {"step": kind, "port": port, "ts_ns": ts, "skb": skb, "head": head or skb + 0x1000,
            "data": data if data is not None else ether(H2, H1, ETH_P_LAB, b"x"), **kw}


def run(steps, fdb=None, **kw):
    j = Journeys("br-int", fdb_port=(fdb or {}).get, **kw)
    for s in steps:
        j.add(s)
    return j.flush()


def test_unicast_forward_same_skb():
    (j,) = run([step("entered", "vnet0", 1000, 0xA), step("left", "vnet1", 3000, 0xA)])
    v = j.verdict
    assert (v["decision"], v["from"], v["to"]) == ("forward", "vnet0", ["vnet1"])
    assert v["summary"] == "entered br-int on vnet0 -> forward to vnet1 -> left via vnet1"
    assert v["duration_us"] == 2.0


def test_same_port_is_suppressed_with_fdb():
    hidden = "02:b7:00:00:01:01"
    data = ether(hidden, H1, ETH_P_LAB, b"x")
    steps = [step("entered", "vnet0", 1000, 0xA, data=data),
             step("freed", "vnet0", 2000, 0xA, data=data, reason="NOT_SPECIFIED",
                  function="br_handle_frame_finish", location="br_handle_frame_finish+0x380")]
    (j,) = run(steps, fdb={hidden: "vnet0"})
    assert j.verdict["decision"] == "suppressed"
    assert "learned on vnet0, the ingress port" in j.verdict["text"]
    # The same free without the FDB placing dst there is a plain drop.
    (j,) = run(steps, fdb={hidden: "vnet1"})
    assert j.verdict["decision"] == "dropped"
    assert j.verdict["text"] == "dropped on vnet0: NOT_SPECIFIED at br_handle_frame_finish+0x380"


def test_flood_clones_tied_by_head_and_by_fingerprint():
    data = ether(BCAST, H1, ETH_P_LAB, b"x")
    steps = [step("entered", "vnet0", 1000, 0xA, head=0x100, data=data),
             step("left", "vnet1", 2000, 0xB, head=0x100, data=data),       # clone, same buffer
             step("left", "vnet2", 2500, 0xC, head=0x999, data=data),       # a copy: same bytes
             step("delivered", "br-int", 2600, 0xA, head=0x100, data=data)]
    (j,) = run(steps)
    v = j.verdict
    assert v["decision"] == "flood" and v["to"] == ["vnet1", "vnet2"] and v["local"]
    assert v["text"] == "flood to 2 ports (vnet1, vnet2) and deliver locally"


def test_copy_outside_the_tie_window_is_another_journey():
    data = ether(BCAST, H1, ETH_P_LAB, b"x")
    js = run([step("entered", "vnet0", 0, 0xA, head=0x100, data=data),
              step("left", "vnet2", 50 * MS, 0xC, head=0x999, data=data)])
    assert len(js) == 2 and js[1].verdict["summary"].startswith("seen on br-int without its entry")


def test_never_left_after_grace():
    j = Journeys("br-int", grace_ns=100 * MS)
    j.add(step("entered", "vnet0", 0, 0xA))
    assert j.expire(50 * MS) == []
    (done,) = j.expire(150 * MS)
    assert done.verdict["decision"] == "never_left"
    assert done.verdict["summary"] == "entered br-int on vnet0, never left"


def test_drop_on_egress_after_forward():
    (j,) = run([step("entered", "vnet0", 0, 0xA), step("left", "t0", 10, 0xA),
                step("freed", "t0", 20, 0xA, reason="FULL_RING", function="tun_net_xmit",
                     location="tun_net_xmit+0x2b1")])
    assert j.verdict["decision"] == "forward"
    assert j.verdict["text"] == "forward to t0, then dropped on t0: FULL_RING at tun_net_xmit+0x2b1"


def test_skb_reused_by_a_new_frame_starts_a_new_journey():
    js = run([step("entered", "vnet0", 0, 0xA), step("left", "vnet1", 10, 0xA),
              step("entered", "vnet1", 20, 0xA), step("left", "vnet0", 30, 0xA)])
    assert [j.n for j in js] == [1, 2]
    assert [j.verdict["to"] for j in js] == [["vnet1"], ["vnet0"]]


def test_interleaved_frames_stay_apart():
    a = ether(H2, H1, ETH_P_LAB, b"a")
    b = ether(H1, H2, ETH_P_LAB, b"b")
    js = run([step("entered", "vnet0", 0, 0xA, data=a), step("entered", "vnet1", 1, 0xB, data=b),
              step("left", "vnet0", 2, 0xB, data=b), step("left", "vnet1", 3, 0xA, data=a)])
    assert [(j.verdict["from"], j.verdict["to"]) for j in js] == [("vnet0", ["vnet1"]), ("vnet1", ["vnet0"])]


def test_local_send_and_local_delivery():
    (j,) = run([step("originated", "br-int", 0, 0xA), step("left", "vnet1", 5, 0xA)])
    assert j.verdict["summary"] == "sent by br-int itself (host stack) -> forward to vnet1 -> left via vnet1"
    (j,) = run([step("entered", "vnet0", 0, 0xA), step("delivered", "br-int", 5, 0xA),
                step("freed", "br-int", 9, 0xA, reason="UNHANDLED_PROTO", function="__netif_receive_skb_core",
                     location="__netif_receive_skb_core+0x10")])
    assert j.verdict["decision"] == "local"
    assert j.verdict["text"] == ("deliver locally, then dropped on br-int: UNHANDLED_PROTO at "
                                 "__netif_receive_skb_core+0x10")


def test_max_journeys_refuses_new_ones_but_completes_open_ones():
    j = Journeys("br-int", max_journeys=1)
    assert j.add(step("entered", "vnet0", 0, 0xA)) is not None
    assert j.add(step("entered", "vnet0", 1, 0xB)) is None
    assert j.add(step("left", "vnet1", 2, 0xA)).n == 1
    assert j.refused == 1 and len(j.flush()) == 1


def test_verdict_of_multicast_to_one_port_is_a_flood():
    data = ether(BCAST, H1, ETH_P_LAB, b"x")
    v = verdict([step("entered", "vnet0", 0, 1, data=data), step("left", "vnet1", 1, 1, data=data)], "br0")
    assert v["decision"] == "flood" and v["text"] == "flood to 1 port (vnet1)"


def test_summary_puts_exits_before_later_drops():
    data = ether(BCAST, H1, ETH_P_LAB, b"x")
    (j,) = run([step("entered", "vnet0", 0, 0xA, head=1, data=data), step("left", "vnet1", 1, 0xB, head=1, data=data),
                step("delivered", "br-int", 2, 0xA, head=1, data=data),
                step("freed", "br-int", 3, 0xA, head=1, data=data, reason="UNHANDLED_PROTO",
                     function="__netif_receive_skb_core", location="__netif_receive_skb_core+0x7e6")])
    assert j.verdict["summary"] == ("entered br-int on vnet0 -> flood to 1 port (vnet1) and deliver locally"
                                    " -> left via vnet1 -> dropped on br-int: UNHANDLED_PROTO at"
                                    " __netif_receive_skb_core+0x7e6")
    assert set(j.verdict) >= {"decision", "text", "summary", "from", "to", "local", "drops"}


def test_identical_frames_back_to_back_do_not_merge():
    hidden = "02:b7:00:00:01:01"
    data = ether(hidden, H1, ETH_P_LAB, b"x")
    steps = []
    for i in range(3):   # each frame a new skb and buffer, same bytes, microseconds apart
        steps += [step("entered", "vnet0", i * 10, 0xA0 + i, head=0x100 + i, data=data),
                  step("freed", "vnet0", i * 10 + 5, 0xA0 + i, head=0x100 + i, data=data,
                       reason="NOT_SPECIFIED", function="br_handle_frame_finish")]
    j = Journeys("br-int", max_journeys=2)
    for s in steps:
        j.add(s)
    done = j.flush()
    assert [[s["step"] for s in d.steps] for d in done] == [["entered", "freed"]] * 2
    assert j.refused == 2


def test_recycled_clone_addresses_go_to_the_newer_frame():
    data = ether(BCAST, H1, ETH_P_LAB, b"x")
    steps = []
    for i in range(3):   # the same clone skb address 0xC each time, a new buffer per frame
        steps += [step("entered", "vnet0", i * 100, 0xA + i, head=0x100 + i, data=data),
                  step("left", "vnet1", i * 100 + 1, 0xC, head=0x100 + i, data=data),
                  step("left", "vnet2", i * 100 + 2, 0xA + i, head=0x100 + i, data=data)]
    js = run(steps)
    assert [sorted(j.verdict["to"]) for j in js] == [["vnet1", "vnet2"]] * 3
