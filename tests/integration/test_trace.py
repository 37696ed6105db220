"""`brtrace trace` on a real bridge: journeys, in-kernel filters, pcapng read by tshark.

Each test builds its own lab (prefix brtj..., 3 hosts behind vnet0..vnet2),
runs the trace view as a child process (`python -m tracer.cli trace`, the
stand-alone entry until the click command exists) with `-o json`, sends a
bounded number of frames, and checks the step and journey records.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lab import ETH_P_LAB, Lab, arp_request, ether, ipv4_udp, ipv6_icmp, send_frames

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BCAST = "ff:ff:ff:ff:ff:ff"
_ids = itertools.count(1)


class TraceRun:
    """The trace view as our child process; records are its JSON lines."""

    def __init__(self, tmp_path, lab, *args, start_timeout=60.0):
        self.ready = tmp_path / f"ready-{next(_ids)}"
        argv = [sys.executable, "-m", "tracer.cli", "trace", "--bridge", lab.bridge,
                "--netns", lab.bridge_ns, "--duration", "60", "--interval", "0.5",
                *args, "-o", "json", "--ready-file", str(self.ready)]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + start_timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"trace exited early: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("trace did not attach in time")
            time.sleep(0.05)
        self.records = []

    def stop(self, settle=0.6, timeout=30.0, signal_it=True):
        """Let the journeys' grace period pass, SIGTERM our child by PID, collect."""
        time.sleep(settle)
        if signal_it and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            out, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("trace did not exit") from None
        assert self.proc.returncode == 0, self.stderr
        self.records = [json.loads(line) for line in out.splitlines() if line.strip()]
        return self.records

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def kind(self, kind):
        return [r for r in self.records if r.get("kind") == kind]


@pytest.fixture
def lab():
    with Lab(prefix=f"brtj{os.getpid() % 1000}x{next(_ids)}", hosts=3) as built:
        yield built


@pytest.fixture
def trace(tmp_path, lab):
    started = []

    def start(*args):
        t = TraceRun(tmp_path, lab, *args)
        started.append(t)
        return t

    yield start
    for t in started:  # a failed test must not leave a tracer (and its BPF) behind
        t.kill()


def learn(host, mac=None):
    """One broadcast from `host` so the bridge learns its MAC (or `mac`) on its port."""
    send_frames(host.netns, host.ifname, ether(BCAST, mac or host.mac, ETH_P_LAB, b"learn"), 1)


def test_frame_to_a_mac_learned_on_its_ingress_port_is_suppressed(lab, trace):
    h1 = lab.host(1)
    hidden = "02:b7:00:00:01:01"              # lives behind vnet0, like h1
    learn(h1, hidden)
    t = trace("--mac", hidden, "--count", "3")
    send_frames(h1.netns, h1.ifname, ether(hidden, h1.mac, ETH_P_LAB, b"same-port"), 5)
    t.stop(settle=0.0, signal_it=False)      # --count 3: it ends by itself
    journeys = t.kind("journey")
    assert len(journeys) == 3, t.records
    for j in journeys:
        assert [(s["step"], s["port"]) for s in j["steps"]] == [("entered", h1.port), ("freed", h1.port)]
        freed = j["steps"][1]
        assert freed["reason"] == "NOT_SPECIFIED" and freed["function"] == "br_handle_frame_finish"
        v = j["verdict"]
        assert v["decision"] == "suppressed" and v["from"] == h1.port and v["to"] == []
        assert f"{hidden} is learned on {h1.port}, the ingress port" in v["text"]
        assert v["summary"].startswith(f"entered {lab.bridge} on {h1.port} -> suppressed")
    steps = t.kind("step")
    assert len(steps) == 6 and {s["frame"] for s in steps} == {1, 2, 3}
    assert all(s["dst_mac"] == hidden and s["src_mac"] == h1.mac for s in steps)
    summary = t.kind("summary")[0]
    assert summary["journeys"] == 3 and summary["stats"]["steps_beyond_count"] >= 2


def test_unicast_between_two_hosts_enters_forwards_and_leaves(lab, trace):
    h1, h2 = lab.host(1), lab.host(2)
    learn(h2)
    t = trace("--mac", h1.mac, "--proto", "0x88b5")
    send_frames(h1.netns, h1.ifname, ether(h2.mac, h1.mac, ETH_P_LAB, b"unicast"), 4, interval=0.02)
    t.stop()
    journeys = t.kind("journey")
    assert len(journeys) == 4, t.records
    for j in journeys:
        assert [(s["step"], s["port"]) for s in j["steps"]] == [("entered", h1.port), ("left", h2.port)]
        assert j["verdict"]["decision"] == "forward" and j["verdict"]["to"] == [h2.port]
        assert j["verdict"]["summary"] == (f"entered {lab.bridge} on {h1.port} -> forward to {h2.port} "
                                           f"-> left via {h2.port}")
        assert j["steps"][0]["t"] <= j["steps"][1]["t"]
    steps = t.kind("step")
    ts = [s["ts_ns"] for s in steps]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    assert all(s["t"] > 0 for s in steps)
    # the bridge forwards the very skb it received
    for n in {s["frame"] for s in steps}:
        assert len({s["skb"] for s in steps if s["frame"] == n}) == 1


