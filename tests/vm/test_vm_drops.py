"""Kernel-matrix lane: brtrace on Debian's stock 6.1 kernel (kprobes, fentry,
bridge as a module, matching headers), inside the QEMU VM of
../shared/tools/vm-run.sh. Run it with scripts/vm-test.

Skipped everywhere else: the module skips unless /vmh/out exists (the VM's
output share) and the kernel is 6.1.x, so the normal suite stays green.

Under TCG emulation every bcc compile costs 10-20 s, so brtrace is started
once: one lab holds every fault on its own port, brtrace runs across all of
them, and each test asserts on its own part of that one JSON output.

Ground truth on 6.1 (measured with tracefs stack traces and objdump of
bridge.ko 6.1.0-56): 6.1 has no bridge drop reasons (its enum ends at
TC_CHAIN_NOTFOUND), so every bridge free is NOT_SPECIFIED, and:
  listening / disabled port, multicast source MAC -> br_handle_frame
  learning port                                    -> br_handle_frame_finish
  unicast to a MAC learned on the ingress port      -> br_handle_frame_finish
      (br_forward() tail-calls kfree_skb, so the return address is in its caller)
  frame larger than the egress port's MTU           -> br_dev_queue_push_xmit
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

if not (os.path.isdir("/vmh/out") and platform.release().startswith("6.1.")):
    pytest.skip("kernel-matrix lane: runs only inside the 6.1 VM (scripts/vm-test)",
                allow_module_level=True)

from harness import Tracer  # tests/integration/harness.py

REPO = Path(__file__).resolve().parents[2]
BRTRACE = [str(REPO / ".venv/bin/brtrace")] if (REPO / ".venv/bin/brtrace").exists() \
    else [sys.executable, "-m", "tracer.cli"]
PREFIX = f"brtv{os.getpid() % 1000}"
BRIDGE = "br0"
K = 20                                  # frames per fault
ETH_P_LAB = 0x88B5                      # IEEE local experimental ethertype
HIDDEN_MAC = "02:b7:00:00:01:01"        # a MAC that lives behind vnet0, like h1
MCAST_SRC = "01:00:5e:00:00:01"
START_TIMEOUT = 180.0                   # bcc compile+attach under TCG: ~15 s measured
CMD_TIMEOUT = 60.0


# ---------------------------------------------------------------- helpers

def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=CMD_TIMEOUT)


def ns_sysctl(ns: str, path: str, value: str) -> None:
    sh("ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > /proc/sys/{path}")


# Sends exactly N copies of one frame out of an interface over AF_PACKET.
# argv: ifname count frame-hex.  Prints the number sent.
_SENDER = r"""
import socket, sys
ifname, count, frame = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
sent = 0
for _ in range(count):
    sent += s.send(frame) == len(frame)
