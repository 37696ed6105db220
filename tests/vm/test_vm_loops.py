"""Kernel-matrix lane: `brtrace loops` on Debian's stock 6.1 kernel, inside the
QEMU VM of ../shared/tools/vm-run.sh. Run it with scripts/vm-test.

Skipped everywhere else, exactly like test_vm_drops.py: only where /vmh/out
exists (the VM's output share) and the kernel is 6.1.x.

On 6.1 the bridge is a module and kprobes work, so `loops` picks the kprobe
mechanism for its forward hook and adds bpf/forward.bpf.c: kprobes on
br_forward, br_flood and br_pass_frame_up that count the bridge's own decision
per ingress port (decided_forward, decided_same_port, decided_not_forwarding,
decided_flood, decided_local). The tests here check those exact counts against
traffic we sent, where the host tier (6.18, raw tracepoints) can only
reconstruct them.

Under TCG emulation every bcc compile costs 10-40 s (drops + forward + fdb +
decide here), so brtrace is started once per lab, and each test asserts on its
own part of that one JSON output. Two labs, two brtrace runs:

- `run`: the host tier's test_reflecting_vpn_tap (lab.Lab, STP off):
  host 1 is "the VM", host 2 "the gateway", and a tinc-like tap whose reader
  writes every frame straight back; one bounded burst of each kind of
  traffic. The VM's broadcasts are distinct (numbered) frames, as a real VM's
  are: byte-identical ones entering the VM's port again after a reflection
  are taken for the host repeating itself only HOST_REPEATS_MAX (8) times.
  The gateway sends one frame G times (a gratuitous-ARP burst): its repeats
  are host repeats, never copies.
- `storm`: the host tier's test_two_bridges_cabled_twice (started-late): a
  peer bridge joined by two veth links, STP off, one broadcast seeded, and
  the storm already running when brtrace starts (its compile under TCG is
  the "seconds into the storm").
"""

from __future__ import annotations

import os
import platform
import subprocess
import threading
import time

import pytest

if not (os.path.isdir("/vmh/out") and platform.release().startswith("6.1.")):
    pytest.skip("kernel-matrix lane: runs only inside the 6.1 VM (scripts/vm-test)",
                allow_module_level=True)

from harness import Tracer  # tests/integration/harness.py
from lab import BROADCAST, ETH_P_LAB, Lab, ether, send_frames