def test_mac_filter_during_a_broadcast_flood_keeps_only_that_mac(lab, trace):
    h1, h2, h3 = lab.host(1), lab.host(2), lab.host(3)
    t = trace("--mac", h1.mac)
    send_frames(h2.netns, h2.ifname, ether(BCAST, h2.mac, ETH_P_LAB, b"noise"), 30)
    send_frames(h1.netns, h1.ifname, ether(BCAST, h1.mac, ETH_P_LAB, b"wanted"), 5, interval=0.01)
    send_frames(h3.netns, h3.ifname, ether(BCAST, h3.mac, ETH_P_LAB, b"noise"), 30)
    t.stop()
    steps = t.kind("step")
    assert steps and all(s["src_mac"] == h1.mac for s in steps), {s["src_mac"] for s in steps}
    journeys = t.kind("journey")
    assert len(journeys) == 5, [j["verdict"]["summary"] for j in journeys]
    for j in journeys:
        v = j["verdict"]
        assert v["decision"] == "flood" and v["from"] == h1.port
        assert sorted(v["to"]) == sorted([h2.port, h3.port]) and v["local"]


def test_port_filter_keeps_the_entry_of_frames_selected_by_their_egress_port(lab, trace):
    h1, h2, h3 = lab.host(1), lab.host(2), lab.host(3)
    learn(h2)
    t = trace("--port", h3.port, "--proto", "0x88b5")
    send_frames(h1.netns, h1.ifname, ether(h2.mac, h1.mac, ETH_P_LAB, b"not-via-vnet2"), 5)
    send_frames(h1.netns, h1.ifname, ether(BCAST, h1.mac, ETH_P_LAB, b"flood"), 3, interval=0.01)
    t.stop()
    journeys = t.kind("journey")
    assert len(journeys) == 3, [j["verdict"]["summary"] for j in journeys]
    for j in journeys:
        assert j["steps"][0]["step"] == "entered" and j["steps"][0]["port"] == h1.port
        assert h3.port in j["verdict"]["to"] and j["verdict"]["decision"] == "flood"


def _tshark_fields(path, *fields):
    argv = ["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|"]
    for f in fields:
        argv += ["-e", f]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split("|") for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed (scripts/setup installs it)")
def test_pcapng_read_back_with_tshark(lab, trace, tmp_path):
    h1, h2 = lab.host(1), lab.host(2)
    hidden = "02:b7:00:00:01:01"
    learn(h2)
    learn(h1, hidden)
    pcap = tmp_path / "trace.pcapng"
    t = trace("--mac", h1.mac, "--snaplen", "40", "-w", str(pcap))
    send_frames(h1.netns, h1.ifname, ether(h2.mac, h1.mac, ETH_P_LAB, b"forwarded"), 3, interval=0.01)
    send_frames(h1.netns, h1.ifname, ether(hidden, h1.mac, ETH_P_LAB, b"same-port"), 2, interval=0.01)
    t.stop()
    assert t.kind("summary")[0]["pcap_packets"] == 10
    comment = "frame.comment"
    rows = _tshark_fields(pcap, "frame.interface_name", comment, "eth.src", "eth.dst", "frame.len",
                          "frame.cap_len")
    if rows and not rows[0][1]:
        comment = "pkt_comment"               # older tshark spells it so
        rows = _tshark_fields(pcap, "frame.interface_name", comment, "eth.src", "eth.dst", "frame.len",
                              "frame.cap_len")
    assert len(rows) == 10, rows
    fwd = [r for r in rows if r[3] == h2.mac]
    same = [r for r in rows if r[3] == hidden]
    assert [(r[0], r[1].rsplit(" frame=", 1)[0]) for r in fwd] == [
        (h1.port, f"port={h1.port} step=entered"), (h2.port, f"port={h2.port} step=left")] * 3
    assert [r[0] for r in same] == [h1.port, h1.port] * 2
    assert [r[1].split(" location=")[0].rsplit(" frame=", 1)[0] for r in same] == [
        f"port={h1.port} step=entered", f"port={h1.port} step=freed reason=NOT_SPECIFIED"] * 2
    assert all(r[2] == h1.mac and r[4] == "60" and r[5] == "40" for r in rows)
    # timestamps are wall clock (ktime + the offset measured at start)
    epoch = [float(r[0]) for r in _tshark_fields(pcap, "frame.time_epoch")]
    assert all(abs(e - time.time()) < 120 for e in epoch) and epoch == sorted(epoch)


