"""`brtrace loops` on the incident's faults, built for real: a VPN tap that
reflects every frame, two bridges cabled twice, the same with STP, a healthy
bridge. Assertions are on the JSON findings and per-port counters."""

import os
import time

import pytest

from fingerprint import flood_slot
from harness import READS, lab_prefix

from lab import BROADCAST, ETH_P_LAB, Frames, Lab, ether, ipv6_icmp, neighbour_solicitation, ping, send_frames

pytestmark = pytest.mark.integration


def loops_cmd(lab, duration="120"):
    return ("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5",
            "--duration", duration)




# The port hooks both ways this kernel offers: tcx, and the tracepoint
# fallback older kernels get (forced here with BRTRACE_AVOID).
# The tracepoint programs read skb->dev and the frame's place in kernel memory:
# with the kfunc where the kernel has it, and also as older kernels do
# (bpf_probe_read_kernel, harness.READS).
PORT_HOOKS = {"tcx": ({}, "tcx:ingress+egress"),
              "tracepoints": ({"BRTRACE_AVOID": "tcx"}, "raw_tracepoint:netif_receive_skb+net_dev_queue"),
              "tracepoints-helper-reads": ({"BRTRACE_AVOID": "tcx,kfunc"},
                                           "raw_tracepoint:netif_receive_skb+net_dev_queue")}


def assert_reads(t, env):
    """The summary names the kernel-read way the environment asked for."""
    if "kfunc" in env.get("BRTRACE_AVOID", ""):
        assert t.kind("summary")[0]["kernel_reads"] == READS["helper"][1]


@pytest.mark.parametrize("hooks", sorted(PORT_HOOKS))
def test_reflecting_vpn_tap(lab, tracer_factory, hooks):
    """tinc-like tap t3o writes every frame back: the bridge's own frames come
    back (own-address echo), the VM's MAC flaps to t3o, frames for the VM are
    sent to t3o and suppressed there. brtrace names t3o and no other port."""
    vm, gw = lab.host(1), lab.host(2)
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=10000, comm="tincd")
    env, probe = PORT_HOOKS[hooks]
    t = tracer_factory(*loops_cmd(lab), env=env)
    E, K, G, U = 12, 15, 5, 9
    # The bridge itself broadcasts (as br-int's own ARP would): each comes back on t3o.
    send_frames(lab.bridge_ns, lab.bridge, ether(BROADCAST, lab.bridge_mac, ETH_P_LAB, b"own"), E,
                interval=0.02)
    # The gateway repeats one broadcast G times (a gratuitous-ARP burst): each is
    # reflected, and the repeats entering gw0 are the host repeating itself.
    send_frames(gw.netns, gw.ifname, ether(BROADCAST, gw.mac, ETH_P_LAB, b"garp"), G, interval=0.02)
    # The VM broadcasts (distinct frames, as a VM's are): each is reflected, so
    # its MAC jumps vnet0 -> t3o -> vnet0 ...
    send_frames(vm.netns, vm.ifname, ether(BROADCAST, vm.mac, ETH_P_LAB, b"\0" * 4 + b"vm"), K,
                interval=0.05, seq_offset=14)
    time.sleep(0.2)
    # Now the FDB has the VM behind t3o: the gateway's frames for it never reach vnet0.
    send_frames(gw.netns, gw.ifname, ether(vm.mac, gw.mac, ETH_P_LAB, b"to-vm"), U, interval=0.02)
    t.stop(settle=0.8)

    echo = t.findings("own_address_echo")
    assert [(f["ports"], f["evidence"]["frames"]) for f in echo] == [([tap.name], E)]
    assert "ip link set " + tap.name + " nomaster" in echo[0]["hint"]

    (loop,) = t.findings("l2_loop")
    assert loop["ports"] == [tap.name] and loop["evidence"]["kind"] == "reflecting_port"
    assert loop["culprit_ports"] == [tap.name]
    assert loop["evidence"]["per_port"][tap.name]["returned"] == E + G + K
    assert "ip link set " + tap.name + " nomaster" in loop["hint"] and "vpn tincd" in loop["hint"]

    flaps = t.findings("mac_flap")
    vm_flap = [f for f in flaps if f["evidence"]["mac"] == vm.mac]
    assert len(vm_flap) == 1 and sorted(vm_flap[0]["ports"]) == sorted([vm.port, tap.name])
    assert vm_flap[0]["evidence"]["moves"] >= K
    assert vm_flap[0]["evidence"]["lives_on"] == vm.port
    assert vm_flap[0]["evidence"]["wrongly_learned_on"] == [tap.name]

    (nf,) = t.findings("not_forwarded")
    assert nf["ports"] == [tap.name] and nf["evidence"]["mac"] == vm.mac
    assert nf["evidence"]["frames"] == U
    # Every finding names the tap; only a flap also names the MAC's real home.
    # The gateway's MAC flaps too: its frames to the VM are sent to t3o and come back.
    assert all(tap.name in f["ports"] for f in t.findings())
    assert all(f["ports"] == [tap.name] for f in t.findings() if f["type"] != "mac_flap")
    homes = {f["evidence"]["mac"]: sorted(f["ports"]) for f in flaps}
    assert homes == {vm.mac: sorted([vm.port, tap.name]), gw.mac: sorted([gw.port, tap.name])}
    assert t.kind("summary")[0]["probes"]["ports"] == probe
    assert_reads(t, env)
    assert t.ports()[tap.name]["echoes"] == E
    # Who is behind the tap: the process holding it open, as a VPN daemon.
    assert echo[0]["identities"] == {tap.name: "vpn tincd"}
    assert {p["port"]: p["identity"] for p in t.kind("port")}[tap.name] == "vpn tincd"
    assert t.ports()[gw.port]["echoes"] == 0 and t.ports()[vm.port]["returns"] == 0
    assert t.ports()[gw.port]["host_repeats"] == G - 1
    assert t.ports()[gw.port]["returns"] + t.ports()[gw.port]["reentries"] == 0