# Not test_vm_drops.py's brtv<pid> (same pytest process): an "l" for loops.
PREFIX = f"brtv{os.getpid() % 1000}l"
MAC_BASE = "02:b7:03:00:00"             # apart from test_vm_drops.py's 02:b7:01/02
START_TIMEOUT = 180.0                   # compile+attach of 4 hook groups under TCG
CMD_TIMEOUT = 60.0
# bridge's own broadcasts, VM broadcasts (numbered), gw GARP burst (one frame
# G times), gw -> VM unicasts
E, K, G, U = 12, 15, 5, 9
SEQ = 14                                # the VM's frame number: first payload byte
KPROBE_FORWARD = "kprobe:br_forward+br_flood+br_pass_frame_up"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=CMD_TIMEOUT)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Build the lab with its reflecting tap, run one `brtrace loops` across
    the four bursts, and hand back (lab, tap, stopped brtrace)."""
    # No udev in the guest: /dev/net/tun appears only once tun is loaded.
    sh("modprobe", "tun")
    sh("modprobe", "bridge")
    lab = Lab(prefix=PREFIX, hosts=2, mac_base=MAC_BASE)
    tracer = None
    try:
        lab.build()
        vm, gw = lab.host(1), lab.host(2)
        # hold: outlives brtrace's compile under TCG plus the traffic; cleanup
        # stops it (by PID) anyway.
        tap = lab.add_tap(PREFIX + "t3o", reader="reflect", hold=280.0, max_frames=10000)
        tracer = Tracer(tmp_path_factory.mktemp("brtvl"), "loops", "--bridge", lab.bridge, "--netns",
                        lab.bridge_ns, "--interval", "0.5", "--duration", "300",
                        start_timeout=START_TIMEOUT)
        # STP is off and forward_delay stays at its default: with STP off the
        # kernel moves an enabled port straight to forwarding (no timer trap
        # here: no port is forced into listening/learning). Check, since a
        # tap's carrier comes up asynchronously (linkwatch).
        states = {p: lab.stp_state(p) for p in (vm.port, gw.port, tap.name)}
        assert set(states.values()) == {"forwarding"}, states

        # The bridge itself broadcasts (as its own ARP would): each comes back on the tap.
        send_frames(lab.bridge_ns, lab.bridge, ether(BROADCAST, lab.bridge_mac, ETH_P_LAB, b"own"),
                    E, interval=0.02)
        # The gateway repeats one broadcast G times (a gratuitous-ARP burst):
        # each is reflected, and the repeats entering its port are the host
        # repeating itself.
        send_frames(gw.netns, gw.ifname, ether(BROADCAST, gw.mac, ETH_P_LAB, b"garp"), G,
                    interval=0.02)
        # The VM broadcasts (distinct frames, as a VM's are): each is
        # reflected, so its MAC jumps vnet0 -> tap -> vnet0 ...
        send_frames(vm.netns, vm.ifname, ether(BROADCAST, vm.mac, ETH_P_LAB, b"\0" * 4 + b"vm"), K,
                    interval=0.05, seq_offset=SEQ)
        time.sleep(0.3)
        # Now the FDB has the VM behind the tap: the gateway's frames for it go
        # out of the tap, come back in on it, and br_forward() refuses to send
        # them out of their ingress port.
        send_frames(gw.netns, gw.ifname, ether(vm.mac, gw.mac, ETH_P_LAB, b"to-vm"), U,
                    interval=0.02)
        # Past one --interval, so the last counters are read by a tick too.
        tracer.stop(settle=1.2, timeout=CMD_TIMEOUT)
        tap.reflected = lab.stop_tap_reader(tap.name)
        yield lab, tap, tracer
    finally:
        if tracer is not None and tracer.proc.poll() is None:
            tracer.kill()
        lab.cleanup()


def only(records: list) -> dict:
    assert len(records) == 1, records
    return records[0]


def test_kprobe_mode_on_6_1(run):
    _lab, _tap, t = run
    s = only(t.kind("summary"))
    assert s["mode"] == "kprobe", s
    assert s["probes"]["forward"].startswith("kprobe"), s["probes"]
    assert s["probes"]["forward"] == KPROBE_FORWARD, s["probes"]
    assert s["probes"]["drops"] == "raw_tracepoint:kfree_skb"
    # 6.1 has no tcx: the port hooks fall back to the tracepoints
    assert s["probes"]["ports"] == "raw_tracepoint:netif_receive_skb+net_dev_queue", s["probes"]
    assert t.proc.returncode == 0, t.stderr


def test_own_address_echo_on_the_tap(run):
    lab, tap, t = run
    echo = t.findings("own_address_echo")
    assert [(f["ports"], f["evidence"]["frames"]) for f in echo] == [([tap.name], E)], echo
    assert "ip link set " + tap.name + " nomaster" in echo[0]["hint"]
    counters = t.ports()
    assert counters[tap.name]["echoes"] == E
    assert counters[lab.host(1).port]["echoes"] == counters[lab.host(2).port]["echoes"] == 0


def test_tap_is_a_reflecting_port(run):
    lab, tap, t = run
    vm, gw = lab.host(1), lab.host(2)
    loop = only(t.findings("l2_loop"))
    assert loop["ports"] == [tap.name] and loop["evidence"]["kind"] == "reflecting_port", loop
    assert loop["culprit_ports"] == [tap.name], loop
    # Every broadcast the bridge sent out of the tap came back (E + G + K),
    # each a return: nothing entered the tap that the bridge had not sent there.
    per_port = loop["evidence"]["per_port"][tap.name]
    assert (per_port["returned"], per_port["reentered"]) == (E + G + K, 0), loop
    assert "ip link set " + tap.name + " nomaster" in loop["hint"], loop
    counters = t.ports()
    # The VM's numbered broadcasts are new frames each time: nothing comes
    # back on its port, and none is a repeat.
    assert counters[vm.port]["returns"] + counters[vm.port]["reentries"] == 0, counters[vm.port]
    assert counters[vm.port]["host_repeats"] == 0, counters[vm.port]
    # The gateway's burst: G - 1 repeats of its own frame, no copies.
    assert counters[gw.port]["host_repeats"] == G - 1, counters[gw.port]
    assert counters[gw.port]["returns"] + counters[gw.port]["reentries"] == 0, counters[gw.port]


def test_not_forwarded_on_the_tap_is_exact(run):
    """br_forward()'s refusal, counted by the kprobe: exactly the gateway's U
    frames, which the reflector brought back in on the tap the FDB names."""
    lab, tap, t = run
    nf = only(t.findings("not_forwarded"))
    assert nf["ports"] == [tap.name], nf
    assert nf["evidence"]["exact"] is True, nf
    assert nf["evidence"]["frames"] == U, nf
    # The MAC comes from the sampled frames of the kfree_skb in br_handle_frame_finish().
    assert nf["evidence"]["mac"] == lab.host(1).mac, nf


def test_decisions_per_ingress_port(run):
    lab, tap, t = run
    vm, gw = lab.host(1), lab.host(2)
    counters = t.ports()
    assert counters[tap.name]["decided_same_port"] == U, counters[tap.name]
    # Each broadcast is flooded once where it was sent: the VM's K, the
    # gateway's G (its repeats too: the bridge floods what the host sends).
    assert counters[vm.port]["decided_flood"] == K, counters[vm.port]
    assert counters[gw.port]["decided_flood"] == G, counters[gw.port]
    # Every broadcast the tap reflected (the bridge's E, the gateway's G, the
    # VM's K) is flooded again.
    assert counters[tap.name]["decided_flood"] == E + G + K, counters[tap.name]
    # Only the reflected frames are refused; nothing else is sent back or blocked.
    assert counters[vm.port]["decided_same_port"] == counters[gw.port]["decided_same_port"] == 0
    assert all(c.get("decided_not_forwarding", 0) == 0 for c in counters.values()), counters
    # The gateway's unicasts were forwarded (to the tap, where the FDB had
    # the VM), and nothing else was: every other frame was a broadcast.
    assert counters[gw.port]["decided_forward"] == U, counters[gw.port]
    assert counters[vm.port]["decided_forward"] == counters[tap.name]["decided_forward"] == 0


def test_vm_mac_flaps_between_its_port_and_the_tap(run):
    lab, tap, t = run
    vm, gw = lab.host(1), lab.host(2)
    flaps = t.findings("mac_flap")
    vm_flap = [f for f in flaps if f["evidence"]["mac"] == vm.mac]
    assert len(vm_flap) == 1, flaps
    assert sorted(vm_flap[0]["ports"]) == sorted([vm.port, tap.name]), vm_flap
    assert vm_flap[0]["evidence"]["moves"] >= K
    # Every finding names the tap; only a flap also names a MAC's real home.
    assert all(tap.name in f["ports"] for f in t.findings()), t.findings()
    assert all(f["ports"] == [tap.name] for f in t.findings() if f["type"] != "mac_flap"), \
        t.findings()
    homes = {f["evidence"]["mac"]: sorted(f["ports"]) for f in flaps}
    assert homes == {vm.mac: sorted([vm.port, tap.name]), gw.mac: sorted([gw.port, tap.name])}


def test_reflector_and_events_accounted(run):
    """The tap's reader sent back every frame the bridge gave it (E + G + K + U),
    and no record was lost on the way to brtrace."""
    _lab, tap, t = run
    assert tap.reflected == E + G + K + U
    stats = only(t.kind("summary"))["stats"]
    assert stats["events_lost"] == 0 and stats["bad_records"] == 0, stats


def test_brtrace_attaches_within_bound(run):
    _lab, _tap, t = run
    print(f"brtrace loops attached in {t.startup:.1f} s")
    assert t.startup < START_TIMEOUT


# ---------------------------------------------------------------- the storm
# The steady-state two-link loop, started before brtrace: its own lab (and
# PREFIX, MACs), one more brtrace run.

STORM_PREFIX = f"brtv{os.getpid() % 1000}s"
STORM_MAC_BASE = "02:b7:04:00:00"       # apart from the reflector lab's 02:b7:03
STORM_START_TIMEOUT = 150.0             # brtrace's compile, slower with the storm on a vCPU
# The loop's watchdog (deletes a link after `hold` s, a bound if we never
# get to break_loop()): past the lead-in, brtrace's start and the watch.
STORM_LEAD_S, STORM_WATCH_S = 2.0, 5.0
STORM_HOLD = STORM_LEAD_S + STORM_START_TIMEOUT + STORM_WATCH_S + 15.0
INTERVAL = 0.5


def mark(what: str) -> None:
    """A line on the guest's serial console (kernel log level 3, above the
    harness's loglevel=4), so a panic in console.log can be placed between
    the fixture's steps."""
    try:
        with open("/dev/kmsg", "w") as f:
            f.write(f"<3>brtrace-vm-storm: {what}\n")
    except OSError:
        pass