def test_arp_and_ip_filters_keep_only_arp_about_that_address(lab, trace):
    h1, h2, h3 = lab.host(1), lab.host(2), lab.host(3)
    learn(h2)
    t = trace("--arp", "--ip", h2.ip)
    send_frames(h1.netns, h1.ifname, arp_request(h1.mac, h1.ip, h2.ip), 2, interval=0.05)
    send_frames(h1.netns, h1.ifname, arp_request(h1.mac, h1.ip, h3.ip), 2, interval=0.05)
    send_frames(h1.netns, h1.ifname, ipv4_udp(h2.mac, h1.mac, h1.ip, h2.ip, 4000, 4001), 3)
    t.stop()
    steps = t.kind("step")
    assert steps and all(s["proto"] == "arp" and h2.ip in (s["arp_spa"], s["arp_tpa"]) for s in steps)
    requests = [j for j in t.kind("journey") if j["verdict"]["dst_mac"] == BCAST]
    assert len(requests) == 2
    assert all(j["verdict"]["decision"] == "flood" and j["verdict"]["from"] == h1.port for j in requests)
    # h2 answers each request: a unicast reply from vnet1 to vnet0
    replies = [j for j in t.kind("journey") if j["verdict"]["from"] == h2.port]
    assert replies and all(j["verdict"]["to"] == [h1.port] for j in replies)


def test_rate_limit_is_counted_in_the_kernel(lab, trace):
    h1, h2 = lab.host(1), lab.host(2)
    learn(h2)
    t = trace("--mac", h1.mac, "--rate", "4")
    send_frames(h1.netns, h1.ifname, ether(h2.mac, h1.mac, ETH_P_LAB, b"burst"), 40)
    t.stop()
    stats = t.kind("summary")[0]["stats"]
    assert stats["events_rate_limited_trace"] > 0
    assert stats["events_sent_trace"] + stats["events_rate_limited_trace"] + stats["events_lost_trace"] == 80
    assert len(t.kind("step")) == stats["events_sent_trace"] <= 4 * os.cpu_count()


def test_ipv6_filter_keeps_that_address_and_neighbour_discovery_for_it(lab, trace):
    """`trace --ip` with an IPv6 address, filtered in the kernel, during a flood
    of other IPv6 traffic: the guest's own packets and the solicitations for
    its address (sent to its solicited-node multicast group), nothing else;
    `--proto icmpv6` keeps ICMPv6 only."""
    h1, h2, h3 = lab.host(1), lab.host(2), lab.host(3)
    a1, a2, a3 = "2001:db8::1", "2001:db8::2", "2001:db8::3"
    learn(h2)
    learn(h1)
    t = trace("--ip", a2)
    echo = ipv6_icmp(h2.mac, h1.mac, a1, a2, 128, b"\0\1\0\1ping")
    solicit = ipv6_icmp("33:33:ff:00:00:02", h1.mac, a1, "ff02::1:ff00:2", 135,
                        bytes(4) + ipaddress.IPv6Address(a2).packed)
    other_solicit = ipv6_icmp("33:33:ff:00:00:03", h1.mac, a1, "ff02::1:ff00:3", 135,
                              bytes(4) + ipaddress.IPv6Address(a3).packed)
    flood = ipv6_icmp(h1.mac, h3.mac, a3, a1, 128, b"\0\2\0\1other")
    send_frames(h1.netns, h1.ifname, echo, 3, interval=0.02)
    send_frames(h1.netns, h1.ifname, solicit, 1)
    send_frames(h1.netns, h1.ifname, other_solicit, 2, interval=0.02)
    send_frames(h3.netns, h3.ifname, flood, 50)
    send_frames(h1.netns, h1.ifname, ipv4_udp(h2.mac, h1.mac, h1.ip, h2.ip, 4000, 4001), 3)
    t.stop()
    journeys = t.kind("journey")
    to_h2 = [j for j in journeys if j["verdict"]["dst_mac"] == h2.mac]
    ndp = [j for j in journeys if j["verdict"]["dst_mac"] == "33:33:ff:00:00:02"]
    assert len(to_h2) == 3 and len(ndp) == 1 and len(journeys) == 4, journeys
    assert all(j["verdict"]["from"] == h1.port for j in journeys)
    assert ndp[0]["verdict"]["decision"] == "flood"
    steps = t.kind("step")
    assert steps and all(s["proto"] == "ipv6" for s in steps)

    t = trace("--proto", "icmpv6")
    udp6 = ipv6_icmp(h2.mac, h1.mac, a1, a2, 0, b"\x0f\xa0\x0f\xa1\0\x0c\0\0udp!", next_header=17)
    send_frames(h1.netns, h1.ifname, udp6, 4)
    send_frames(h1.netns, h1.ifname, echo, 2, interval=0.02)
    send_frames(h1.netns, h1.ifname, ipv4_udp(h2.mac, h1.mac, h1.ip, h2.ip, 4000, 4001), 2)
    t.stop()
    assert len(t.kind("journey")) == 2
    assert {s["proto"] for s in t.kind("step")} == {"ipv6"}