@pytest.mark.parametrize("hooks", sorted(PORT_HOOKS))
def test_burst_from_a_steady_source_comes_back_counted(lab, tracer_factory, hooks):
    """A VM floods alone for longer than the loop window, so brtrace writes
    its frames' entries without reading them (they cannot be returns); then a
    reflecting tap appears and the VM sends a burst of distinct broadcasts
    back to back, which all come back after it. Each is counted: the first
    return marks the VM's source (it entered by a second port), which keeps
    the rest checked."""
    vm = lab.host(1)
    env, probe = PORT_HOOKS[hooks]
    tap = lab.add_tap(lab.prefix + "t3o")   # no reader yet: no carrier, the bridge skips it
    t = tracer_factory(*loops_cmd(lab), env=env)
    seq = 14  # the counter sits at the first payload byte
    send_frames(vm.netns, vm.ifname, ether(BROADCAST, vm.mac, ETH_P_LAB, b"\0" * 4 + b"steady"),
                30, interval=0.02, seq_offset=seq)          # 0.6 s > LOOP_WINDOW_NS (0.2 s)
    B = 32
    for salt in range(256):
        burst = ether(BROADCAST, vm.mac, ETH_P_LAB, b"\0" * 4 + b"burst" + bytes([salt]))
        numbered = Frames(burst, seq, B)   # what send_frames(seq_offset=seq) sends
        if len({flood_slot(numbered.frame(i)) for i in range(B)}) == B:
            break
    # Each frame back 4 ms after the tap read it: the whole burst is sent
    # before the first comes back, and the last is back well within the window.
    lab.start_tap_reader(tap.name, "reflect", max_frames=10000, delay=0.004)
    send_frames(vm.netns, vm.ifname, burst, B, seq_offset=seq)
    t.stop(settle=0.8)
    # Stopped after brtrace: a port without carrier is not reported as looping.
    assert lab.stop_tap_reader(tap.name) == B
    counters = t.ports()
    assert counters[tap.name]["returns"] == B and counters[tap.name]["reentries"] == 0
    assert counters[vm.port]["returns"] == 0 and counters[vm.port]["rx_broadcast"] == 30 + B
    (loop,) = t.findings("l2_loop")
    assert loop["ports"] == [tap.name] and loop["evidence"]["per_port"][tap.name]["returned"] == B
    assert t.kind("summary")[0]["probes"]["ports"] == probe
    assert_reads(t, env)