class FtraceSites:
    """Marks on the console each change in the functions ftrace has patched
    (tracefs enabled_functions: kprobes on a function's entry go through
    ftrace), polled every 50 ms while the storm fixture runs, so a panic can
    be placed against brtrace's attach and detach."""

    PATH = "/sys/kernel/tracing/enabled_functions"

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last = None
        while not self._stop.is_set():
            try:
                with open(self.PATH) as f:
                    now = sorted(line.split()[0] for line in f if line.strip())
            except OSError:
                return
            if now != last:
                mark("ftrace sites: " + (" ".join(now) or "none"))
                last = now
            self._stop.wait(0.05)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)


def net_rx_per_cpu() -> str:
    """NET_RX softirqs per CPU so far (/proc/softirqs): where the storm runs."""
    with open("/proc/softirqs") as f:
        return next((" ".join(line.split()[1:]) for line in f if line.split()[:1] == ["NET_RX:"]),
                    "?")


def rx_packets(lab: Lab, port: str) -> int:
    return lab.link_stats(lab.bridge_ns, port)["rx_packets"]


# The storm and everything that patches kernel text run on one vCPU.
#
# Why: under QEMU's multi-threaded TCG (the lane's VM, no KVM) the 6.1 guest
# panics (NULL call, RIP 0, from br_handle_frame_finish() at its calls of
# br_flood() and br_pass_frame_up(), argument registers intact) when ftrace
# rewrites the fentry call site of a function that the other vCPU is
# executing at that moment: arm_kprobe_ftrace() -> ftrace_replace_code() ->
# text_poke_bp() patches the `call __fentry__` nop at br_flood+0 and
# br_pass_frame_up+0 while ksoftirqd on the other vCPU runs them ~50,000
# times a second. The lane saw it in 3 of 15 unpinned runs (2 of 5, then 1 of
# 10); where the console marks place it, 22 ms after brtrace armed its first
# kprobe (~20 s into the storm: its compile), not at the loop's break. It is
# not brtrace's: tests/vm/ftrace_storm_repro.py (tracefs kprobes on those two
# functions, enabled and disabled during a storm, no BPF) panics the guest
# within seconds every time; the same kprobes on a function the storm never
# calls (br_ioctl_stub) do not (457 cycles), nor do they with single-threaded
# TCG (209 cycles) or with the storm and the writer on the same vCPU (543
# cycles). Other patching the other vCPU runs through has wedged it instead
# (ksoftirqd stuck in one softirq for minutes): the function tracer on the
# same two functions, and once brtrace with BRTRACE_AVOID=kprobe (its raw
# tracepoints' static keys and calls) in 1 of 3 runs.
#
# A veth storm stays on the CPU whose backlog it started in (veth_xmit() ->
# __netif_rx() queues to the current CPU), so the seed's sender, and brtrace
# with its loader child, are pinned to that one CPU: text_poke_bp() then never
# races a vCPU executing the site (8 of 8 lane runs passed so; the console
# marks show the other CPU's NET_RX count unchanged while brtrace attaches).
# brtrace itself is unchanged.
STORM_CPU = 0


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    """Two bridges cabled twice, STP off, one broadcast going round both ways
    for ever; brtrace started once the storm runs, stopped after the loop is
    broken. Hands back (lab, link ports, stopped brtrace)."""
    lab = Lab(prefix=STORM_PREFIX, hosts=1, mac_base=STORM_MAC_BASE)
    tracer = None
    sites = FtraceSites()
    affinity = os.sched_getaffinity(0)
    try:
        lab.build()
        loop = lab.add_peer_bridge_loop(links=2, stp=False, hold=STORM_HOLD)
        links = sorted(p for p, _peer in loop.links)
        h1 = lab.host(1)
        # Children inherit it: the seed's sender, brtrace and its loader child
        # (see STORM_CPU).
        os.sched_setaffinity(0, {STORM_CPU})
        send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"storm"), 1)
        time.sleep(STORM_LEAD_S)
        before = {p: rx_packets(lab, p) for p in links}
        time.sleep(0.2)
        running = {p: rx_packets(lab, p) - before[p] for p in links}
        assert all(n > 0 for n in running.values()), f"no storm before brtrace: {running}"
        mark(f"storm running, starting brtrace; NET_RX per CPU {net_rx_per_cpu()}")
        tracer = Tracer(tmp_path_factory.mktemp("brtvs"), "loops", "--bridge", lab.bridge,
                        "--netns", lab.bridge_ns, "--interval", str(INTERVAL), "--duration", "300",
                        start_timeout=STORM_START_TIMEOUT)
        mark(f"brtrace attached ({tracer.startup:.1f} s); NET_RX per CPU {net_rx_per_cpu()}")
        time.sleep(STORM_WATCH_S)
        # The storm must still run: the watchdog had not ended it.
        assert loop.watchdog is not None and loop.watchdog.poll() is None, \
            f"the loop's watchdog fired (hold {STORM_HOLD} s) before brtrace watched it"
        assert not loop.broken
        mark("breaking the loop")
        lab.break_loop()        # bounded: the test ends the storm itself
        mark("loop broken, stopping brtrace")
        tracer.stop(settle=1.2, timeout=CMD_TIMEOUT)
        mark("brtrace stopped")
        time.sleep(0.3)
        sites.stop()
        yield lab, links, tracer
    finally:
        sites.stop()
        if tracer is not None and tracer.proc.poll() is None:
            tracer.kill()
        os.sched_setaffinity(0, affinity)
        lab.cleanup()


