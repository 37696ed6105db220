"""Ports that join or leave while brtrace runs, and taps that lose their reader."""

import time

import pytest

from lab import BROADCAST, ETH_P_LAB, ether, send_frames

pytestmark = pytest.mark.integration


def test_port_added_and_removed_mid_run(lab, tracer_factory):
    t = tracer_factory("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns,
                       "--interval", "5", "--duration", "120")
    started = time.monotonic()
    h3 = lab.add_host(3)                      # a VM starts: its vnet2 joins the bridge
    time.sleep(0.6)                           # < 1 s: netlink, not the 5 s interval
    send_frames(h3.netns, h3.ifname, ether(BROADCAST, h3.mac, ETH_P_LAB, b"new"), 11)
    gone = lab.host(2).port
    lab.ip(lab.bridge_ns, "link", "del", gone)   # another VM stops
    time.sleep(0.6)
    t.stop()
    assert time.monotonic() - started < 5, "test must finish inside one interval to prove netlink"
    events = {(e["event"], e["port"]) for e in t.kind("port_event")}
    assert ("added", h3.port) in events and ("removed", gone) in events
    added = next(e for e in t.kind("port_event") if e["event"] == "added")
    assert added["at_s"] < 1.5
    counters = {p["port"]: p["counters"] for p in t.kind("port")}
    assert counters[h3.port]["rx_broadcast"] == 11      # counted from its first frame


def test_tap_losing_its_reader_is_reported_with_the_fdb_flush(lab, tracer_factory):
    tap = lab.add_tap(lab.prefix + "t0", reader="stalled")
    # A guest behind the tap announces itself: the bridge learns its MAC there.
    guest = "02:b7:00:00:aa:09"
    t = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns,
                       "--interval", "0.5", "--duration", "120")
    lab.add_fdb(guest, tap.name)
    time.sleep(0.6)
    lab.stop_tap_reader(tap.name)             # the VM / VPN process exits
    time.sleep(0.8)
    t.stop()
    downs = [e for e in t.kind("port_event") if e["event"] == "down" and e["port"] == tap.name]
    assert len(downs) == 1 and "reader" in downs[0]["note"]