def test_two_bridges_cabled_twice_without_stp(lab, tracer_factory):
    loop = lab.add_peer_bridge_loop(links=2, stp=False, hold=30)
    link_ports = sorted(p for p, _peer in loop.links)
    t = tracer_factory(*loops_cmd(lab))
    h1 = lab.host(1)
    send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"storm"), 1)
    time.sleep(2.0)
    lab.break_loop()          # bounded: the test ends the storm itself
    t.stop(settle=1.0)
    (lp,) = t.findings("l2_loop")
    assert lp["ports"] == link_ports and lp["evidence"]["kind"] == "loop_between_ports"
    assert lp["evidence"]["frames_back"] > 1000
    storms = t.findings("storm")
    assert storms and {p for f in storms for p in f["ports"]} <= set(link_ports)
    flap = [f for f in t.findings("mac_flap") if f["evidence"]["mac"] == h1.mac]
    assert flap and set(flap[0]["ports"]) <= set(link_ports) | {h1.port}
    assert not t.findings("own_address_echo")


def test_redundant_links_with_stp_are_not_a_loop(tracer_factory):
    with Lab(prefix=f"{lab_prefix('brti')}stp", hosts=2, stp=True) as lab:
        loop = lab.add_peer_bridge_loop(links=2, stp=True, hold=60)
        assert loop.blocking, "STP did not block a redundant port"
        t = tracer_factory(*loops_cmd(lab))
        h1, h2 = lab.host(1), lab.host(2)
        send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"b"), 20, interval=0.02)
        assert ping(h1.netns, h2.ip, count=3, interval=0.2)
        t.stop(settle=0.5)
    assert t.findings() == [], t.findings()


def test_healthy_bridge_has_no_findings(lab, tracer_factory):
    h1, h2 = lab.host(1), lab.host(2)
    t = tracer_factory(*loops_cmd(lab))
    assert ping(h1.netns, h2.ip, count=5, interval=0.1)
    # Broadcasts from h2, which only answers pings (its ARP replies are unicast).
    send_frames(h2.netns, h2.ifname, ether(BROADCAST, h2.mac, ETH_P_LAB, b"hello"), 20, interval=0.01)
    t.stop()
    assert t.findings() == []
    counters = t.ports()
    assert counters[h2.port]["rx_broadcast"] == 20
    assert counters[h1.port]["rx_arp"] >= 1 and counters[h1.port]["rx_packets"] >= 6
    summary = t.kind("summary")[0]
    # This kernel has no kprobes: decisions are reconstructed from the port hooks (tcx here).
    assert summary["mode"] == "reconstructed" and summary["probes"]["forward"].startswith("reconstructed")
    assert summary["probes"]["ports"] == "tcx:ingress+egress"