def verdicts(t) -> list:
    """Per interval (`findings_now`): the l2_loop verdicts as (kind, ports, culprit_ports)."""
    return [(r["at_s"], [(f["verdict"], tuple(f["ports"]), tuple(f["culprit_ports"] or ()))
                         for f in r["findings"] if f["type"] == "l2_loop"])
            for r in t.kind("findings_now")]


def test_storm_started_before_brtrace_is_a_loop_between_the_links(storm):
    lab, links, t = storm
    want = ("loop_between_ports", tuple(links), tuple(links))
    final = only(t.findings("l2_loop"))
    assert (final["evidence"]["kind"], final["ports"], final["culprit_ports"]) == \
        ("loop_between_ports", links, links), final
    assert set(final["evidence"]["per_port"]) == set(links), final
    # Every interval that had a verdict had this one, and some did.
    per_interval = verdicts(t)
    assert per_interval, "no findings_now records"
    seen = [(at, v) for at, v in per_interval if v]
    assert seen, per_interval
    assert all(v == [want] for _at, v in seen), seen
    # No other port is ever named: not the host's, not the bridge.
    assert {p for f in t.findings("l2_loop") for p in f["ports"] + f["culprit_ports"]} == set(links)
    print(f"storm: {final['evidence']['frames_back']} copies back, "
          f"{final['evidence']['copies_per_frame']} per frame, verdict in "
          f"{len(seen)}/{len(per_interval)} intervals, brtrace attached in {t.startup:.1f} s; "
          f"per port {final['evidence']['per_port']}")


def test_storm_decisions_in_kprobe_mode(storm):
    """The kprobes see the bridge flood the circulating broadcast from both
    links, and nothing refused; the host sent nothing while brtrace ran."""
    lab, links, t = storm
    s = only(t.kind("summary"))
    assert s["mode"] == "kprobe" and s["probes"]["forward"] == KPROBE_FORWARD, s
    assert t.proc.returncode == 0, t.stderr
    counters = t.ports()
    for p in links:
        assert counters[p]["decided_flood"] > 0, (p, counters[p])
        assert counters[p]["decided_same_port"] == counters[p]["decided_forward"] == 0, counters[p]
    assert all(c.get("decided_not_forwarding", 0) == 0 for c in counters.values()), counters
    host = counters[lab.host(1).port]
    assert host["decided_flood"] == host["decided_forward"] == 0, host
    assert host["returns"] + host["reentries"] + host["host_repeats"] == 0, host
