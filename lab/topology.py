"""The lab's topology builder: small, disposable bridges in network namespaces,
broken on purpose.

Why this exists: brtrace claims "this frame was dropped on this port for this
reason".  The only honest way to test that is to build a bridge whose faults we
caused ourselves, send a known number of frames, and compare.  This module is
that lab: the demo (`scripts/demo`) and the integration tests use it.

Design rules, each for a reason:

* Everything lives in namespaces named ``<prefix>-...`` so that the root
  namespace (and other users of the machine) are never touched, and cleanup
  is "delete the namespaces we created".
* Addresses are deterministic and exposed (:class:`Host`), so a test knows the
  ground truth (which MAC sits behind which port) without asking the kernel.
* Every traffic generator is bounded in frames *and* seconds; every child
  process is ours, tracked by PID, and exits on its own after a bounded time.
* Only the standard library and the ``ip``/``bridge``/``nft`` tools: the lab
  must not depend on the code it is testing (pyroute2, bcc).

What each fault looks like at ``skb:kfree_skb`` on a 6.18 kernel is recorded
next to the helper that reproduces it (see ``FAULTS`` below).
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from lab.proc import (LabError, _kill_pid, _set_pdeathsig, child_argv, netns_exists, netns_inode,
                      netns_path, ns_argv, run)

# Ground truth measured on kernel 6.18 with tracefs skb:kfree_skb (K=50 frames
# each, exactly K events unless noted).  fault -> (reason, location symbol).
# Note the symbols: drops done by a tail call are reported at the *caller*
# (br_forward's kfree_skb shows as br_handle_frame_finish), and nf_tables frees
# dropped packets itself (nft_do_chain, not nf_hook_slow).
FAULTS: Dict[str, tuple] = {
    "same_port": ("NOT_SPECIFIED", "br_handle_frame_finish"),   # +0x380, via br_forward
    "stp_blocking": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_listening": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_disabled": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame"),
    "stp_learning": ("BRIDGE_INGRESS_STP_STATE", "br_handle_frame_finish"),  # +0x190
    "mcast_source": ("MAC_INVALID_SOURCE", "br_handle_frame"),
    "nft_drop": ("NETFILTER_DROP", "nft_do_chain"),             # forward and input hooks
    "tap_stalled": ("FULL_RING", "tun_net_xmit"),               # exactly K - txqueuelen
    "tap_no_carrier_unicast": ("NOT_SPECIFIED", "br_handle_frame_finish"),
    "egress_mtu": ("NOT_SPECIFIED", "br_dev_queue_push_xmit"),  # non-IP frames
    "egress_mtu_ipv4_df": ("NOT_SPECIFIED", "br_nf_dev_queue_xmit"),  # br_netfilter path
    "veth_mtu": ("NOT_SPECIFIED", "__dev_forward_skb2"),
}


@dataclass
class Host:
    """One host namespace wired to the bridge by a veth pair: the ground truth."""
    index: int
    netns: str      # e.g. brtl-h1
    ifname: str     # host side, always eth0
    port: str       # bridge side, e.g. vnet0
    mac: str
    ip: str         # without prefix length


@dataclass
class TapPort:
    """A tap enslaved to the bridge, and the PID of its reader if we started one."""
    name: str
    reader: str
    proc: Optional[subprocess.Popen] = None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None


@dataclass
class PeerLoop:
    """A second bridge joined to the lab bridge by several veth pairs: the ground truth.

    links[i] is (lab-bridge port, peer-bridge port) of link i+1.  With STP,
    `blocking` and `forwarding` list (netns, port) of the loop ports as
    measured once convergence finished (`converge_s` after the links came
    up), so a test can read counters with Lab.link_stats(netns, port)
    without asking which side won.  `root` is "lab" or "peer": which bridge
    we made STP root (the blocking port is then on the *other* bridge).
    """
    netns: str                         # <prefix>-peer
    bridge: str                        # br-peer
    mac: str
    links: List[tuple]                 # [(lab_port, peer_port), ...]
    stp: bool
    root: Optional[str] = None
    converge_s: Optional[float] = None
    states: Dict[tuple, str] = field(default_factory=dict)   # (netns, port) -> state
    watchdog: Optional[subprocess.Popen] = None
    broken: List[str] = field(default_factory=list)          # lab ports deleted

    @property
    def blocking(self) -> List[tuple]:
        return [k for k, st in self.states.items() if st == "blocking"]

    @property
    def forwarding(self) -> List[tuple]:
        return [k for k, st in self.states.items() if st == "forwarding"]


@dataclass
class SlowPeerLoop(PeerLoop):
    """A peer bridge joined to the lab bridge by one fast link and one slow one.

    links[0] is the relayed link (lab tap <prefix>s1, peer tap s1p), links[1]
    the veth pair (<prefix>l1, p1).  The order is chosen so that break_loop()
    (keep=1) and the watchdog delete the *veth*: the storm stops and the relay
    keeps running undisturbed until stop_relay() or cleanup.  `relay` is our
    child that copies frames between the two taps, holding each `delay` s;
    `relay_stats` is what it reported when stopped: relayed (= a2b + b2a),
    a2b (lab tap -> peer tap), b2a (peer tap -> lab tap), failed (writes the
    kernel refused), dropped (queue full).
    """
    delay: float = 0.0
    relay_link: tuple = ()                                   # (lab tap, peer tap)
    relay: Optional[subprocess.Popen] = None
    relay_stats: Dict[str, int] = field(default_factory=dict)


class Lab:
    """A bridge namespace with N host namespaces, built on enter, removed on exit.

    Layout (prefix "brtl", bridge "br-int", hosts=2)::

        brtl-h1:eth0 <-veth-> vnet0 --+
                                      br-int   (in brtl-br)
        brtl-h2:eth0 <-veth-> vnet1 --+

    Host i (1-based) has MAC 02:b7:00:00:00:0i and IP 10.77.0.i/24; the bridge
    has MAC 02:b7:00:00:00:fe and no IP (it only switches).  IPv6 is disabled
    in every lab namespace by default, because DAD/MLD/RS chatter otherwise
    adds floods and drops that make exact counts impossible; for the same
    reason multicast snooping is off (see build()).
    """

    def __init__(self, prefix: str = "brtl", hosts: int = 2, bridge: str = "br-int",
                 port_prefix: str = "vnet", stp: bool = False, ipv6: bool = False,
                 mac_base: str = "02:b7:00:00:00", subnet: str = "10.77.0",
                 mcast_snooping: bool = False):
        self.prefix = prefix
        self.bridge = bridge
        self.bridge_ns = "%s-br" % prefix
        self.bridge_mac = "%s:fe" % mac_base
        self.n_hosts = hosts
        self.port_prefix = port_prefix
        self.stp = stp
        self.ipv6 = ipv6
        self.mac_base = mac_base
        self.subnet = subnet
        self.mcast_snooping = mcast_snooping
        self.hosts: List[Host] = []
        self.taps: Dict[str, TapPort] = {}
        self._namespaces: List[str] = []   # in creation order; cleanup deletes these
        self._children: List[subprocess.Popen] = []
        self._nft_table: Optional[str] = None
        self.peer_loop: Optional[PeerLoop] = None

    # ---- context manager ------------------------------------------------
    def __enter__(self) -> "Lab":
        try:
            self.build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---- building -------------------------------------------------------
    def ip(self, netns: Optional[str], *args: str, check: bool = True):
        """`ip -n NS ARGS`: the one place lab topology commands go through."""
        return run(["ip"] + (["-n", netns] if netns else []) + list(args), check=check)

    def add_netns(self, name: str) -> str:
        """Create a namespace, remember it for cleanup, bring lo up, quiet IPv6."""
        if netns_exists(name):
            raise LabError("namespace %s already exists (stale lab? run cleanup)" % name)
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        if not self.ipv6:
            self.sysctl(name, "net.ipv6.conf.all.disable_ipv6", "1")
            self.sysctl(name, "net.ipv6.conf.default.disable_ipv6", "1")
        return name

    def sysctl(self, netns: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl (writes /proc/sys inside NS)."""
        run(ns_argv(netns, ["sysctl", "-q", "-w", "%s=%s" % (key, value)]))

    def host_mac(self, i: int) -> str:
        return "%s:%02x" % (self.mac_base, i)

    def build(self) -> None:
        """Create bridge namespace, bridge, and every host; all links up."""
        self.add_netns(self.bridge_ns)
        stp = self._stp_args(self.stp)
        # Snooping off by default: with it on, the bridge joins 224.0.0.106
        # (multicast router discovery) and floods an IGMP report to every
        # port about 0-1 s after it comes up.  Measured: that one frame takes
        # a slot in a stalled tap's ring and is dropped by each host's IP
        # stack (ip_rcv_finish_core), spoiling exact drop counts.
        snoop = ["mcast_snooping", "1" if self.mcast_snooping else "0"]
        self.ip(self.bridge_ns, "link", "add", self.bridge, "address", self.bridge_mac,
                "type", "bridge", *stp, *snoop)
        self.ip(self.bridge_ns, "link", "set", self.bridge, "up")
        for i in range(1, self.n_hosts + 1):
            self.add_host(i)
        if self.stp:
            self.wait_stp_settled()

    @staticmethod
    def _stp_args(on: bool) -> List[str]:
        """`ip link add ... type bridge` arguments for STP on or off.

        With STP on, use the kernel's minimum timers (2 s forward delay,
        1 s hello) so a lab converges in about 4 s instead of 30.
        """
        if not on:
            return ["stp_state", "0"]
        return ["stp_state", "1", "forward_delay", "200", "hello_time", "100",
                "max_age", "600"]

    def add_host(self, i: int) -> Host:
        """Host namespace <prefix>-hI with eth0, wired to bridge port <port_prefix>{I-1}."""
        host = Host(index=i, netns=self.add_netns("%s-h%d" % (self.prefix, i)),
                    ifname="eth0", port="%s%d" % (self.port_prefix, i - 1),
                    mac=self.host_mac(i), ip="%s.%d" % (self.subnet, i))
        self.ip(self.bridge_ns, "link", "add", host.port, "type", "veth",
                "peer", "name", host.ifname, "netns", host.netns)
        self.ip(host.netns, "link", "set", host.ifname, "address", host.mac)
        self.ip(host.netns, "addr", "add", host.ip + "/24", "dev", host.ifname)
        self.ip(host.netns, "link", "set", host.ifname, "up")
        self.ip(self.bridge_ns, "link", "set", host.port, "master", self.bridge)
        self.ip(self.bridge_ns, "link", "set", host.port, "up")
        self.hosts.append(host)
        return host

    def host(self, i: int) -> Host:
        """Host by 1-based index."""
        return self.hosts[i - 1]

    # ---- faults and knobs -----------------------------------------------
    def add_tap(self, name: str, reader: str = "none", hold: float = 120.0,
                txqueuelen: Optional[int] = None, max_frames: int = 100000,
                delay: float = 0.0, comm: Optional[str] = None) -> TapPort:
        """Add tap NAME to the bridge.  reader="none": nobody opens it (NO-CARRIER,
        the bridge treats the port as disabled).  reader="stalled": a child of
        ours attaches and never reads, so frames pile up in the tap's ring and
        then drop.  reader="reflect": a child of ours reads every frame and
        writes it straight back into the tap, unchanged (after `delay` s), like
        a tinc/OpenVPN tap whose far end loops: each frame the bridge sends
        out of the tap comes back in on it, with a source MAC the bridge has
        already learned elsewhere (or owns: then the kernel logs "received
        packet on NAME with own address as source address").  The reflector
        stops after `max_frames` frames or `hold` seconds, whichever first;
        stop_tap_reader() returns how many it reflected.  `comm` renames the
        reflector's process (e.g. "tincd"), as a VPN daemon would be seen in
        /proc.  Any child exits after `hold` seconds or on cleanup.
        """
        if reader not in ("none", "stalled", "reflect"):
            raise ValueError("reader must be 'none', 'stalled' or 'reflect'")
        if max_frames < 0 or delay < 0:
            raise ValueError("max_frames and delay must be >= 0")
        self.ip(self.bridge_ns, "tuntap", "add", "dev", name, "mode", "tap")
        tap = TapPort(name=name, reader=reader)
        self.taps[name] = tap
        if txqueuelen is not None:
            self.ip(self.bridge_ns, "link", "set", name, "txqueuelen", str(txqueuelen))
        self.ip(self.bridge_ns, "link", "set", name, "master", self.bridge)
        self.ip(self.bridge_ns, "link", "set", name, "up")
        if reader != "none":
            self.start_tap_reader(name, reader, hold, max_frames, delay, comm)
        return tap

    def start_tap_reader(self, name: str, reader: str, hold: float = 120.0,
                         max_frames: int = 100000, delay: float = 0.0,
                         comm: Optional[str] = None) -> None:
        """Give tap NAME (added with reader "none", or stopped) a "stalled" or
        "reflect" reader, as add_tap() describes: the port gets its carrier now."""
        tap = self.taps[name]
        if tap.proc is not None:
            raise LabError("tap %s already has a reader" % name)
        if reader == "stalled":
            tap.proc = self._start_tap_child(name, "tap_stalled.py", [repr(hold)])
        elif reader == "reflect":
            tap.proc = self._start_tap_child(name, "tap_reflector.py", [repr(hold), str(max_frames),
                                                                repr(delay)] + ([comm] if comm else []))
        else:
            raise ValueError("reader must be 'stalled' or 'reflect'")
        tap.reader = reader

    def _start_tap_child(self, name: str, script: str, args: Sequence[str]) -> subprocess.Popen:
        """Start a child that attaches to tap NAME; return once it says "ready".

        Waiting matters: until the child holds the fd the tap has no carrier
        and the bridge port is disabled, so frames sent earlier would not
        reach it at all.
        """
        argv = ns_argv(self.bridge_ns, child_argv(script, name, *args))
        return self._start_ready_child(argv, "tap child for %s" % name)

    def _start_ready_child(self, argv: Sequence[str], what: str) -> subprocess.Popen:
        """Start a child of ours (tracked for cleanup) and wait, bounded, for its
        "ready" line; kill it by PID and raise with its stderr otherwise."""
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=_set_pdeathsig)
        self._children.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        line = proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            _kill_pid(proc)
            raise LabError("%s did not start: %s" % (
                what, proc.stderr.read().decode(errors="replace").strip()))
        return proc

    def _stop_child(self, proc: subprocess.Popen, timeout: float) -> str:
        """Stop a child of ours by PID and return what it printed (its final
        count line): the reflector's and the relay's way of reporting."""
        _kill_pid(proc, grace=timeout)
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
        if proc in self._children:
            self._children.remove(proc)
        return out

    def stop_tap_reader(self, name: str, timeout: float = 5.0) -> Optional[int]:
        """Stop tap NAME's child (by PID) and return how many frames it reflected.

        None for readers that do not count (stalled) or if the count was lost.
        The tap stays on the bridge, now without carrier (reader "none").
        """
        tap = self.taps[name]
        proc, tap.proc = tap.proc, None
        if proc is None:
            return None
        tap.reader = "none"
        fields = self._stop_child(proc, timeout).split()
        if "reflected" in fields:
            return int(fields[fields.index("reflected") + 1])
        return None

    STP_STATES = {0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}

    def set_stp_state(self, port: str, state: int) -> None:
        """Force a port's STP state with `bridge link set ... state N`; needs STP off.

        Measured on 6.18: 0, 1 and 2 stick, but 4 (blocking) does not: with STP
        off every port is "designated", so the kernel's port-state selection
        moves a blocking port straight to forwarding.  We check and raise
        rather than let a test believe the port blocks.  For a real blocking
        port use Lab(stp=True) and add_loop().
        """
        run(["bridge", "-n", self.bridge_ns, "link", "set", "dev", port, "state", str(state)])
        actual = self.stp_state(port)
        if actual != self.STP_STATES[state]:
            raise LabError("port %s is %s after setting state %d (%s); with STP off the "
                           "kernel does not keep 'blocking': use Lab(stp=True).add_loop()"
                           % (port, actual, state, self.STP_STATES[state]))

    def stp_state(self, port: str) -> str:
        """Current STP state name of a port, as `bridge -j link` reports it."""
        out = run(["bridge", "-n", self.bridge_ns, "-j", "link", "show", "dev", port]).stdout
        return json.loads(out)[0].get("state", "?")

    def add_loop(self, a: Optional[str] = None, b: Optional[str] = None,
                 settle: float = 15.0) -> tuple:
        """Wire a veth pair with BOTH ends on the bridge: a layer-2 loop.

        Only allowed with Lab(stp=True): kernel STP then blocks one end, which
        is the honest way to get a port in state "blocking".  Flooded frames
        leave through the forwarding end and are dropped entering the
        blocking end.  Waits (bounded by `settle` s) until no port is in
        listening/learning; returns (forwarding_end, blocking_end).
        """
        if not self.stp:
            raise LabError("add_loop() without STP would make a broadcast storm")
        a = a or self.prefix + "loopa"
        b = b or self.prefix + "loopb"
        self.ip(self.bridge_ns, "link", "add", a, "type", "veth", "peer", "name", b)
        for end in (a, b):
            self.ip(self.bridge_ns, "link", "set", end, "master", self.bridge)
            self.ip(self.bridge_ns, "link", "set", end, "up")
        self.wait_stp_settled(settle)
        states = {end: self.stp_state(end) for end in (a, b)}
        blocking = [e for e, st in states.items() if st == "blocking"]
        if len(blocking) != 1:
            raise LabError("loop did not converge to one blocking end: %r" % states)
        other = b if blocking[0] == a else a
        return other, blocking[0]

    def wait_stp_settled(self, timeout: float = 15.0) -> None:
        """Poll until no bridge port is listening or learning (bounded)."""
        end = time.monotonic() + timeout
        while True:
            out = run(["bridge", "-n", self.bridge_ns, "-j", "link"]).stdout
            states = [p.get("state") for p in json.loads(out)]
            if not any(st in ("listening", "learning") for st in states):
                return
            if time.monotonic() > end:
                raise LabError("STP still converging after %.0fs: %r" % (timeout, states))
            time.sleep(0.25)

    def stp_states(self, netns: str) -> Dict[str, str]:
        """port -> STP state name for every port of the bridge(s) in NETNS."""
        out = run(["bridge", "-n", netns, "-j", "link"]).stdout
        return {p["ifname"]: p.get("state", "?") for p in json.loads(out or b"[]")}

    # ---- a second bridge, joined to ours twice: a real layer-2 loop -------
    PEER_BRIDGE = "br-peer"

    def add_peer_bridge_loop(self, links: int = 2, stp: bool = False, root: str = "peer",
                             hold: float = 60.0, settle: float = 20.0) -> PeerLoop:
        """Add bridge br-peer in namespace <prefix>-peer, joined to the lab bridge by
        `links` veth pairs (<prefix>l1 <-> p1, <prefix>l2 <-> p2, ...), all up.

        Why a second bridge rather than add_loop(): two switches cabled twice
        is how real loops happen, and it lets the redundant port block on
        either side.  stp must equal Lab(stp=...): the lab bridge keeps its own
        setting, and a half-STP loop would quietly not storm.

        stp=False: nothing blocks.  Lab namespaces are silent (no IPv6, no
        snooping), so the loop is quiet until someone floods a frame; then a
        single broadcast circulates forever (links=2: one copy each way, each
        lap also delivered to every host; links>=3 multiplies it every hop).
        End it with break_loop().  As a bound, a watchdog child of ours does
        the same after `hold` seconds (its clock starts before the links come
        up), and cleanup deletes the namespaces.

        stp=True: STP on br-peer too, with the lab's minimum timers; the
        bridge named by `root` ("peer" or "lab") is made STP root through its
        priority, so the blocking ports (links-1 of them) end up on the other
        bridge.  Waits, bounded by `settle` seconds, until no port of either
        bridge is listening/learning and exactly links-1 loop ports block.
        The watchdog runs here too (a deleted link is a topology change, so
        keep `hold` longer than the test).

        Returns the PeerLoop (also kept as self.peer_loop): links, per-port
        states, which (netns, port) block/forward, convergence time.
        """
        if links < 2:
            raise ValueError("a loop needs links >= 2")
        if root not in ("lab", "peer"):
            raise ValueError("root must be 'lab' or 'peer'")
        if bool(stp) != bool(self.stp):
            raise LabError("add_peer_bridge_loop(stp=%s) on Lab(stp=%s): both bridges must "
                           "agree (build the Lab with stp=%s)" % (stp, self.stp, stp))
        loop = self._new_peer_bridge(PeerLoop, stp, root)
        netns = loop.netns
        for i in range(1, links + 1):
            loop.links.append(self._add_peer_veth(loop, "%sl%d" % (self.prefix, i), "p%d" % i))
        self._start_loop_watchdog(loop, hold)
        start = time.monotonic()
        for lab_port, peer_port in loop.links:
            self.ip(self.bridge_ns, "link", "set", lab_port, "up")
            self.ip(netns, "link", "set", peer_port, "up")
        if stp:
            self._wait_peer_loop_converged(loop, start, settle)
        else:
            self.peer_loop_states()
        return loop

    def _new_peer_bridge(self, cls: type, stp: bool, root: str, **extra) -> PeerLoop:
        """Namespace <prefix>-peer with bridge br-peer up in it, as a `cls`
        (PeerLoop or SlowPeerLoop) kept in self.peer_loop; no links yet."""
        if self.peer_loop is not None:
            raise LabError("this lab already has a peer bridge loop")
        netns = self.add_netns("%s-peer" % self.prefix)
        loop = cls(netns=netns, bridge=self.PEER_BRIDGE, mac="%s:fd" % self.mac_base,
                   links=[], stp=bool(stp), root=root if stp else None, **extra)
        self.peer_loop = loop
        args = self._stp_args(bool(stp))
        if stp:
            # Bridge id = priority then MAC; the lab bridge keeps the default
            # 32768, so 4096 makes the peer root and 61440 makes it lose.
            args += ["priority", "4096" if root == "peer" else "61440"]
        self.ip(netns, "link", "add", loop.bridge, "address", loop.mac, "type", "bridge",
                *args, "mcast_snooping", "0")
        self.ip(netns, "link", "set", loop.bridge, "up")
        return loop

    def _add_peer_veth(self, loop: PeerLoop, lab_port: str, peer_port: str) -> tuple:
        """Veth LAB_PORT (on the lab bridge) <-> PEER_PORT (on br-peer), both
        still down: the caller brings links up once its watchdog runs."""
        self.ip(self.bridge_ns, "link", "add", lab_port, "type", "veth",
                "peer", "name", peer_port, "netns", loop.netns)
        self.ip(self.bridge_ns, "link", "set", lab_port, "master", self.bridge)
        self.ip(loop.netns, "link", "set", peer_port, "master", loop.bridge)
        return lab_port, peer_port

    def _start_loop_watchdog(self, loop: PeerLoop, hold: float) -> None:
        """Child of ours that deletes every loop link but the first after `hold` s."""
        argv = ns_argv(self.bridge_ns, child_argv("watchdog.py", repr(hold),
                                                  *[lab for lab, _ in loop.links[1:]]))
        loop.watchdog = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        self._children.append(loop.watchdog)

    # ---- the same, with one link ~`delay` s long: a slow layer-2 loop ----
    RELAY_QUEUE_LIMIT = 10000   # frames held per direction before the relay drops

    def add_slow_peer_loop(self, delay: float = 0.3, hold: float = 60.0,
                           max_frames: int = 10000) -> SlowPeerLoop:
        """Add bridge br-peer in <prefix>-peer (as add_peer_bridge_loop does),
        joined to the lab bridge by one veth pair (<prefix>l1 <-> p1, fast) and
        one slow link: tap <prefix>s1 on the lab bridge, tap s1p on br-peer,
        and a relay child of ours copying frames between them, each held
        `delay` seconds.  STP is off on both bridges (needs Lab(stp=False)).

        Why: a loop whose round trip is ~`delay` instead of microseconds, so
        a single broadcast circulates at a countable rate (about 1/delay
        frames a second per port and direction) rather than as a storm, as
        when two sites are bridged over a slow VPN *and* a backup link.  This
        kernel has no netem, hence the userspace relay.

        Bounds: the relay stops after `hold` s or `max_frames` frames
        relayed; a watchdog deletes the veth after `hold` s (clock started
        before the links come up); cleanup kills both and deletes the
        namespaces.  break_loop() deletes the veth (links[1]): the storm stops
        within `delay` s, the relay keeps running; stop_relay() stops it and
        returns how many frames it relayed.

        Returns the SlowPeerLoop (also self.peer_loop): links ==
        [(<prefix>s1, s1p), (<prefix>l1, p1)], relay_link, delay, relay.
        """
        if delay < 0 or hold <= 0 or max_frames < 0:
            raise ValueError("need delay >= 0, hold > 0 and max_frames >= 0")
        if self.stp:
            raise LabError("add_slow_peer_loop() needs Lab(stp=False): it is a loop on purpose")
        lab_tap, peer_tap = self.prefix + "s1", "s1p"
        loop = self._new_peer_bridge(SlowPeerLoop, False, "peer", delay=delay,
                                     relay_link=(lab_tap, peer_tap))
        # The taps are admin-up now but have no carrier (the bridge port is
        # "disabled") until the relay opens them; a tap must be up before
        # anyone writes into it (else EIO).
        for netns, tap, bridge in ((self.bridge_ns, lab_tap, self.bridge),
                                   (loop.netns, peer_tap, loop.bridge)):
            self.ip(netns, "tuntap", "add", "dev", tap, "mode", "tap")
            self.ip(netns, "link", "set", tap, "master", bridge)
            self.ip(netns, "link", "set", tap, "up")
        loop.links.append(loop.relay_link)
        loop.links.append(self._add_peer_veth(loop, "%sl1" % self.prefix, "p1"))
        self._start_loop_watchdog(loop, hold)
        argv = ns_argv(self.bridge_ns, child_argv("relay.py", lab_tap,
                                                  netns_path(loop.netns), peer_tap, repr(hold),
                                                  str(max_frames), repr(delay),
                                                  str(self.RELAY_QUEUE_LIMIT)))
        loop.relay = self._start_ready_child(argv, "relay %s <-> %s" % (lab_tap, peer_tap))
        # The veth comes up last: only now is the loop closed.
        lab_port, peer_port = loop.links[1]
        self.ip(self.bridge_ns, "link", "set", lab_port, "up")
        self.ip(loop.netns, "link", "set", peer_port, "up")
        self.peer_loop_states()
        return loop

    def stop_relay(self, timeout: float = 5.0) -> Optional[int]:
        """Stop the slow loop's relay (by PID); return how many frames it relayed.

        The per-direction counts land in peer_loop.relay_stats.  None if there
        is no running relay or its report was lost.  Both taps lose carrier.
        """
        loop = self.peer_loop
        proc = getattr(loop, "relay", None)
        if proc is None:
            return None
        loop.relay = None
        fields = self._stop_child(proc, timeout).split()
        # "relayed N a2b N b2a N failed N dropped N [gone TAP]": key/value pairs.
        stats = {k: int(v) for k, v in zip(fields[::2], fields[1::2]) if v.isdigit()}
        loop.relay_stats = stats
        return stats.get("relayed")

    def _wait_peer_loop_converged(self, loop: PeerLoop, start: float, settle: float) -> None:
        """Poll both bridges until STP settled with links-1 blocking loop ports."""
        end = start + settle
        while True:
            lab, peer = self.stp_states(self.bridge_ns), self.stp_states(loop.netns)
            states = self._fill_loop_states(loop, lab, peer)
            busy = [p for p, st in list(lab.items()) + list(peer.items())
                    if st in ("listening", "learning")]
            if not busy and len(loop.blocking) == len(loop.links) - 1 \
                    and len(loop.forwarding) == len(loop.links) + 1:
                loop.converge_s = time.monotonic() - start
                return
            if time.monotonic() > end:
                raise LabError("peer loop not converged after %.0fs: %r" % (
                    settle, {"%s:%s" % k: v for k, v in states.items()}))
            time.sleep(0.1)

    def peer_loop_states(self) -> Dict[tuple, str]:
        """Re-read the STP state of every remaining loop port: (netns, port) -> state."""
        loop = self.peer_loop
        if loop is None:
            raise LabError("no peer bridge loop (call add_peer_bridge_loop first)")
        return self._fill_loop_states(loop, self.stp_states(self.bridge_ns),
                                      self.stp_states(loop.netns))

    def _fill_loop_states(self, loop: PeerLoop, lab: Dict[str, str],
                          peer: Dict[str, str]) -> Dict[tuple, str]:
        """Set loop.states from one reading of each bridge's port states."""
        loop.states = {}
        for lab_port, peer_port in loop.links:
            if lab_port in loop.broken:
                continue
            loop.states[(self.bridge_ns, lab_port)] = lab.get(lab_port, "?")
            loop.states[(loop.netns, peer_port)] = peer.get(peer_port, "?")
        return loop.states

    def break_loop(self, keep: int = 1) -> List[str]:
        """Delete every loop link except link number `keep` (1-based): the storm stops.

        With links=2 this deletes exactly one veth pair.  Deleting the lab end
        removes its peer in <prefix>-peer too.  Stops the watchdog (by PID),
        since nothing is left for it to do.  Returns the deleted lab ports.
        """
        loop = self.peer_loop
        if loop is None:
            raise LabError("no peer bridge loop to break")
        if not 1 <= keep <= len(loop.links):
            raise ValueError("keep must be 1..%d" % len(loop.links))
        victims = [lab for i, (lab, _) in enumerate(loop.links, 1)
                   if i != keep and lab not in loop.broken]
        # Down first, delete after: the bridge disables a port that goes
        # down, so the storm stops before the port is torn out from under
        # frames in flight. (Deleting a port in the middle of a storm crashed
        # Debian's 6.1 kernel once in the VM lane, a NULL call from
        # br_handle_frame_finish() in softirq.)
        for dev in victims:
            self.ip(self.bridge_ns, "link", "set", "dev", dev, "down", check=False)
        time.sleep(0.1)
        for dev in victims:
            # check=False: the watchdog may have beaten us to it.
            self.ip(self.bridge_ns, "link", "del", dev, check=False)
            loop.broken.append(dev)
        if loop.watchdog is not None:
            _kill_pid(loop.watchdog)
            if loop.watchdog in self._children:
                self._children.remove(loop.watchdog)
            loop.watchdog = None
        self.peer_loop_states()
        return victims

    def set_mtu(self, netns: str, dev: str, mtu: int) -> None:
        self.ip(netns, "link", "set", dev, "mtu", str(mtu))

    def set_bridge_mtu(self, mtu: int) -> None:
        """Set the bridge's MTU explicitly (this stops it auto-following its ports)."""
        self.set_mtu(self.bridge_ns, self.bridge, mtu)

    def add_fdb(self, mac: str, port: str) -> None:
        """Static FDB entry: frames to MAC go only to PORT (no flooding)."""
        run(["bridge", "-n", self.bridge_ns, "fdb", "replace", mac, "dev", port,
             "master", "static"])

    def nft_drop(self, hook: str = "forward", match: str = "udp dport 9999",
                 table: Optional[str] = None) -> None:
        """Add a bridge-family nftables rule `MATCH drop` on HOOK in the bridge ns."""
        table = table or self.prefix.replace("-", "_")
        chain = "lab_" + hook
        script = ("table bridge %s {\n chain %s {\n  type filter hook %s priority 0; policy accept;\n"
                  "  %s counter drop\n }\n}\n") % (table, chain, hook, match)
        run(ns_argv(self.bridge_ns, ["nft", "-f", "-"]), input=script.encode())
        self._nft_table = table

    def nft_counters(self) -> str:
        """The lab's nft table listing (rule counters = kernel's own drop count)."""
        if not self._nft_table:
            return ""
        return run(ns_argv(self.bridge_ns, ["nft", "list", "table", "bridge",
                                            self._nft_table])).stdout.decode()

    def link_stats(self, netns: str, dev: str) -> dict:
        """rx/tx packet and drop counters of one device (from `ip -s -j link`)."""
        out = run(["ip", "-n", netns, "-s", "-j", "link", "show", "dev", dev]).stdout
        stats = json.loads(out)[0]["stats64"]
        return {"rx_packets": stats["rx"]["packets"], "rx_dropped": stats["rx"]["dropped"],
                "tx_packets": stats["tx"]["packets"], "tx_dropped": stats["tx"]["dropped"]}

    def netns_inode(self, name: str) -> int:
        return netns_inode(name)

    def bridge_ifindexes(self) -> List[int]:
        """The bridge and its ports, by ifindex in the bridge's namespace."""
        links = json.loads(run(["ip", "-n", self.bridge_ns, "-j", "link", "show"]).stdout)
        return sorted(link["ifindex"] for link in links
                      if link.get("ifname") == self.bridge or link.get("master") == self.bridge)

    # ---- cleanup --------------------------------------------------------
    def cleanup(self) -> None:
        """Kill our children by PID, then delete exactly the namespaces we created.

        Safe to call twice and after a partial build.  Deleting a namespace
        destroys its veths, taps and bridge, and with it any nft table.
        """
        for proc in self._children:
            try:
                _kill_pid(proc)
            except Exception:  # noqa: BLE001 - best effort: clean-up goes on to the next child
                pass
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self._children.clear()
        for tap in self.taps.values():
            self.ip(self.bridge_ns, "link", "del", tap.name, check=False)
        self.taps.clear()
        for name in reversed(self._namespaces):
            if netns_exists(name):
                run(["ip", "netns", "del", name], check=False)
        self._namespaces.clear()
        self.hosts.clear()
        self.peer_loop = None

