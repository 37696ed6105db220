"""A real tinc VPN in switch mode between namespaced "KVM hosts": the 2017 incident, rebuilt.

The incident: a KVM host bridges its VMs through ``br-int``; the tinc VPN's tap
``t3o`` (``Mode = switch``, ``DeviceType = tap``) sits in the same bridge.  In
switch mode tinc delivers every broadcast to every node, so the whole VPN is one
layer-2 segment.  A second path between two nodes (here: a direct veth between
their bridges, STP off) closes a loop through tincd, and a single ARP request
circulates for ever.  Every node then sees the storm on its t3o, MACs move between
ports in the FDBs, and a node whose own frames come back through t3o logs
``br-int: received packet on t3o with own address as source address``.

:mod:`lab.topology` fakes this with a tap reader that writes frames straight back
(``reader="reflect"``).  This module runs the real thing: Debian's tincd 1.0.36,
one daemon per node, so the rates, the CPU cost and the MAC learning of a
genuine VPN can be checked.

Layout (prefix ``brtinc``, nodes=3, gateway=True)::

    brtinc-u:  br-u  (the underlay "internet", 192.0.2.0/24, no IP itself)
                |  n1 ... n3 (veths)
    brtinc-nI: ul0 192.0.2.I  tincd (UDP/TCP 655) -- t3o --+
                                                          br-int (02:c1:00:00:0I:fe)
    brtinc-nIv: eth0 10.88.0.(10+I) 02:c1:00:00:0I:01 <-> vnet0 --+
    brtinc-n1g: eth0 10.88.0.1     02:c1:00:00:01:02 <-> gw0 (node 1 only)

    add_direct_link(1, 2):  brtinc-n1 br-int:dl2 <-veth-> dl1:br-int brtinc-n2

Design rules, each for a reason (the same as lab.topology's):

* Namespaces only, named ``<prefix>-...``: the underlay (192.0.2.0/24,
  documentation space) never touches the root namespace, and cleanup is
  "kill our tincds, delete the namespaces we created, remove our temp dir".
  Namespaces are created through a never-built :class:`lab.topology.Lab`, used
  as the registry, so they get the same treatment (lo up, IPv6 off: no
  DAD/MLD/RS chatter that would spoil exact counts).
* Deterministic names, MACs and addresses, exposed as :class:`TincNode` and
  :class:`Vm`, so tests know the ground truth without asking the kernel.
* Every process is ours and bounded.  tincd runs in the foreground (``-D``)
  under ``timeout HOLD`` (coreutils), started by us with Popen: the wrapper is
  the PID we own, tincd is its only child (PID read from ``--pidfile`` and
  recorded with its start time).  The wrapper ends tincd after ``hold``
  seconds even if the test forgets, and gets SIGTERM if our interpreter dies
  (PR_SET_PDEATHSIG), which it relays to tincd.  Direct links get a watchdog
  child that deletes them after their own ``hold``.
* The storm is seeded by exactly one frame (:meth:`TincMesh.seed_storm`: one
  ARP request from node 1's VM for an unused address, the incident's frame)
  and stopped by :meth:`TincMesh.break_direct_link` or the link's watchdog.
  Without the direct link the VPN alone has no loop: a node's bridge never
  sends a frame back out of t3o, the port it came in on.

tinc facts this relies on (1.0.36, measured here):

* ``tincd -K`` asks for file names only when stdin *and* stdout are ttys; with
  stdin from /dev/null it writes ``rsa_key.priv`` and appends the public key
  to ``hosts/<Name>`` (so ``Name`` must be in tinc.conf first).  2048-bit keys
  take well under a second.
* With both ``-n`` and ``--config`` tincd uses the directory and keeps the
  netname only for its log identity and the scripts' NETNAME.
* tincd runs ``tinc-up`` (with INTERFACE set) after creating the tap and
  before listening; an outgoing ConnectTo that fails is retried after 5 s,
  then later and later, so node 1 is started and listening first.
* Until a peer's UDP key and path MTU are known, tinc forwards packets over
  the TCP meta connection; this works, just slower.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from lab.frames import arp_request
from lab.proc import LabError, _kill_pid, _set_pdeathsig, child_argv, ns_argv, run
from lab.topology import Lab
from lab.traffic import ping, send_frames

__all__ = ["TincMesh", "TincNode", "Vm", "DirectLink", "LabError"]

TINCD = shutil.which("tincd") or "/usr/sbin/tincd"
TAP = "t3o"                    # the incident's interface name
BRIDGE = "br-int"
UNDERLAY_BRIDGE = "br-u"
UNDERLAY_NET = "192.0.2"       # RFC 5737 documentation space: never routed anywhere
VM_NET = "10.88.0"
GATEWAY_IP = VM_NET + ".1"
# An address nobody has: ARP requests for it are never answered, so a seeded
# storm frame stays a broadcast on every lap (the incident's "who-has" flood).
UNUSED_IP = VM_NET + ".250"
MAC_BASE = "02:c1:00:00"       # + node:device (01 VM, 02 gateway, fe bridge)


def _mac(node: int, dev: int) -> str:
    return "%s:%02x:%02x" % (MAC_BASE, node, dev)


@dataclass
class Vm:
    """A "VM": its own namespace, eth0 wired by veth to a port of the node's br-int."""
    netns: str          # e.g. brtinc-n2v
    ifname: str         # always eth0
    port: str           # bridge side: vnet0 (or gw0 for the gateway)
    mac: str
    ip: str             # without prefix length


