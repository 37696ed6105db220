"""tracer/incident/capture.py on a real bridge: frames of chosen ports, made
in the bridge's namespace, read back with tshark; the byte cap; a port that
joins while it runs; SIGTERM mid-capture leaves a valid file.

Each test builds its own lab (prefix brtcap<pid>x<N>: bridge br-int in
brtcap...-br, hosts behind vnet0, vnet1, ...) and removes it afterwards.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lab import ETH_P_LAB, Lab, arp_request, ether, send_frames
from lab.proc import netns_path, run
from lab.traffic import start_sender, wait_sender

from tracer.incident.capture import Capture

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed (scripts/setup installs it)"),
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_ids = itertools.count(1)


@pytest.fixture
def lab():
    with Lab(prefix=f"brtcap{os.getpid() % 10000}x{next(_ids)}", hosts=2) as built:
        yield built


def ifindex(lab: Lab, dev: str) -> int:
    return json.loads(run(["ip", "-n", lab.bridge_ns, "-j", "link", "show", "dev", dev]).stdout)[0]["ifindex"]


def tshark(path) -> list:
    """(interface, comment, source MAC) per frame; tshark must read the whole file."""
    proc = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-E", "separator=|", "-e",
                           "frame.interface_name", "-e", "frame.comment", "-e", "eth.src"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [tuple(line.split("|")) for line in proc.stdout.splitlines() if line.strip()]


def test_ports_directions_and_a_port_that_joins(lab, tmp_path):
    h1, h2 = lab.host(1), lab.host(2)
    path = tmp_path / "capture.pcapng"
    with open(path, "wb", buffering=0) as f:
        cap = Capture(f, lab.bridge, netns_path(lab.bridge_ns), snaplen=64, max_seconds=30)
        assert cap.start({h2.port: ifindex(lab, h2.port)})
        h3 = lab.add_host(3)
        assert cap.add_port(h3.port, ifindex(lab, h3.port))
        time.sleep(0.3)                                  # the reader polls the new socket
        send_frames(h1.netns, h1.ifname, arp_request(h1.mac, h1.ip, "10.77.0.99"), 20, interval=0.005)
        send_frames(h2.netns, h2.ifname, ether("02:b7:00:00:0e:0e", h2.mac, ETH_P_LAB, b"in"), 10,
                    interval=0.005)
        time.sleep(0.3)
        stats = cap.stop()
    rows = tshark(path)
    counts = {}
    for iface, comment, src in rows:
        if src in (h1.mac, h2.mac):
            counts[(iface, comment, src)] = counts.get((iface, comment, src), 0) + 1
    br = lab.bridge
    assert counts == {
        (h2.port, f"{h2.port} out: left {br} by {h2.port}", h1.mac): 20,   # h1's ARP, flooded to h2
        (h3.port, f"{h3.port} out: left {br} by {h3.port}", h1.mac): 20,   # ... and to the port that joined
        (h2.port, f"{h2.port} in: entered {br} by {h2.port}", h2.mac): 10,
        (h3.port, f"{h3.port} out: left {br} by {h3.port}", h2.mac): 10,   # unknown unicast floods
    }, rows
    assert stats["packets"] == len(rows) and stats["truncated_by"] is None and stats["port_errors"] == {}
    assert stats["bytes"] == path.stat().st_size and stats["kernel_drops"] == 0


def test_byte_cap_stops_it(lab, tmp_path):
    h1, h2 = lab.host(1), lab.host(2)
    path = tmp_path / "capture.pcapng"
    with open(path, "wb", buffering=0) as f:
        cap = Capture(f, lab.bridge, netns_path(lab.bridge_ns), max_bytes=4096, max_seconds=30)
        cap.start([(h1.port, None), (h2.port, None)])
        send_frames(h1.netns, h1.ifname, ether("02:b7:00:00:0e:0e", h1.mac, ETH_P_LAB, b"x"), 50, interval=0.002)
        deadline = time.monotonic() + 5
        while cap.running and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = cap.stop()
    assert stats["truncated_by"] == "bytes" and stats["bytes"] == path.stat().st_size <= 4096
    rows = tshark(path)
    assert len(rows) == stats["packets"] and 10 < len(rows) < 50


CHILD = """
import sys, time
from tracer.incident.capture import Capture
f = open(sys.argv[1], "wb", buffering=0)
cap = Capture(f, sys.argv[2], sys.argv[3], max_seconds=60)
cap.start([(sys.argv[4], None), (sys.argv[5], None)])
open(sys.argv[6], "w").close()
time.sleep(60)
"""


def test_sigterm_mid_capture_leaves_a_valid_file(lab, tmp_path):
    h1, h2 = lab.host(1), lab.host(2)
    path, ready = tmp_path / "capture.pcapng", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), lab.bridge, netns_path(lab.bridge_ns),
                              h1.port, h2.port, str(ready)], env={**os.environ, "PYTHONPATH": REPO})
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        frame = ether("02:b7:00:00:0e:0e", h1.mac, ETH_P_LAB, b"storm")
        sender = start_sender(h1.netns, h1.ifname, frame, 20000, interval=0.0)
        time.sleep(0.3)
        child.send_signal(signal.SIGTERM)             # while frames still arrive
        assert child.wait(timeout=10) == -signal.SIGTERM
        wait_sender(sender, timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    rows = tshark(path)
    assert len(rows) > 0


def test_a_port_that_leaves_is_dropped(lab, tmp_path):
    h1, h2 = lab.host(1), lab.host(2)
    with open(tmp_path / "capture.pcapng", "wb", buffering=0) as f:
        cap = Capture(f, lab.bridge, netns_path(lab.bridge_ns), max_seconds=30)
        cap.start([(h1.port, None), (h2.port, None)])
        time.sleep(0.3)
        lab.ip(lab.bridge_ns, "link", "del", h2.port)
        time.sleep(0.5)
        cpu = time.process_time()
        time.sleep(0.5)
        assert time.process_time() - cpu < 0.1        # the reader is not spinning on a dead socket
        stats = cap.stats()
        assert stats["ports"] == [h1.port] and h2.port in stats["port_errors"] and cap.running
        cap.stop()
    assert tshark(tmp_path / "capture.pcapng") == []
