"""The built-in demo behind `scripts/demo`: a lab bridge with reproduced faults,
traced by the real `brtrace drops` for about ten seconds, then torn down.

`--incident` instead rebuilds the 2017 morning with real tinc 1.0 daemons
(lab.tinc): three KVM hosts whose br-int bridges are joined by a tinc
VPN in switch mode, plus a second path between hosts 1 and 2 that closes a
loop.  One ARP request starts the storm; seconds later the operator runs the
real `brtrace loops` on host 3, then the kernel log and the guests' ARP tables
are shown as the incident's other symptoms, and everything is torn down.

Run as root: python -m lab.demo [--incident] [--seconds N]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict

from lab.frames import BROADCAST, ETH_P_LAB, ether, ipv4_udp
from lab.proc import LabError, _kill_pid, _set_pdeathsig, ns_argv, run
from lab.topology import Lab
from lab.traffic import send_frames, start_sender, wait_sender

PREFIX = "brtdemo"
INCIDENT_PREFIX = "brtinc-demo"     # namespaces brtinc-demo-n1 ... brtinc-demo-n3v (<= 15 chars)


# ---- the plain demo: several reproduced faults at once -----------------------

DEMO_TAP_MAC = "02:b7:00:00:aa:01"


@dataclass
class DemoPlan:
    """What build_demo() set up, so drive_demo() and tests know what to expect."""
    faults: Dict[str, str] = field(default_factory=dict)   # fault -> port it shows on


def build_demo(lab: Lab) -> DemoPlan:
    """Turn a Lab with >= 4 hosts into a bridge with five different faults.

    h1 is the talker.  vnet1 (h2) is held in STP listening; vnet2 (h3) has a too-small
    MTU; an nft rule drops UDP/9999; tap `<prefix>tap0` has a stalled reader; and
    frames to h1's own MAC sent by h1 come back to the same port.
    """
    if len(lab.hosts) < 4:
        raise LabError("build_demo needs a Lab with hosts >= 4")
    plan = DemoPlan()
    # "listening" rather than "blocking": with STP off the kernel only keeps
    # 0-2 (see set_stp_state); the drop path and reason are the same.
    lab.set_stp_state(lab.host(2).port, 1)
    plan.faults["stp_listening"] = lab.host(2).port
    lab.set_bridge_mtu(1500)
    lab.set_mtu(lab.bridge_ns, lab.host(3).port, 1000)
    plan.faults["egress_mtu_ipv4_df"] = lab.host(3).port
    lab.nft_drop("forward", "udp dport 9999")
    plan.faults["nft_drop"] = lab.host(1).port
    tap = lab.add_tap(lab.prefix + "tap0", reader="stalled", hold=120.0, txqueuelen=10)
    lab.add_fdb(DEMO_TAP_MAC, tap.name)
    plan.faults["tap_stalled"] = tap.name
    plan.faults["same_port"] = lab.host(1).port
    plan.faults["mcast_source"] = lab.host(1).port
    return plan


def demo_frames(lab: Lab) -> Dict[str, tuple]:
    """fault -> (netns, ifname, frame) that triggers it once."""
    h1, h2, h3, h4 = lab.host(1), lab.host(2), lab.host(3), lab.host(4)
    return {
        # STP listening: h2 talks to h4, vnet1 refuses it.
        "stp_listening": (h2.netns, h2.ifname, ipv4_udp(h4.mac, h2.mac, h2.ip, h4.ip, 4000, 5000)),
        # Egress MTU: 1400-byte frame to h3, whose bridge port has MTU 1000.
        "egress_mtu_ipv4_df": (h1.netns, h1.ifname,
                       ipv4_udp(h3.mac, h1.mac, h1.ip, h3.ip, 4000, 5000, frame_len=1400)),
        # nft: UDP/9999 forwarded h1 -> h4.
        "nft_drop": (h1.netns, h1.ifname, ipv4_udp(h4.mac, h1.mac, h1.ip, h4.ip, 4000, 9999)),
        # Stalled tap: frames to the tap's static FDB entry.
        "tap_stalled": (h1.netns, h1.ifname, ether(DEMO_TAP_MAC, h1.mac, ETH_P_LAB, b"tap")),
        # Same port: h1 sends to its own (learned) MAC.
        "same_port": (h1.netns, h1.ifname, ether(h1.mac, h1.mac, ETH_P_LAB, b"hairpin")),
        # Multicast source MAC.
        "mcast_source": (h1.netns, h1.ifname,
                         ether(h4.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"mcast-src")),
    }


def drive_demo(lab: Lab, seconds: float = 10.0, rate: int = 20) -> Dict[str, int]:
    """Send every demo fault `rate` times a second for `seconds`, all in parallel.

    Bounded: each generator sends exactly seconds*rate frames and is killed
    if it overruns.  Returns frames sent per fault.  h3 and h4 announce
    themselves first (one broadcast each, which also lands in the stalled
    tap's ring), so frames to them are forwarded rather than flooded.
    """
    for h in (lab.host(3), lab.host(4)):   # one broadcast each: the bridge learns them
        send_frames(h.netns, h.ifname, ether(BROADCAST, h.mac, ETH_P_LAB, b"hello"), 1)
    count = max(1, int(seconds * rate))
    procs = {name: start_sender(netns, ifname, frame, count, 1.0 / rate)
             for name, (netns, ifname, frame) in demo_frames(lab).items()}
    sent = {}
    try:
        for name, proc in procs.items():
            sent[name] = wait_sender(proc, timeout=seconds * 2 + 15)
    finally:
        for proc in procs.values():
            _kill_pid(proc)
    return sent



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="how long to send faulty traffic (with --incident: how long brtrace runs)")
    ap.add_argument("--incident", action="store_true",
                    help="rebuild the 2017 incident with real tinc daemons and run "
                         "`brtrace loops` on it")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (run scripts/demo, which re-runs under sudo)", file=sys.stderr)
        return 1
    if args.incident:
        return incident(args.seconds)
    try:
        with Lab(prefix=PREFIX, hosts=4, bridge="br-int") as lab:
            plan = build_demo(lab)
            print(f"demo: bridge br-int in netns {lab.bridge_ns}, ports "
                  + ", ".join(h.port for h in lab.hosts) + f", {lab.prefix}tap0", file=sys.stderr)
            print("demo: faults reproduced: " + ", ".join(f"{f} on {p}" for f, p in plan.faults.items()),
                  file=sys.stderr)
            return _trace(lab, args.seconds)
    except LabError as exc:
        print(f"demo: could not build the lab: {exc} (stale namespaces? `ip netns list | grep {PREFIX}`)",
              file=sys.stderr)
        return 1


def _trace(lab: Lab, seconds: float) -> int:
    ready = f"/tmp/{PREFIX}-{os.getpid()}.ready"
    cmd = [sys.executable, "-m", "tracer.cli", "drops", "--bridge", lab.bridge,
           "--netns", lab.bridge_ns, "--interval", "5", "--duration", str(seconds + 30),
           "--ready-file", ready]
    print("demo: $ brtrace " + " ".join(cmd[3:-2]), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                print("demo: brtrace did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        drive_demo(lab, seconds=seconds, rate=20)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)   # our child, by PID: ends with the summary
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if os.path.exists(ready):
            os.unlink(ready)


# ---- --incident: the 2017 morning, with real tinc ---------------------------

GATEWAY_IP = "10.88.0.1"            # tinc_lab's gateway "VM", on host 1
NODE3_BRIDGE_IP = "10.88.0.203/24"  # host 3's own address on br-int
HEAD_START = 3.0                    # the storm rages this long before the operator arrives
MAX_SECONDS = 3600.0


def _say(text: str) -> None:
    print("demo: " + text, file=sys.stderr, flush=True)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt         # unwind like Ctrl-C: every `finally` and the mesh clean up


def incident(seconds: float) -> int:
    """Build the tinc mesh, storm it, run `brtrace loops` on host 3, show the
    other symptoms, tear down.  0 when the demo ran; one line and 1 otherwise."""
    if not 0 < seconds <= MAX_SECONDS:
        _say(f"--seconds must be > 0 and <= {MAX_SECONDS:g}, got {seconds:g}")
        return 1
    from lab.tinc import TINCD, TincMesh   # noqa: PLC0415  (only --incident needs it)
    if not os.access(TINCD, os.X_OK):
        _say(f"tincd not found ({TINCD}): install Debian's tinc package (tinc 1.0)")
        return 1
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _on_sigterm)
    kmsg = _Kmsg()
    try:
        _say("building 3 KVM hosts joined by real tincd daemons (tinc 1.0, Mode = switch) ...")
        # hold: every tincd ends by itself even if this process is killed outright
        with TincMesh(prefix=INCIDENT_PREFIX, nodes=3, hold=seconds + HEAD_START + 120.0) as mesh:
            try:
                return _incident_run(mesh, seconds, kmsg)
            finally:
                # a second Ctrl-C must not cut the teardown short
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                _say("tearing down: stopping the tincds, deleting the namespaces")
    except KeyboardInterrupt:
        _say("interrupted; lab torn down")
        return 130
    except (LabError, OSError) as exc:
        _say(f"incident lab failed: {' '.join(str(exc).split())} "
             f"(leftovers from an earlier run? `ip netns list | grep {INCIDENT_PREFIX}`)")
        return 1
    finally:
        kmsg.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _incident_run(mesh, seconds: float, kmsg: "_Kmsg") -> int:
    n3, vm3 = mesh.node(3), mesh.vm(3)
    mesh.set_bridge_ip(3, NODE3_BRIDGE_IP)
    pingers, brtrace = [], None
    try:
        # the second path; its watchdog deletes it by itself should we never get to
        link = mesh.add_direct_link(1, 2, hold=seconds + HEAD_START + 60.0)
        _describe(mesh, link)
        mesh.seed_storm(node=1)
        vm1 = mesh.vm(1)
        _say(f"storm seeded: one ARP request 'who-has 10.88.0.250 tell {vm1.ip}' from VM 1 "
             f"({vm1.mac})")
        # Then host 3 goes about its morning: its VM and the host itself (its
        # address on br-int) ask for the gateway once a second, bounded by count
        # and deadline.  Started after the seed, as on that morning: the gateway
        # is not resolved yet, so their ARP requests go round the loop too.
        count = int(HEAD_START + seconds) + 10
        for netns in (vm3.netns, n3.netns):
            pingers.append(subprocess.Popen(
                ns_argv(netns, ["ping", "-n", "-q", "-c", str(count), "-i", "1", "-W", "1",
                                "-w", str(count + 2), GATEWAY_IP]),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=_set_pdeathsig))
        _say(f"VM 3 ({vm3.ip}) and host 3 ({NODE3_BRIDGE_IP.split('/')[0]} on br-int) ping their "
             f"gateway {GATEWAY_IP} once a second (at most {count})")
        arp = _ArpWatch(mesh)
        _say(f"the operator logs in to host 3, {HEAD_START:g} s into the storm ...")
        end = time.monotonic() + HEAD_START
        while time.monotonic() < end:
            arp.sample()
            time.sleep(0.5)
        cmd = [sys.executable, "-m", "tracer.cli", "loops", "--bridge", n3.bridge,
               "--netns", n3.netns, "--interval", "1", "--duration", f"{seconds:g}"]
        _say("$ brtrace " + " ".join(cmd[3:]))
        brtrace = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        deadline = time.monotonic() + seconds + 60.0     # + bcc's compile and start-up
        while brtrace.poll() is None:
            if time.monotonic() > deadline:
                _say(f"brtrace did not end within {seconds + 60:.0f} s")
                return 1
            arp.sample()
            time.sleep(0.5)
        rc = brtrace.returncode
        arp.sample()
        tables = arp.tables()          # while the loop is still closed
        mesh.break_direct_link(1, 2)
        _say(f"broke the second path ({link.port_a} <-> {link.port_b}): the loop is open again")
        _symptoms(mesh, kmsg, arp, tables)
        if rc != 0:
            _say(f"brtrace exited with status {rc}")
            return rc
        return 0
    finally:
        if brtrace is not None and brtrace.poll() is None:
            try:
                brtrace.send_signal(signal.SIGTERM)   # our child, by PID: ends with its summary
                brtrace.wait(timeout=15)
            except subprocess.TimeoutExpired:
                brtrace.kill()
                brtrace.wait()
        for pinger in pingers:
            _kill_pid(pinger)


def _bridge_ports(netns: str, bridge: str) -> list:
    out = run(["ip", "-n", netns, "-j", "link", "show", "master", bridge], check=False).stdout
    try:
        return sorted(link["ifname"] for link in json.loads(out or b"[]"))
    except (ValueError, KeyError, TypeError):
        return []


def _describe(mesh, link) -> None:
    """What was built, on stderr, before brtrace runs."""
    pids = mesh.tincd_pids()
    _say(f"tinc VPN '{mesh.netname}' ({mesh.topology}: every host has ConnectTo = n1), underlay "
         f"bridge br-u in {mesh.underlay_ns} (192.0.2.0/24), up in {mesh.ready_s or 0:.1f} s:")
    for n in mesh.nodes:
        extra = f", br-int {NODE3_BRIDGE_IP}" if n.index == 3 else ""
        _say(f"  host {n.name}: netns {n.netns}, br-int {n.bridge_mac}{extra}, ports "
             f"{', '.join(_bridge_ports(n.netns, n.bridge)) or '?'}; tincd pid {pids.get(n.index, '?')} "
             f"on {n.underlay_ip} with tap {n.tap}")
        _say(f"    VM {n.vm.netns}: eth0 {n.vm.ip} {n.vm.mac} <-> {n.vm.port}")
        if n.index == 1 and mesh.gateway is not None:
            gw = mesh.gateway
            _say(f"    gateway {gw.netns}: eth0 {gw.ip} {gw.mac} <-> {gw.port}")
    a, b = mesh.node(link.a), mesh.node(link.b)
    _say(f"second path: {a.name} br-int:{link.port_a} <-veth-> {link.port_b}:br-int {b.name}, "
         f"STP off: with the VPN this closes the loop {a.name} -> {a.tap} -> tincd -> {b.name} -> "
         f"{link.port_b} -> {link.port_a} -> {a.name}; host 3 is not on it and only sees it "
         f"through its {mesh.node(3).tap}")


class _ArpWatch:
    """Samples the guests' neighbour entries for the gateway while the storm runs."""

    def __init__(self, mesh):
        self.vms = [(n.index, n.vm) for n in mesh.nodes]
        self.states = {i: [] for i, _vm in self.vms}     # VM index -> gateway entry state per sample

    def _neigh(self, vm) -> list:
        out = run(["ip", "-n", vm.netns, "-j", "neigh", "show"], check=False).stdout
        try:
            return json.loads(out or b"[]")
        except ValueError:
            return []

    def sample(self) -> None:
        for i, vm in self.vms:
            entry = [e for e in self._neigh(vm) if e.get("dst") == GATEWAY_IP]
            self.states[i].append("/".join(entry[0].get("state", ["?"])) if entry else "none")

    def tables(self) -> dict:
        """VM index -> `ip neigh show` lines, as an operator would read them."""
        return {i: run(["ip", "-n", vm.netns, "neigh", "show"], check=False).stdout
                .decode(errors="replace").splitlines() for i, vm in self.vms}


class _Kmsg:
    """/dev/kmsg, non-blocking: the sequence number reached at start, then only
    records with a higher one (also after the ring overwrote records under us)."""

    def __init__(self):
        self.fd = None
        self.error = None
        self.start_seq = -1
        try:
            self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.error = exc.strerror
            return
        for seq, _text in self._records():
            self.start_seq = max(self.start_seq, seq)

    def _records(self):
        while self.fd is not None:
            try:
                rec = os.read(self.fd, 8192)
            except OSError as exc:
                if exc.errno == errno.EPIPE:        # overwritten under us: go on
                    continue
                if exc.errno != errno.EAGAIN:
                    self.error = exc.strerror
                return
            if not rec:
                return
            head, _, text = rec.decode(errors="replace").partition(";")
            try:
                seq = int(head.split(",")[1])
            except (IndexError, ValueError):
                continue
            yield seq, text.split("\n", 1)[0].strip()

    def new_lines(self) -> list:
        if self.fd is None:
            return []
        return [text for seq, text in self._records() if seq > self.start_seq]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _symptoms(mesh, kmsg: "_Kmsg", arp: _ArpWatch, tables: dict) -> None:
    """The incident's other symptoms, as evidence: only what was seen."""
    macs = [n.bridge_mac for n in mesh.nodes]
    taps = {n.tap for n in mesh.nodes}
    _say("the incident's other symptoms, seen during this run:")
    lines = kmsg.new_lines()
    own = [line for line in lines if "with own address as source address" in line
           and (any(f"on {t} " in line for t in taps) or any(m in line for m in macs))]
    if kmsg.error:
        _say(f"  kernel log: /dev/kmsg unreadable ({kmsg.error}): not checked")
    elif own:
        _say(f"  kernel log: {len(own)} line(s) 'received packet on {mesh.node(3).tap} with own "
             f"address as source address' since the demo started (net_ratelimit()ed; the line "
             f"names no namespace):")
        for text in sorted(set(own), key=own.index)[:5]:
            n = own.count(text)
            _say(f"    {text}" + (f"  (x{n})" if n > 1 else ""))
    else:
        _say(f"  kernel log: NOT seen: no 'received packet on {mesh.node(3).tap} with own address "
             f"as source address' since the demo started ({len(lines)} new kernel log lines read; "
             f"the printk is net_ratelimit()ed machine-wide)")
    for i, vm in arp.vms:
        states = arp.states[i]
        bad = [s for s in states if "INCOMPLETE" in s or "FAILED" in s]
        if bad:
            seen = ", ".join(f"{s} in {states.count(s)}" for s in sorted(set(states)))
            _say(f"  VM {i} ({vm.netns}) ARP for gateway {GATEWAY_IP}: unresolved during the storm "
                 f"({seen} of {len(states)} samples); `ip -n {vm.netns} neigh show` now:")
        elif any(s != "none" for s in states):
            _say(f"  VM {i} ({vm.netns}) ARP for gateway {GATEWAY_IP}: NOT seen INCOMPLETE/FAILED "
                 f"({', '.join(sorted(set(states)))} in {len(states)} samples); "
                 f"`ip -n {vm.netns} neigh show` now:")
        else:
            _say(f"  VM {i} ({vm.netns}) has no entry for gateway {GATEWAY_IP} (it does not use it); "
                 f"`ip -n {vm.netns} neigh show` now:")
        for entry in tables.get(i) or ["(empty)"]:
            _say(f"    {entry}")


if __name__ == "__main__":
    sys.exit(main())