@dataclass
class TincNode:
    """One KVM host: bridge br-int, tinc tap t3o, one VM; the ground truth.

    `pid` is tincd's own PID (None before start); `wrapper` is the `timeout`
    process we started (and own) around it.  `direct_ports` maps the other
    node's index to this node's port of a direct link (e.g. {2: "dl2"}).
    """
    index: int
    name: str           # tinc Name: n1, n2, ...
    netns: str          # <prefix>-n<i>
    bridge: str
    bridge_mac: str
    tap: str
    underlay_if: str    # ul0, in netns
    underlay_ip: str
    vm: Vm              # set as soon as the node's bridge exists
    confdir: str
    pid: Optional[int] = None
    wrapper: Optional[subprocess.Popen] = None
    pid_start: Optional[int] = None          # /proc/PID/stat starttime, against PID reuse
    log: str = ""
    direct_ports: Dict[int, str] = field(default_factory=dict)


@dataclass
class DirectLink:
    """A veth between two nodes' bridges: a second path beside the VPN, i.e. a loop."""
    a: int
    b: int
    port_a: str         # on node a's br-int: dl<b>
    port_b: str         # on node b's br-int: dl<a>
    watchdog: Optional[subprocess.Popen] = None
    broken: bool = False


def _proc_starttime(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat (start time in ticks), or None if PID is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            # comm (field 2) may hold spaces; everything after its ')' is fixed.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of PID in seconds, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class TincMesh:
    """`nodes` namespaced KVM hosts joined by a real tinc 1.0 VPN in switch mode.

    Use as a context manager; `with TincMesh(prefix="brtinc", nodes=3) as m:`
    returns once every t3o is up in its br-int and every VM pings the others
    through tinc (bounded by `connect_timeout`).

    topology="star": every node has ``ConnectTo = n1`` (the VPN hub, as in the
    incident); "mesh": node i connects to every node j < i.  Either way tinc
    forwards broadcasts along a spanning tree of these meta connections, so
    every node gets each broadcast once.

    `hold` bounds the daemons' lifetime (seconds, `timeout` wrapper).
    """

    def __init__(self, prefix: str = "brtinc", nodes: int = 3, gateway: bool = True,
                 topology: str = "star", hold: float = 120.0, connect_timeout: float = 20.0,
                 key_bits: int = 2048, debug: int = 0):
        if nodes < 2:
            raise ValueError("a VPN needs nodes >= 2")
        if nodes > 200:
            raise ValueError("at most 200 nodes (one /24 of VM addresses)")
        if topology not in ("star", "mesh"):
            raise ValueError("topology must be 'star' or 'mesh'")
        self.prefix = prefix
        self.n_nodes = nodes
        self.with_gateway = gateway
        self.topology = topology
        self.hold = hold
        self.connect_timeout = connect_timeout
        self.key_bits = key_bits
        self.debug = debug
        self.netname = prefix.replace("-", "_")
        self.underlay_ns = "%s-u" % prefix
        self.nodes: List[TincNode] = []
        self.gateway: Optional[Vm] = None
        self.links: Dict[Tuple[int, int], DirectLink] = {}
        self.ready_s: Optional[float] = None      # seconds from first tincd start to pings OK
        self.tmpdir: Optional[str] = None
        # A Lab that is never built: only its namespace registry and helpers
        # (add_netns, ip, sysctl, link_stats, cleanup) are used.
        self._lab = Lab(prefix=prefix, hosts=0)
        self._log_files: list = []

    # ---- context manager ------------------------------------------------
    def __enter__(self) -> "TincMesh":
        try:
            self.build()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---- accessors --------------------------------------------------------
    def node(self, i: int) -> TincNode:
        """Node by 1-based index."""
        return self.nodes[i - 1]

    def vm(self, i: int) -> Vm:
        return self.node(i).vm

    def tincd_pids(self) -> Dict[int, int]:
        """node index -> tincd PID."""
        return {n.index: n.pid for n in self.nodes if n.pid is not None}

    def link(self, a: int, b: int) -> DirectLink:
        return self.links[(min(a, b), max(a, b))]

    def namespaces(self) -> List[str]:
        """Every namespace this mesh created (and cleanup deletes)."""
        return list(self._lab._namespaces)

    # ---- building -------------------------------------------------------
    def build(self) -> None:
        self.tmpdir = tempfile.mkdtemp(prefix="%s-tinc-" % self.prefix)
        self._build_underlay()
        for i in range(1, self.n_nodes + 1):
            self._build_node(i)
        if self.with_gateway:
            self.gateway = self._add_vm(self.node(1), "%s-n1g" % self.prefix, "gw0",
                                        _mac(1, 2), GATEWAY_IP)
        self._write_configs()
        start = time.monotonic()
        # Node 1 first, and wait until it listens: a ConnectTo that fails is
        # retried only after 5 s, which would double the start-up time.
        self._start_tincd(self.node(1))
        self._wait_listening(self.node(1), start + self.connect_timeout)
        for n in self.nodes[1:]:
            self._start_tincd(n)
        self.wait_ready(deadline=start + self.connect_timeout)
        self.ready_s = time.monotonic() - start

    def _bridge(self, netns: str, name: str, mac: Optional[str] = None) -> None:
        """A bridge with STP off (a loop must storm, as in the incident) and
        multicast snooping off (no IGMP queries/reports adding frames)."""
        self._lab.ip(netns, "link", "add", name, *(["address", mac] if mac else []),
                     "type", "bridge", "stp_state", "0", "mcast_snooping", "0")
        self._lab.ip(netns, "link", "set", name, "up")

    def _build_underlay(self) -> None:
        self._lab.add_netns(self.underlay_ns)
        self._bridge(self.underlay_ns, UNDERLAY_BRIDGE)

    def _build_node(self, i: int) -> TincNode:
        netns = self._lab.add_netns("%s-n%d" % (self.prefix, i))
        confdir = os.path.join(self.tmpdir, "n%d" % i)
        node = TincNode(index=i, name="n%d" % i, netns=netns, bridge=BRIDGE,
                        bridge_mac=_mac(i, 0xfe), tap=TAP, underlay_if="ul0",
                        underlay_ip="%s.%d" % (UNDERLAY_NET, i), vm=None, confdir=confdir)
        # Underlay: veth n<i> in br-u <-> ul0 in the node.
        u_port = "n%d" % i
        self._lab.ip(self.underlay_ns, "link", "add", u_port, "type", "veth",
                     "peer", "name", node.underlay_if, "netns", netns)
        self._lab.ip(self.underlay_ns, "link", "set", u_port, "master", UNDERLAY_BRIDGE)
        self._lab.ip(self.underlay_ns, "link", "set", u_port, "up")
        self._lab.ip(netns, "addr", "add", node.underlay_ip + "/24", "dev", node.underlay_if)
        self._lab.ip(netns, "link", "set", node.underlay_if, "up")
        self._bridge(netns, BRIDGE, node.bridge_mac)
        self.nodes.append(node)
        node.vm = self._add_vm(node, "%s-n%dv" % (self.prefix, i), "vnet0", _mac(i, 1),
                               "%s.%d" % (VM_NET, 10 + i))
        return node

    def _add_vm(self, node: TincNode, netns: str, port: str, mac: str, ip: str) -> Vm:
        vm = Vm(netns=self._lab.add_netns(netns), ifname="eth0", port=port, mac=mac, ip=ip)
        self._lab.ip(node.netns, "link", "add", port, "type", "veth",
                     "peer", "name", vm.ifname, "netns", vm.netns)
        self._lab.ip(vm.netns, "link", "set", vm.ifname, "address", mac)
        self._lab.ip(vm.netns, "addr", "add", ip + "/24", "dev", vm.ifname)
        self._lab.ip(vm.netns, "link", "set", vm.ifname, "up")
        self._lab.ip(node.netns, "link", "set", port, "master", node.bridge)
        self._lab.ip(node.netns, "link", "set", port, "up")
        return vm

    def _connect_to(self, node: TincNode) -> List[str]:
        if node.index == 1:
            return []
        if self.topology == "star":
            return ["n1"]
        return ["n%d" % j for j in range(1, node.index)]

    def _write_configs(self) -> None:
        """tinc.conf, tinc-up and keys per node; then every host file to every node."""
        for node in self.nodes:
            os.makedirs(os.path.join(node.confdir, "hosts"))
            conf = ["Name = %s" % node.name,
                    "Mode = switch",          # L2: the VPN is one Ethernet segment
                    "DeviceType = tap",
                    "Interface = %s" % node.tap,
                    "AddressFamily = ipv4",   # the underlay has no IPv6
                    "BindToAddress = %s" % node.underlay_ip]
            conf += ["ConnectTo = %s" % peer for peer in self._connect_to(node)]
            with open(os.path.join(node.confdir, "tinc.conf"), "w") as f:
                f.write("\n".join(conf) + "\n")
            up = os.path.join(node.confdir, "tinc-up")
            with open(up, "w") as f:
                # As on the incident's host: the VPN tap joins the VMs' bridge.
                f.write("#!/bin/sh\nip link set %s master %s\nip link set %s up\n"
                        % (node.tap, node.bridge, node.tap))
            os.chmod(up, 0o755)
            # Host file: our Address first, then -K appends the public key.
            host = os.path.join(node.confdir, "hosts", node.name)
            with open(host, "w") as f:
                f.write("Address = %s\nPort = 655\n\n" % node.underlay_ip)
            # stdin from /dev/null: tincd asks for file names only on a tty.
            run([TINCD, "-n", self.netname, "--config", node.confdir,
                 "-K%d" % self.key_bits], input=b"", timeout=60)
        for node in self.nodes:          # every node knows every node's key and address
            src = os.path.join(node.confdir, "hosts", node.name)
            for other in self.nodes:
                if other is not node:
                    shutil.copy(src, os.path.join(other.confdir, "hosts", node.name))

    def _start_tincd(self, node: TincNode) -> None:
        """`timeout HOLD tincd -D` inside the node's namespace; record tincd's PID."""
        pidfile = os.path.join(node.confdir, "tincd.pid")
        node.log = os.path.join(node.confdir, "tincd.log")
        log = open(node.log, "ab")   # a file, not a pipe: a full pipe would block tincd
        self._log_files.append(log)
        argv = ns_argv(node.netns, [
            # --kill-after: SIGKILL 1 s after the TERM if tincd lingers, so the
            # wrapper always ends within our _kill_pid grace.
            "timeout", "--kill-after=1", "%.0f" % max(1.0, self.hold),
            TINCD, "-n", self.netname, "--config", node.confdir, "-D",
            "--pidfile=%s" % pidfile, "-d%d" % self.debug])
        node.wrapper = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=log, preexec_fn=_set_pdeathsig)
        self._lab._children.append(node.wrapper)
        end = time.monotonic() + 10.0
        while node.pid is None:
            try:
                with open(pidfile) as f:
                    pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pid = None
            # Trust the pidfile only for a child of our wrapper (a stale file
            # or a reused PID must never become something we kill).
            if pid and self._ppid(pid) == node.wrapper.pid:
                node.pid, node.pid_start = pid, _proc_starttime(pid)
                break
            if node.wrapper.poll() is not None:
                raise LabError("tincd on %s exited (rc=%s): %s" % (
                    node.netns, node.wrapper.returncode, self.log_tail(node)))
            if time.monotonic() > end:
                raise LabError("tincd on %s wrote no pidfile in 10 s: %s"
                               % (node.netns, self.log_tail(node)))
            time.sleep(0.05)

    @staticmethod
    def _ppid(pid: int) -> Optional[int]:
        try:
            with open("/proc/%d/stat" % pid) as f:
                return int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    def log_tail(self, node: TincNode, lines: int = 15) -> str:
        try:
            with open(node.log, errors="replace") as f:
                return " | ".join(f.read().splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_listening(self, node: TincNode, deadline: float) -> None:
        while True:
            out = run(ns_argv(node.netns, ["ss", "-Hltn", "sport", "=", ":655"]),
                      check=False).stdout
            if out.strip():
                return
            if node.wrapper.poll() is not None:
                raise LabError("tincd on %s exited: %s" % (node.netns, self.log_tail(node)))
            if time.monotonic() > deadline:
                raise LabError("tincd on %s not listening: %s" % (node.netns, self.log_tail(node)))
            time.sleep(0.05)

    def wait_ready(self, deadline: Optional[float] = None) -> None:
        """Bounded wait until every t3o is an up port of its br-int, then until
        VM 1 pings every other VM and VM 2 pings VM 3 (two non-hub nodes) over tinc."""
        if deadline is None:
            deadline = time.monotonic() + self.connect_timeout
        for node in self.nodes:
            while not self._tap_in_bridge(node):
                if node.wrapper.poll() is not None:
                    raise LabError("tincd on %s exited: %s" % (node.netns, self.log_tail(node)))
                if time.monotonic() > deadline:
                    raise LabError("%s not in %s on %s: %s" % (
                        node.tap, node.bridge, node.netns, self.log_tail(node)))
                time.sleep(0.05)
        pairs = [(1, j) for j in range(2, self.n_nodes + 1)]
        if self.n_nodes >= 3:
            pairs.append((2, 3))
        for a, b in pairs:
            while not ping(self.vm(a).netns, self.vm(b).ip, count=1, interval=0.2, deadline=1):
                if time.monotonic() > deadline:
                    raise LabError("VM %d cannot ping VM %d over tinc: %s" % (
                        a, b, self.log_tail(self.node(b))))

    def _tap_in_bridge(self, node: TincNode) -> bool:
        out = run(["ip", "-n", node.netns, "-j", "link", "show", "dev", node.tap],
                  check=False).stdout
        try:
            link = json.loads(out or b"[]")[0]
        except (ValueError, IndexError):
            return False
        return link.get("master") == node.bridge and "UP" in link.get("flags", [])

    # ---- the fault: a second path between two nodes ----------------------
    def add_direct_link(self, a: int, b: int, hold: float = 30.0) -> DirectLink:
        """Wire node a's br-int to node b's br-int by a veth (ports dl<b> on a,
        dl<a> on b).  With STP off this closes a loop through tinc: it is quiet
        until someone floods a frame (seed_storm()), then that frame circulates
        both ways round a -> tinc -> b -> veth -> a for ever.

        Bounded: a watchdog child of ours deletes the link after `hold` seconds
        (its clock starts before the link comes up); break_direct_link() does
        it at once.
        """
        if a == b:
            raise ValueError("a direct link needs two different nodes")
        key = (min(a, b), max(a, b))
        if key in self.links and not self.links[key].broken:
            raise LabError("nodes %d and %d already have a direct link" % key)
        na, nb = self.node(a), self.node(b)
        link = DirectLink(a=a, b=b, port_a="dl%d" % b, port_b="dl%d" % a)
        self._lab.ip(na.netns, "link", "add", link.port_a, "type", "veth",
                     "peer", "name", link.port_b, "netns", nb.netns)
        self._lab.ip(na.netns, "link", "set", link.port_a, "master", na.bridge)
        self._lab.ip(nb.netns, "link", "set", link.port_b, "master", nb.bridge)
        link.watchdog = subprocess.Popen(
            ns_argv(na.netns, child_argv("watchdog.py", repr(hold), link.port_a)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        self._lab._children.append(link.watchdog)
        self._lab.ip(na.netns, "link", "set", link.port_a, "up")
        self._lab.ip(nb.netns, "link", "set", link.port_b, "up")
        na.direct_ports[b], nb.direct_ports[a] = link.port_a, link.port_b
        self.links[key] = link
        return link

    def break_direct_link(self, a: int, b: int) -> None:
        """Delete the a-b veth (both ends go): the loop opens, the storm stops."""
        link = self.link(a, b)
        na = self.node(link.a)
        # Down first, delete after (see Lab.break_loop()); check=False: the
        # watchdog may have beaten us to it.
        self._lab.ip(na.netns, "link", "set", "dev", link.port_a, "down", check=False)
        time.sleep(0.1)
        self._lab.ip(na.netns, "link", "del", link.port_a, check=False)
        link.broken = True
        self.node(link.a).direct_ports.pop(link.b, None)
        self.node(link.b).direct_ports.pop(link.a, None)
        if link.watchdog is not None:
            _kill_pid(link.watchdog)
            if link.watchdog in self._lab._children:
                self._lab._children.remove(link.watchdog)
            link.watchdog = None

    def seed_storm(self, node: int = 1, count: int = 1, target_ip: str = UNUSED_IP) -> int:
        """Send `count` ARP requests "who-has TARGET tell <VM ip>" from node's VM.

        This is the incident's frame: a VM ARPing for an address nobody
        answers, so it stays a broadcast on every lap of the loop.  Exactly
        `count` frames leave eth0 (a raw packet socket, not the VM's stack).
        """
        vm = self.vm(node)
        return send_frames(vm.netns, vm.ifname, arp_request(vm.mac, vm.ip, target_ip), count)

    def set_bridge_ip(self, i: int, ip: str) -> None:
        """Give node i's br-int an address (CIDR), so the bridge itself ARPs
        into the VPN: its own frames coming back on t3o are what make the
        kernel log "received packet on t3o with own address as source address"."""
        self._lab.ip(self.node(i).netns, "addr", "add", ip, "dev", self.node(i).bridge)

    # ---- kernel counters (ground truth, no brtrace) -----------------------
    def link_stats(self, i: int, dev: Optional[str] = None) -> dict:
        """rx/tx packets and drops of DEV (default t3o) in node i's namespace."""
        node = self.node(i)
        return self._lab.link_stats(node.netns, dev or node.tap)

    def fdb(self, i: int) -> Dict[str, str]:
        """Learned (dynamic) entries of node i's br-int: MAC -> port."""
        node = self.node(i)
        out = run(["bridge", "-n", node.netns, "-j", "fdb", "show", "br", node.bridge]).stdout
        return {e["mac"]: e["ifname"] for e in json.loads(out or b"[]")
                if "permanent" not in e.get("state", "") and "static" not in e.get("state", "")
                and e.get("ifname") and e.get("ifname") != node.bridge}

    def rx_rate(self, i: int, dev: Optional[str] = None, seconds: float = 1.0) -> float:
        """rx packets per second on DEV (default t3o) of node i over `seconds`."""
        t0, c0 = time.monotonic(), self.link_stats(i, dev)["rx_packets"]
        time.sleep(seconds)
        t1, c1 = time.monotonic(), self.link_stats(i, dev)["rx_packets"]
        return (c1 - c0) / (t1 - t0)

    def tincd_cpu(self) -> Dict[int, float]:
        """node index -> tincd's CPU seconds so far (utime + stime)."""
        out = {}
        for n in self.nodes:
            if n.pid is not None and _proc_starttime(n.pid) == n.pid_start:
                cpu = _proc_cpu_seconds(n.pid)
                if cpu is not None:
                    out[n.index] = cpu
        return out

    # ---- cleanup --------------------------------------------------------
    def cleanup(self) -> None:
        """Stop our tincds (by PID), our watchdogs, delete our namespaces, remove
        the temp dir.  Safe twice and after a partial build."""
        for node in self.nodes:
            if node.wrapper is not None:
                # SIGTERM to our `timeout`: it relays TERM to tincd, and
                # SIGKILLs it 1 s later if needed; 5 s grace covers that.
                try:
                    _kill_pid(node.wrapper, grace=5.0)
                except Exception:  # noqa: BLE001 - best effort: clean-up goes on to the next node
                    pass
                if node.wrapper in self._lab._children:
                    self._lab._children.remove(node.wrapper)
                node.wrapper = None
            # Belt and braces: if tincd outlived its wrapper, kill it -- only
            # if the PID still is the process we recorded (same start time).
            if node.pid is not None and node.pid_start is not None \
                    and _proc_starttime(node.pid) == node.pid_start:
                try:
                    os.kill(node.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for f in self._log_files:
            f.close()
        self._log_files.clear()
        # Remaining children (link watchdogs) by PID, then our namespaces:
        # deleting a namespace takes its veths, bridges and taps with it.
        self._lab.cleanup()
        for link in self.links.values():
            link.watchdog = None
            link.broken = True
        if self.tmpdir and os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