print(sent)
"""


def ether(dst: str, src: str, ethertype: int = ETH_P_LAB, payload: bytes = b"brtv") -> bytes:
    frame = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) \
        + ethertype.to_bytes(2, "big") + payload
    return frame + b"\x00" * max(0, 60 - len(frame))


def send(ns: str, frame: bytes, count: int, ifname: str = "eth0") -> None:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _SENDER, ifname,
                          str(count), frame.hex()],
                         check=True, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert int(out.stdout.split()[0]) == count, out


@dataclass
class Lab:
    """A bridge br0 in <prefix>-br, host namespaces <prefix>-hN behind vnet(N-1).

    IPv6 is off and multicast snooping is off in every namespace, so the only
    frames on the wire are the ones the test sends. forward_delay is 0: with
    STP off and the default 15 s, the kernel still arms a port's forward-delay
    timer when it enables the port, and a port forced to `listening` moves on
    to `learning` when it fires (measured on 6.1: ~15 s after the port came up,
    about as long as brtrace takes to compile under TCG).
    """

    prefix: str
    hosts: int
    mac_id: int                         # third MAC byte: tells the labs' hosts apart
    namespaces: list = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-br"

    def host_ns(self, i: int) -> str:
        return f"{self.prefix}-h{i}"

    def mac(self, i: int) -> str:
        return f"02:b7:{self.mac_id:02x}:00:00:{i:02x}"

    def port(self, i: int) -> str:
        return f"vnet{i - 1}"

    def add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        ns_sysctl(name, "net/ipv6/conf/all/disable_ipv6", "1")
        ns_sysctl(name, "net/ipv6/conf/default/disable_ipv6", "1")

    def build(self) -> "Lab":
        self.add_ns(self.bridge_ns)
        sh("ip", "-n", self.bridge_ns, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0",
           "forward_delay", "0", "mcast_snooping", "0")
        sh("ip", "-n", self.bridge_ns, "link", "set", BRIDGE, "up")
        for i in range(1, self.hosts + 1):
            ns = self.host_ns(i)
            self.add_ns(ns)
            sh("ip", "-n", self.bridge_ns, "link", "add", self.port(i), "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.bridge_ns, "link", "set", self.port(i), "master", BRIDGE, "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "address", self.mac(i), "up")
            sh("ip", "-n", ns, "addr", "add", f"10.77.0.{i}/24", "dev", "eth0")
        return self

    def learn(self, i: int, mac: str | None = None) -> None:
        """One broadcast from host i, so the bridge learns `mac` (default its own) on its port."""
        send(self.host_ns(i), ether("ff:ff:ff:ff:ff:ff", mac or self.mac(i)), 1)

    def set_state(self, i: int, state: int) -> None:
        sh("bridge", "-n", self.bridge_ns, "link", "set", "dev", self.port(i), "state", str(state))

    def state(self, i: int) -> str:
        info = json.loads(sh("bridge", "-n", self.bridge_ns, "-j", "link", "show", "dev",
                             self.port(i)).stdout)
        return info[0]["state"]

    def destroy(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


# Host i, its fault, and what 6.1 reports for it: (reason, function, count).
# Host 1 sends the unicast-back and the oversized frames; host 6 is the
# small-MTU egress port; host 7 only receives.
FAULTS = {
    "unicast_to_ingress_port": (1, ("NOT_SPECIFIED", "br_handle_frame_finish", K)),
    "stp_listening": (2, ("NOT_SPECIFIED", "br_handle_frame", K)),
    "stp_disabled": (3, ("NOT_SPECIFIED", "br_handle_frame", K)),
    "stp_learning": (4, ("NOT_SPECIFIED", "br_handle_frame_finish", K)),
    "multicast_source_mac": (5, ("NOT_SPECIFIED", "br_handle_frame", K)),
    "egress_mtu": (6, ("NOT_SPECIFIED", "br_dev_queue_push_xmit", K)),
}
HOSTS = 7
SMALL_MTU = 1000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Build the lab (and a look-alike bridge br0 in another namespace), run one
    brtrace over every fault, and hand back the lab and the stopped brtrace."""
    lab = Lab(PREFIX, HOSTS, mac_id=1)
    other = Lab(PREFIX + "o", 2, mac_id=2)
    tracer = None
    try:
        lab.build()
        other.build()
        dst = lab.mac(7)
        for i in (1, 6, 7):
            lab.learn(i)
        lab.learn(1, HIDDEN_MAC)
        other.learn(2)
        lab.set_state(2, 1)
        lab.set_state(3, 0)
        lab.set_state(4, 2)
        sh("ip", "-n", lab.bridge_ns, "link", "set", lab.port(6), "mtu", str(SMALL_MTU))
        states = {i: lab.state(i) for i in (2, 3, 4)}
        assert states == {2: "listening", 3: "disabled", 4: "learning"}, states

        tracer = Tracer(tmp_path_factory.mktemp("brtv"), "drops", "--bridge", BRIDGE, "--netns",
                        lab.bridge_ns, "--interval", "1", "--duration", "300",
                        start_timeout=START_TIMEOUT)
        send(lab.host_ns(1), ether(HIDDEN_MAC, lab.mac(1)), K)
        send(lab.host_ns(2), ether(dst, lab.mac(2)), K)
        send(lab.host_ns(3), ether(dst, lab.mac(3)), K)
        send(lab.host_ns(4), ether(dst, lab.mac(4)), K)
        send(lab.host_ns(5), ether(dst, MCAST_SRC), K)
        send(lab.host_ns(1), ether(lab.mac(6), lab.mac(1), payload=b"\x00" * 1386), K)  # 1400 B
        # The same fault on the same-named bridge in another namespace: not ours.
        send(other.host_ns(1), ether(other.mac(2), MCAST_SRC), K)
        # Healthy traffic must add nothing: one frame each way between h1 and h7.
        send(lab.host_ns(1), ether(dst, lab.mac(1)), 3)
        send(lab.host_ns(7), ether(lab.mac(1), dst), 3)
        # The ports' states must not have moved while brtrace compiled.
        assert {i: lab.state(i) for i in (2, 3, 4)} == states
        tracer.stop(settle=1.0, timeout=CMD_TIMEOUT)   # let the last frames reach kfree_skb
        yield lab, tracer
    finally:
        if tracer is not None and tracer.proc.poll() is None:
            tracer.kill()
        other.destroy()
        lab.destroy()