@pytest.mark.parametrize("hooks", ["tcx", "tracepoints"])
def test_neighbour_discovery_counted_per_port(lab, tracer_factory, hooks):
    """IPv6 neighbour discovery on the wire, per port and exact: solicitations
    (DAD probes from :: among them), advertisements, router solicitations and
    advertisements; a guest's DAD probe that a reflecting tap sends back is a
    copy of an NDP frame coming back (what makes the guest refuse its address)."""
    vm, gw = lab.host(1), lab.host(2)
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=1000, comm="tincd")
    env, _probe = PORT_HOOKS[hooks]
    t = tracer_factory(*loops_cmd(lab), env=env)
    a1, a2 = "2001:db8::1", "2001:db8::2"
    send_frames(vm.netns, vm.ifname, neighbour_solicitation(vm.mac, a1, a2), 3, interval=0.02)
    send_frames(vm.netns, vm.ifname, neighbour_solicitation(vm.mac, "::", a1), 2, interval=0.3)
    advert = ipv6_icmp(vm.mac, gw.mac, a2, a1, 136, bytes([0x60, 0, 0, 0]) + bytes(16))
    send_frames(gw.netns, gw.ifname, advert, 4, interval=0.02)
    send_frames(vm.netns, vm.ifname, ipv6_icmp("33:33:00:00:00:02", vm.mac, a1, "ff02::2", 133, bytes(4)), 1)
    send_frames(gw.netns, gw.ifname, ipv6_icmp("33:33:00:00:00:01", gw.mac, "fe80::1", "ff02::1", 134,
                                               bytes(12)), 1)
    t.stop(settle=0.8)
    c = t.ports()
    # The VM's 3 + 2 solicitations (the DAD probes are sent 0.3 s apart, so each
    # comes back from t3o before the next leaves: no host repeat in between).
    assert (c[vm.port]["ndp_ns"], c[vm.port]["ndp_dad"], c[vm.port]["ndp_rs"]) == (5, 2, 1)
    assert (c[gw.port]["ndp_na"], c[gw.port]["ndp_ra"]) == (4, 1)
    # Every multicast NDP frame is flooded to t3o and comes back: 5 NS, the RS, the RA.
    assert c[tap.name]["ndp_ns"] == 5 and c[tap.name]["ndp_dad"] == 2
    assert c[tap.name]["ndp_duplicates"] == 5 and c[tap.name]["ndp_dad_back"] == 2
    assert c[tap.name]["arp_duplicates"] == 0
    (dad,) = t.findings("dad_looped")
    assert dad["ports"] == [tap.name] and dad["evidence"]["probes_back"] == 2


def test_guest_whose_dad_probe_comes_back_loses_its_address(tracer_factory):
    """A real guest stack: its DAD probe for a new address goes out, the
    reflecting tap sends it back, the guest (enhanced DAD off, as stacks
    without RFC 7527 behave) marks the address dadfailed; brtrace names the
    port the probe came back through."""
    with Lab(prefix=f"{lab_prefix('brtd')}{os.getpid() % 1000}d", hosts=2, ipv6=True) as lab:
        vm = lab.host(1)
        tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=1000, comm="tincd")
        for conf in ("all", "eth0"):   # the kernel uses DAD's nonce if either says so
            lab.sysctl(vm.netns, f"net.ipv6.conf.{conf}.enhanced_dad", "0")
        t = tracer_factory(*loops_cmd(lab))
        lab.ip(vm.netns, "-6", "addr", "add", "2001:db8::1/64", "dev", vm.ifname)
        state = ""
        for _ in range(50):          # DAD starts within 1 s, takes 1 s
            state = lab.ip(vm.netns, "-6", "addr", "show", "dev", vm.ifname).stdout.decode()
            if "2001:db8::1/64" in state and "tentative" not in state.split("2001:db8::1/64")[1].split("\n")[0]:
                break
            if "dadfailed" in state:
                break
            time.sleep(0.1)
        t.stop(settle=0.5)
    line = next(ln for ln in state.splitlines() if "2001:db8::1/64" in ln)
    assert "dadfailed" in line, state
    dad = [f for f in t.findings("dad_looped") if f["ports"] == [tap.name]]
    assert dad and dad[0]["evidence"]["probes_back"] >= 1
    assert not [f for f in t.findings("dad_looped") if f["ports"] != [tap.name]]
