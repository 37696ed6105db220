"""Exact counts under load, two tracers at once, SIGKILL then restart."""

import json
import os
import signal
import subprocess
import time

import pytest

from progs import held_prog_ids, wait_unloaded
from tracer.lab import ETH_P_LAB, ether, send_frames

pytestmark = pytest.mark.integration


def raw_tracepoint_progs() -> set:
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out) if p.get("type") == "raw_tracepoint"}


def stalled_tap(lab, qlen=10):
    tap = lab.add_tap(lab.prefix + "t0", reader="stalled", txqueuelen=qlen)
    mac = "02:b7:00:00:aa:01"
    lab.add_fdb(mac, tap.name)
    return tap, mac


def test_exact_count_at_full_speed(lab, tracer_factory):
    """100,000 frames to a tap whose reader never reads: every drop counted,
    while per-packet records are rate-limited (and that is said)."""
    h1 = lab.host(1)
    tap, mac = stalled_tap(lab, qlen=10)
    t = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "300")
    N = 100_000
    send_frames(h1.netns, h1.ifname, ether(mac, h1.mac, ETH_P_LAB, b"x"), N, timeout=120)
    t.stop(settle=0.5)
    assert t.count(port=tap.name, reason="FULL_RING") == N - 10
    stats = t.kind("summary")[0]["stats"]
    assert stats["drop_keys_full"] == 0
    samples = len(t.kind("drop_sample"))
    # Every drop record not delivered is counted: sent + limited + lost covers all drops.
    assert samples == stats["events_sent_drop"]
    assert (stats["events_sent_drop"] + stats["events_rate_limited_drop"] + stats["events_lost_drop"]
            == stats["drops_seen"] == N - 10)
    assert stats["events_rate_limited_drop"] > 0
    assert lab.link_stats(lab.bridge_ns, tap.name)["tx_dropped"] == N - 10


def test_two_instances_on_one_bridge_count_the_same(lab, tracer_factory):
    h1 = lab.host(1)
    tap, mac = stalled_tap(lab, qlen=5)
    a = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "120")
    b = tracer_factory("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "120")
    send_frames(h1.netns, h1.ifname, ether(mac, h1.mac, ETH_P_LAB, b"x"), 500)
    a.stop()
    send_frames(h1.netns, h1.ifname, ether(mac, h1.mac, ETH_P_LAB, b"x"), 100)
    b.stop()
    assert a.count(port=tap.name, reason="FULL_RING") == 495
    assert b.count(port=tap.name, reason="FULL_RING") == 595


def test_sigkill_leaves_nothing_and_restart_works(lab, tracer_factory):
    """bcc's programs and maps live as long as their file descriptors: a
    SIGKILLed brtrace leaves nothing attached, and a new one starts cleanly."""
    t = tracer_factory("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "120")
    held = held_prog_ids(t.proc.pid)
    assert len(held & raw_tracepoint_progs()) >= 4      # kfree_skb, rx, tx, fdb
    os.kill(t.proc.pid, signal.SIGKILL)
    t.proc.wait(timeout=10)
    assert wait_unloaded(held) == set()
    h1, h2 = lab.host(1), lab.host(2)
    t2 = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "60")
    send_frames(h1.netns, h1.ifname, ether(h2.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"x"), 7)
    t2.stop()
    assert t2.count(reason="MAC_INVALID_SOURCE") == 7