def only(records: list) -> dict:
    assert len(records) == 1, records
    return records[0]


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_reported_with_6_1_reason_function_and_exact_count(run, fault):
    lab, t = run
    host, (reason, function, count) = FAULTS[fault]
    d = only(t.drops(port=lab.port(host)))
    assert (d["reason"], d["function"], d["count"]) == (reason, function, count), d
    assert d["location"].startswith(function + "+0x")
    assert d["bridge"] == BRIDGE and d["netns"] == lab.bridge_ns
    assert d["protos"] == {"0x88b5": count}


def test_listening_and_disabled_share_br_handle_frame_drop_site(run):
    """Both STP-state drops and the invalid-source drop are the one `drop:` label
    of br_handle_frame() on 6.1; learning is dropped later, after learning."""
    lab, t = run
    sites = {fault: only(t.drops(port=lab.port(FAULTS[fault][0])))["location"] for fault in FAULTS}
    assert sites["stp_listening"] == sites["stp_disabled"] == sites["multicast_source_mac"]
    assert sites["stp_learning"] != sites["unicast_to_ingress_port"]


@pytest.mark.parametrize("host, state", [(2, "listening"), (3, "disabled")])
def test_stp_state_explained_without_a_bridge_reason(run, host, state):
    lab, t = run
    d = only(t.drops(port=lab.port(host)))
    assert f"STP state {state}" in d["explanation"], d


def test_unicast_back_to_ingress_port_explained(run):
    lab, t = run
    d = only(t.drops(port=lab.port(1)))
    assert f"{HIDDEN_MAC} is learned on {lab.port(1)}, the ingress port" in d["explanation"], d


def test_egress_mtu_drop_is_on_the_egress_port(run):
    lab, t = run
    d = only(t.drops(function="br_dev_queue_push_xmit"))
    assert d["port"] == lab.port(6) and d["stage"] == "bridge egress"
    assert f"MTU {SMALL_MTU}" in d["explanation"], d


def test_nothing_else_and_summary_totals(run):
    """No drop outside the faults (healthy frames, the other namespace's bridge
    br0 with the same ifindexes), and the summary adds up exactly."""
    lab, t = run
    expected = {lab.port(h): c for h, (_r, _f, c) in FAULTS.values()}
    assert {d["port"]: d["count"] for d in t.kind("drop")} == expected
    s = only(t.kind("summary"))
    assert s["drops"] == sum(expected.values()) == len(FAULTS) * K
    assert s["stats"]["drops_seen"] == len(FAULTS) * K
    assert s["probes"]["drops"] == "raw_tracepoint:kfree_skb"   # other hooks may join
    assert s["netns"] == lab.bridge_ns
    assert t.proc.returncode == 0, t.stderr


def test_samples_decode_frames_with_6_1_offsets(run):
    lab, t = run
    s = only(t.kind("summary"))
    samples = t.kind("drop_sample")
    assert s["stats"]["events_lost"] == 0 and s["stats"]["events_rate_limited"] == 0
    assert len(samples) == len(FAULTS) * K
    mc = [x for x in samples if x["port"] == lab.port(5)]
    assert len(mc) == K
    assert all(x["src_mac"] == MCAST_SRC and x["dst_mac"] == lab.mac(7) for x in mc)
    big = [x for x in samples if x["port"] == lab.port(6)]
    assert big and all(x["src_mac"] == lab.mac(1) and x["dst_mac"] == lab.mac(6) for x in big)
    # the frame's length field is being renamed (skb_len -> wire_len): accept either
    assert all(max(x.get("wire_len", 0), x.get("skb_len", 0)) >= 1386 for x in big)


def test_brtrace_attaches_within_bound(run):
    _lab, t = run
    assert t.startup < START_TIMEOUT


def test_doctor_picks_kprobe_for_forward():
    # br_forward is in bridge.ko: it is in /proc/kallsyms only once the module is loaded.
    sh("modprobe", "bridge")
    out = sh(*BRTRACE, "doctor", "-o", "json")
    doc = json.loads(out.stdout)
    assert doc["kernel"].startswith("6.1.")
    assert doc["kprobes"] is True and doc["fentry"] is True
    assert doc["headers"].startswith("running kernel's headers")
    assert doc["hooks"]["drops"]["mechanism"] == "raw_tracepoint"
    fwd = doc["hooks"]["forward"]
    assert (fwd["mechanism"], fwd["target"]) == ("kprobe", "br_forward+br_flood+br_pass_frame_up"), fwd
    assert "fentry" in fwd["why"]                   # why fentry was passed over
    assert doc["tcx"] is False
    ports = doc["hooks"]["ports"]
    assert ports["mechanism"] == "raw_tracepoint" and "kernel has no tcx" in ports["why"], ports
