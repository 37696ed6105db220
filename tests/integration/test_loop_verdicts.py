"""Loop verdicts the operator gets when the storm is already raging.

Each loop class is built for real (veth bridges, a reflecting tap with
hairpin, a userspace relay that makes a 300 ms loop, real tinc 1.0 daemons)
and brtrace is started the way an operator starts it: seconds into the
storm. Assertions are on the verdict (`evidence.kind`, `ports`,
`culprit_ports`), which must be right at the first interval that shows it
and never change while the storm runs (`findings_now` records, one per
interval), and on the ports that only carry the storm never being named.
"""

import time

import pytest

from harness import keep_asking, storm_between_1_and_2
from lab import BROADCAST, ETH_P_LAB, ether, ping, run, send_frames

pytestmark = pytest.mark.integration

INTERVAL = 0.5


def loops_args(netns, bridge="br-int", duration="120"):
    return ("loops", "--bridge", bridge, "--netns", netns, "--interval", str(INTERVAL),
            "--duration", duration)


def verdicts(t) -> list:
    """Per interval: the l2_loop verdicts as (kind, ports, culprit_ports)."""
    return [(r["at_s"], [(f["verdict"], tuple(f["ports"]), tuple(f["culprit_ports"] or ()))
                         for f in r["findings"] if f["type"] == "l2_loop"])
            for r in t.kind("findings_now")]


def assert_one_verdict(t, kind, ports, culprits, first_by=2):
    """The verdict shows within `first_by` intervals of brtrace's first one,
    then holds in every interval to the end, and is the final finding too."""
    per_interval = verdicts(t)
    assert per_interval, "no findings_now records"
    want = (kind, tuple(ports), tuple(culprits))
    seen = [i for i, (_at, v) in enumerate(per_interval) if v]
    assert seen and seen[0] < first_by, per_interval[:4]
    for at, v in per_interval[seen[0]:]:
        assert v == [want], (at, v)
    (final,) = t.findings("l2_loop")
    assert (final["evidence"]["kind"], tuple(final["ports"]), tuple(final["culprit_ports"])) == want
    ev = final["evidence"]
    print(f"\nverdict {kind} {list(ports)} first shown at +{per_interval[seen[0]][0]} s "
          f"(brtrace ready after {t.startup:.2f} s); copies {ev['frames_back']}, "
          f"per frame {ev['copies_per_frame']}, round trip {ev['round_trip_ms']}, "
          f"per port {ev['per_port']}")
    return final


def attach(late, tracer_factory, start_fault, *args, env=None):
    """brtrace (`loops` with `args`) attached before `start_fault()` runs (a
    clean start) or 3 s after (the operator arriving into a running storm).
    Returns the tracer and what start_fault() returned."""
    t = None if late else tracer_factory(*args, env=env)
    started = start_fault()
    if late:
        time.sleep(3.0)
        t = tracer_factory(*args, env=env)
    return t, started


def named_anywhere(t) -> set:
    """Every port any l2_loop verdict named, in any interval or at the end."""
    out = set()
    for _at, vs in verdicts(t):
        for _kind, ports, culprits in vs:
            out |= set(ports) | set(culprits)
    for f in t.findings("l2_loop"):
        out |= set(f["ports"]) | set(f["culprit_ports"])
    return out


@pytest.mark.parametrize("hooks", ["tcx", "tracepoints"])
@pytest.mark.parametrize("late", [False, True], ids=["clean-start", "started-late"])
def test_two_bridges_cabled_twice(lab, tracer_factory, late, hooks):
    """One broadcast in a two-link loop between two bridges, STP off: copies
    run round both ways for ever, byte-identical. Started 3 s into the storm,
    brtrace must still name both links, and only them; with the port hooks
    on tcx and on the tracepoints older kernels get."""
    loop = lab.add_peer_bridge_loop(links=2, stp=False, hold=40)
    links = sorted(p for p, _peer in loop.links)
    h1 = lab.host(1)
    t, _ = attach(late, tracer_factory,
                  lambda: send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"storm"), 1),
                  *loops_args(lab.bridge_ns),
                  env={"BRTRACE_AVOID": "tcx"} if hooks == "tracepoints" else None)
    time.sleep(6.0)
    lab.break_loop()
    t.stop(settle=2.0)          # longer than the 1 s that `active` looks back
    final = assert_one_verdict(t, "loop_between_ports", links, links)
    ev = final["evidence"]
    assert ev["frames_back"] > 1000 and ev["copies_per_frame"] > 100
    assert set(ev["per_port"]) == set(links)
    assert ev["round_trip_ms"]["samples"] > 0
    assert named_anywhere(t) == set(links)
    assert not final["active"]          # the loop was broken before the end


@pytest.mark.parametrize("late", [False, True], ids=["clean-start", "started-late"])
def test_hairpin_reflector_with_vm_and_gateway(lab, tracer_factory, late):
    """A VPN tap that writes every frame back, with hairpin on: the VM's ARP
    for its gateway goes round t3o for ever, and every lap reaches the VM and
    the gateway, which answers each time. brtrace, started before or 3 s in,
    says t3o reflects; the gateway's and the VM's ports are never named, and
    the gateway's replies are not called a broadcast storm."""
    vm, gw = lab.host(1), lab.host(2)
    # The reflector writes back ~0.5 M frames/s here (the gateway's unicast
    # replies ping-pong through t3o too): bounded by time, not by count.
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=50_000_000, hold=20,
                      comm="tincd")
    run(["bridge", "-n", lab.bridge_ns, "link", "set", "dev", tap.name, "hairpin", "on"])
    # The VM keeps asking for its gateway: the replies reach t3o, not the VM.
    t, asker = attach(late, tracer_factory, lambda: keep_asking(vm.netns, gw.ip, 14),
                      *loops_args(lab.bridge_ns))
    time.sleep(8.0)
    # The reflector first: without a reader the tap loses its carrier, and a
    # port disabled since keeps what it did while it forwarded.
    reflected = lab.stop_tap_reader(tap.name)
    t.stop(settle=0.5)
    asker.kill()
    asker.wait()
    assert reflected and reflected > 1000
    final = assert_one_verdict(t, "reflecting_port", [tap.name], [tap.name])
    assert "vpn tincd" in final["hint"] and f"ip link set {tap.name} nomaster" in final["hint"]
    assert named_anywhere(t) == {tap.name}
    per_port = final["evidence"]["per_port"][tap.name]
    assert per_port["returned"] > per_port["reentered"]
    for f in t.findings("storm"):
        if gw.port in f["ports"]:
            assert "broadcast storm" not in f["message"], f["message"]


@pytest.mark.parametrize("late", [False, True], ids=["clean-start", "started-late"])
def test_slow_loop_through_a_300ms_relay(lab, tracer_factory, late):
    """A loop whose round trip is 300 ms (a relay between two taps holding
    each frame, as a VPN over the internet would): still a loop between the
    two links, with a measured round trip near 300 ms, whether brtrace was
    there first or came 3 s (ten laps) in."""
    loop = lab.add_slow_peer_loop(delay=0.3, hold=30)
    links = sorted(p for p, _peer in loop.links)
    h1 = lab.host(1)
    t, _ = attach(late, tracer_factory,
                  lambda: send_frames(h1.netns, h1.ifname,
                                      ether(BROADCAST, h1.mac, ETH_P_LAB, b"\0" * 4 + b"slow"), 4,
                                      interval=0.05, seq_offset=14),
                  *loops_args(lab.bridge_ns))
    time.sleep(4.5)
    lab.break_loop()
    t.stop(settle=0.8)
    (final,) = t.findings("l2_loop")
    assert final["evidence"]["kind"] == "loop_between_ports"
    assert final["ports"] == links and final["culprit_ports"] == links
    rtt = final["evidence"]["round_trip_ms"]
    print(f"\nverdict {final['evidence']['kind']} {final['ports']}: round trip {rtt}, "
          f"first seen +{final['evidence']['first_seen_s']} s")
    assert 225 <= rtt["median"] <= 375, rtt
    assert named_anywhere(t) == set(links)


# -- real tinc ---------------------------------------------------------------

@pytest.mark.parametrize("late", [False, True], ids=["clean-start", "started-late"])
def test_tinc_loop_seen_from_a_third_node_is_beyond_its_vpn_port(mesh, tracer_factory, late):
    m = mesh("c" if late else "e")
    n3 = m.node(3)
    def start():
        storm_between_1_and_2(m)
        return keep_asking(m.vm(3).netns, "10.88.0.1", 14)

    t, asker = attach(late, tracer_factory, start, *loops_args(n3.netns))
    time.sleep(8.0)
    m.break_direct_link(1, 2)
    t.stop(settle=1.0)
    asker.kill()
    asker.wait()
    final = assert_one_verdict(t, "loop_beyond_port", [n3.tap], [])
    assert named_anywhere(t) == {n3.tap}
    assert "vpn tincd" in final["hint"]
    assert final["evidence"]["per_port"][n3.tap]["reentered"] > 100


@pytest.mark.parametrize("late", [False, True], ids=["clean-start", "started-late"])
def test_tinc_loop_seen_from_a_node_on_it(mesh, tracer_factory, late):
    """Node 1 is on the loop: frames leave it through tinc and come back by
    the direct link from node 2 (tinc carries them one way only here), or
    both ways: a loop between t3o and dl2 either way."""
    m = mesh("a" if late else "b")
    n1 = m.node(1)
    t, _ = attach(late, tracer_factory, lambda: storm_between_1_and_2(m), *loops_args(n1.netns))
    time.sleep(6.0)
    m.break_direct_link(1, 2)
    t.stop(settle=1.0)
    ports = sorted([n1.tap, "dl2"])
    assert_one_verdict(t, "loop_between_ports", ports, ports)
    assert named_anywhere(t) == set(ports)


def test_tinc_mesh_without_a_second_path_is_quiet(mesh, tracer_factory):
    m = mesh("q")
    n3 = m.node(3)
    m.set_bridge_ip(3, "10.88.0.203/24")
    t = tracer_factory(*loops_args(n3.netns))
    for i in (1, 2):
        assert ping(m.vm(3).netns, m.vm(i).ip, count=3, interval=0.2)
    m.seed_storm(node=1, count=5)
    time.sleep(2.0)
    t.stop(settle=0.5)
    bad = [f for f in t.findings() if f["type"] in ("l2_loop", "own_address_echo", "mac_flap", "storm")]
    assert bad == [], bad
