"""`brtrace watch` on the real kernel: quiet while the bridge is healthy, an
incident bundle when a loop starts (or is already running), closed when it
ends, bounded on disk, and serving while the bridge comes and goes.

Faults are the ones of test_loop_verdicts: two bridges cabled twice (a
single broadcast circulates for ever) and a reflecting tap with hairpin.
brtrace watch is our child, stopped by PID; its incident directory is the
test's tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import REPO, Served, keep_asking, metric_value, storm_between_1_and_2, wait_for
from lab import BROADCAST, ETH_P_LAB, ether, ping, run, send_frames

pytestmark = pytest.mark.integration

QUIET = "3"          # seconds without symptoms before an incident closes and detail disarms
TSHARK = shutil.which("tshark")


def watch(tmp_path: Path, lab, *args: str, dir_: Path | None = None, duration: float = 120.0) -> Served:
    return Served(tmp_path, "watch", lab.bridge_ns, lab.bridge, duration=duration,
                  args=("--dir", str(dir_ or tmp_path / "incidents"), "--quiet", QUIET, *args))


def bundles(d: Path) -> list:
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def incident(b: Path) -> dict:
    return json.loads((b / "incident.json").read_text())


def seed_loop(lab) -> tuple:
    """Two-link loop to a peer bridge, STP off, and one broadcast in it: the
    storm runs until break_loop(). Returns (loop ports, time of the seed)."""
    loop = lab.add_peer_bridge_loop(links=2, stp=False, hold=60)
    h1 = lab.host(1)
    t0 = time.monotonic()
    send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"storm"), 1)
    return sorted(p for p, _peer in loop.links), t0


def pcap_comments(path: Path) -> list:
    out = subprocess.run([TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.comment"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def kernel_lines(fd: int, wanted: str) -> list:
    """Messages read from a /dev/kmsg fd (non-blocking) that contain `wanted`."""
    out = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            return out
        except BrokenPipeError:
            continue
        msg = rec.decode(errors="replace").split(";", 1)[-1].split("\n", 1)[0]
        if wanted in msg:
            out.append(msg)


def scrape(w: Served, name: str, **labels) -> float:
    return metric_value(w.scrape(), name, **labels)


def one_bundle_soon(inc: Path, w: Served, since: float, limit: float = 3.0) -> Path:
    """The one bundle that appears within `limit` seconds of `since`, its
    incident.json written (watch makes the directory first, then the file)."""
    found, _ = wait_for(lambda: [b for b in bundles(inc) if (b / "incident.json").exists()], timeout=6)
    took = time.monotonic() - since
    assert found and took < limit, f"bundle after {took:.1f} s: {w.output()}"
    (b,) = found
    return b


def loop_history(rec: dict) -> list:
    """incident.json's history from the first entry with a loop verdict on:
    per entry, its l2_loop findings as (kind, sorted ports, active)."""
    loops = [[(f["evidence"]["kind"], sorted(f["ports"]), f["active"]) for f in h["findings"]
              if f["type"] == "l2_loop"] for h in rec["history"]]
    first = next(i for i, seen in enumerate(loops) if seen)
    return loops[first:]


@pytest.mark.skipif(not TSHARK, reason="tshark not installed (scripts/setup installs it)")
def test_quiet_bridge_then_a_loop_then_quiet_again(lab, tmp_path, tracer_factory):
    """10 s of a healthy bridge (a guest pinging its neighbour): no bundle,
    detail never armed. Then a loop: a bundle within 3 s of its first frame,
    the operator's command run once with the documented variables, a pcapng
    of the loop's ports, a timeline reaching back before the trigger, the
    verdict `brtrace loops` gives. The loop broken: the incident closes
    (one bundle for the episode), the command runs for the close, detail
    disarms. Then the bridge is deleted and re-created: served throughout,
    brtrace_bridge_up 0 then 1."""
    inc = tmp_path / "incidents"
    cmd = ('env | grep ^BRTRACE_ | sort > "$BRTRACE_INCIDENT_DIR/env-$BRTRACE_INCIDENT_EVENT.txt"; '
           'echo "ran for $BRTRACE_INCIDENT_EVENT"')
    w = watch(tmp_path, lab, "--on-incident", cmd, "--on-close")
    try:
        h1, h2 = lab.host(1), lab.host(2)
        ping(h1.netns, h2.ip, count=10, interval=1.0)           # healthy traffic for 10 s
        assert bundles(inc) == [], [p.name for p in bundles(inc)]
        assert scrape(w, "brtrace_detail_armed", bridge=lab.bridge) == 0
        assert scrape(w, "brtrace_incident_open", bridge=lab.bridge) == 0
        assert "detail armed" not in w.output(), w.output()
        assert scrape(w, "brtrace_port_packets_total", port=h1.port, direction="rx") >= 10

        links, t0 = seed_loop(lab)
        b = one_bundle_soon(inc, w, since=t0)          # from the loop's first frame
        took = time.monotonic() - t0
        assert b.stat().st_mode & 0o777 == 0o700
        armed, _ = wait_for(lambda: scrape(w, "brtrace_detail_armed", bridge=lab.bridge) == 1, timeout=2)
        assert armed
        # What `brtrace loops` says of the same storm, attached now.
        t = tracer_factory("loops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5",
                           "--duration", "60")
        time.sleep(4.0)
        t.stop(settle=0.2)
        (lf,) = t.findings("l2_loop")
        rec = incident(b)
        assert rec["state"] == "open"
        v = rec["verdict"]
        assert (v["type"], v["kind"], sorted(v["ports"])) == ("l2_loop", lf["evidence"]["kind"], sorted(lf["ports"]))
        assert (v["kind"], sorted(v["ports"]), sorted(v["culprit_ports"])) == ("loop_between_ports", links, links)

        lab.break_loop()
        broken = time.monotonic()
        closed, _ = wait_for(lambda: incident(b)["state"] == "closed", timeout=float(QUIET) + 6, every=0.2)
        assert closed, w.output()
        disarmed, _ = wait_for(lambda: scrape(w, "brtrace_detail_armed", bridge=lab.bridge) == 0,
                               timeout=float(QUIET) + 6, every=0.2)
        assert disarmed, w.output()
        print(f"\nbundle after {took:.2f} s; closed and disarmed {time.monotonic() - broken:.1f} s after the break")
        assert bundles(inc) == [b], "one incident per episode"
        assert scrape(w, "brtrace_incidents_total", bridge=lab.bridge) == 1

        # The bridge goes and comes back: watch keeps serving.
        lab.ip(lab.bridge_ns, "link", "del", lab.bridge)
        went, _ = wait_for(lambda: scrape(w, "brtrace_bridge_up", bridge=lab.bridge) == 0, timeout=3)
        assert went, w.output()
        lab.ip(lab.bridge_ns, "link", "add", lab.bridge, "type", "bridge", "mcast_snooping", "0")
        lab.ip(lab.bridge_ns, "link", "set", lab.bridge, "up")
        back, took_back = wait_for(lambda: scrape(w, "brtrace_bridge_up", bridge=lab.bridge) == 1, timeout=5)
        assert back and took_back < 2.5, (took_back, w.output())
    finally:
        rc = w.stop()
    assert rc == 0, w.output()
    log = w.output()
    assert log.count("detail armed") == 1 and log.count("detail disarmed") == 1, log

    rec = incident(b)
    assert rec["type"] in ("mac_flap", "l2_loop", "own_address_echo"), rec["type"]
    assert rec["closed_because"] == "quiet"
    ran = rec["on_incident"]
    assert sorted(r["event"] for r in ran) == ["close", "open"], ran
    assert all(r["status"] == 0 for r in ran), ran
    env = dict(line.split("=", 1) for line in (b / "env-open.txt").read_text().splitlines())
    assert env["BRTRACE_INCIDENT_DIR"] == str(b) and env["BRTRACE_INCIDENT_ID"] == b.name
    assert env["BRTRACE_BRIDGE"] == lab.bridge and env["BRTRACE_NETNS"] == lab.bridge_ns
    assert env["BRTRACE_INCIDENT_EVENT"] == "open" and env["BRTRACE_INCIDENT_TYPE"] == rec["type"]
    assert set(env["BRTRACE_PORTS"].split()) <= set(links) | {h1.port, h2.port}
    assert (b / "on-incident-open.log").read_text().strip() == "ran for open"

    # The timeline: one record a second, from before the trigger to the close.
    lines = [json.loads(x) for x in (b / "timeline.jsonl").read_text().splitlines()]
    opened = rec["opened_at"]
    before = [r for r in lines if r["t"] < opened]
    assert len(before) >= 8, f"{len(before)} records before the trigger"
    assert any(r["armed"] for r in lines) and not before[0]["armed"]
    assert sum(r["ports"][h1.port].get("tx_packets", 0) for r in before[-6:]) >= 4   # the guest's pings
    assert any(r["ports"].get(links[0], {}).get("rx_packets", 0) > 1000 for r in lines)

    # The capture: frames of the loop's ports, each named by port and direction.
    comments = pcap_comments(b / "capture.pcapng")
    assert len(comments) > 100, len(comments)
    seen = {c.split()[0] for c in comments}
    assert seen <= set(links) | {h1.port, h2.port}
    assert set(links) & seen
    assert all(" in: entered " in c or " out: left " in c for c in comments), comments[:3]
    assert rec["capture"]["packets"] == len(comments)

    # `brtrace incidents` lists it with the verdict; `show` prints it as `loops` would.
    listed = subprocess.run([sys.executable, "-m", "tracer.cli", "incidents", "--dir", str(inc), "--json"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert listed.returncode == 0, listed.stderr
    (item,) = [json.loads(x) for x in listed.stdout.splitlines()]
    assert item["id"] == b.name and item["state"] == "closed" and item["verdict"]["kind"] == "loop_between_ports"
    shown = subprocess.run([sys.executable, "-m", "tracer.cli", "incidents", "show", b.name[:16], "--dir", str(inc)],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert shown.returncode == 0 and "l2_loop" in shown.stdout and "capture.pcapng" in shown.stdout, shown

    for name, ports in (("open", set(links)), ("close", set(links[:1]))):   # break_loop() deleted links[1]
        snap = json.loads((b / "snapshots" / f"{name}.json").read_text())
        assert {p["port"] for p in snap["ports"]} == ports | {h1.port, h2.port}
        assert snap["fdb"], snap


def test_storm_running_before_watch_and_sigterm_mid_incident(lab, tmp_path):
    """The storm started 3 s before watch: detail armed and a bundle within 3 s
    of watch being ready. The operator's command hangs: killed at its 1 s
    timeout and reported. SIGTERM while the incident is open: exit 0, the
    bundle closed consistently (valid JSON, a pcapng tshark reads)."""
    inc = tmp_path / "incidents"
    links, _t0 = seed_loop(lab)
    time.sleep(3.0)
    w = watch(tmp_path, lab, "--on-incident", "sleep 60", "--command-timeout", "1")
    try:
        b = one_bundle_soon(inc, w, since=time.monotonic())
        killed, _ = wait_for(lambda: incident(b)["on_incident"], timeout=6, every=0.2)
        assert killed, incident(b)
        (r,) = incident(b)["on_incident"]
        assert "killed at timeout" in r["result"] and r["duration_s"] < 4, r
        assert incident(b)["state"] == "open"
        time.sleep(4.0)      # the storm goes on unchanged: nothing may flip meanwhile
    finally:
        rc = w.stop()
        lab.break_loop()
    assert rc == 0, w.output()
    rec = incident(b)
    assert rec["state"] == "closed" and rec["closed_because"] == "watch stopped"
    assert (rec["verdict"]["type"], rec["verdict"]["kind"], sorted(rec["verdict"]["ports"])) == \
        ("l2_loop", "loop_between_ports", links)
    # incident.json's history gains an entry only when the findings change: once the
    # loop's verdict is there, every later entry holds it unchanged and active
    assert all(seen == [("loop_between_ports", links, True)] for seen in loop_history(rec)), rec["history"]
    assert len(rec["history"]) <= 4, [sorted({f["type"] for f in h["findings"]}) for h in rec["history"]]
    if TSHARK:
        assert len(pcap_comments(b / "capture.pcapng")) > 0


def test_caps_hold_and_an_unwritable_directory_is_a_metric(lab, tmp_path):
    """A long storm's bundle stops growing at --bundle-size; with
    --max-bundles 1 the next incident (a reflecting tap, after the loop)
    replaces the oldest bundle. A second watch whose --dir cannot be created
    (a file stands in the way) counts write errors, logs them, and keeps
    serving."""
    inc = tmp_path / "incidents"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be\n")
    w = watch(tmp_path, lab, "--bundle-size", "1", "--max-bundles", "1")
    bad = watch(tmp_path, lab, dir_=blocker / "incidents")
    try:
        links, _t0 = seed_loop(lab)
        first = one_bundle_soon(inc, w, since=time.monotonic(), limit=6.0)
        time.sleep(6.0)
        size = sum(f.stat().st_size for f in first.rglob("*") if f.is_file())
        assert size <= (1 << 20) + (64 << 10), size
        errors, _ = wait_for(lambda: scrape(bad, "brtrace_incident_write_errors_total") > 0, timeout=3)
        assert errors, bad.output()
        lab.break_loop()
        closed, _ = wait_for(lambda: incident(first)["state"] == "closed", timeout=float(QUIET) + 8, every=0.2)
        assert closed, w.output()
        rec = incident(first)
        assert rec["capture"]["truncated_by"] == "bytes", rec["capture"]

        tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=5_000_000, hold=15, comm="tincd")
        run(["bridge", "-n", lab.bridge_ns, "link", "set", "dev", tap.name, "hairpin", "on"])
        h1 = lab.host(1)
        kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(kmsg, 0, os.SEEK_END)
        send_frames(h1.netns, h1.ifname, ether(BROADCAST, h1.mac, ETH_P_LAB, b"echo"), 1)
        # The host's own ARP from br-int goes out t3o and comes back: the
        # kernel logs "received packet on t3o with own address as source address".
        lab.ip(lab.bridge_ns, "addr", "add", "10.77.0.254/24", "dev", lab.bridge)
        run(["ip", "netns", "exec", lab.bridge_ns, "ping", "-c", "1", "-W", "1", "10.77.0.250"], check=False)
        replaced, _ = wait_for(lambda: [p for p in bundles(inc) if p != first], timeout=8)
        assert replaced, w.output()
        assert bundles(inc) == replaced, "the oldest bundle goes when the count cap is reached"
        time.sleep(1.5)                 # a second tick writes the lines read meanwhile
        logged = kernel_lines(kmsg, f"received packet on {tap.name} with own address as source address")
        os.close(kmsg)
        lab.stop_tap_reader(tap.name)
    finally:
        rc = w.stop()
        rc_bad = bad.stop()
    assert rc == 0, w.output()
    assert rc_bad == 0, bad.output()
    (second,) = replaced
    kept = (second / "kernel.log").read_text() if (second / "kernel.log").exists() else ""
    # The printk is net_ratelimit()ed machine-wide: assert only on what the
    # kernel did log (seen through our own /dev/kmsg reader).
    print(f"\nown-address kernel lines: {len(logged)} logged, "
          f"{sum(1 for line in logged if line in kept)} in the bundle")
    for line in logged:
        assert line in kept, (line, kept[-2000:])
    assert "cannot create" in bad.output() and "a file stands where the directory should be" in bad.output()
    assert not os.path.exists(blocker / "incidents")


def test_tinc_storm_running_before_watch_signals_tincd_for_the_incident(mesh, tmp_path):
    """The morning of the post-mortem, with real tinc daemons: a second path
    between nodes 1 and 2 loops every broadcast through the VPN, already
    raging when watch starts on node 3's bridge. The bundle names only node
    3's tinc tap, with the verdict `brtrace loops` gives there (the loop is
    beyond that port), and the README's --on-incident example (SIGINT to
    tincd, done here by the PID we started) switches tinc's debug logging on
    for the incident and off again at its close."""
    m = mesh("w")
    n3 = m.node(3)
    inc = tmp_path / "incidents"
    storm_between_1_and_2(m)
    asker = keep_asking(m.vm(3).netns, "10.88.0.1", 20)
    try:
        time.sleep(3.0)
        w = Served(tmp_path, "watch", n3.netns, "br-int", duration=90,
                   args=("--dir", str(inc), "--quiet", QUIET, "--on-incident", f"kill -INT {n3.pid}",
                         "--on-close"))
        try:
            b = one_bundle_soon(inc, w, since=time.monotonic())
            time.sleep(5.0)
            rec = incident(b)
            assert rec["state"] == "open"
            v = rec["verdict"]
            assert (v["type"], v["kind"], v["ports"], v["culprit_ports"]) == \
                ("l2_loop", "loop_beyond_port", [n3.tap], []), v
            assert "vpn tincd" in v["hint"], v
            assert rec["ports"] == [n3.tap], rec["ports"]     # never the VM's port
            m.break_direct_link(1, 2)
            closed, _ = wait_for(lambda: incident(b)["state"] == "closed", timeout=float(QUIET) + 8, every=0.2)
            assert closed, w.output()
            ran, _ = wait_for(lambda: len(incident(b).get("on_incident", [])) == 2, timeout=5, every=0.2)
            assert ran, incident(b)
        finally:
            rc = w.stop()
    finally:
        asker.kill()
        asker.wait()
    assert rc == 0, w.output()
    rec = incident(b)
    assert [(r["event"], r["status"]) for r in rec["on_incident"]] == [("open", 0), ("close", 0)]
    assert rec["closed_because"] == "quiet"
    # once there, the loop's verdict holds unchanged while the storm runs (until the break)
    held = [seen for seen in loop_history(rec) if seen != [("loop_beyond_port", [n3.tap], False)]]
    assert all(seen == [("loop_beyond_port", [n3.tap], True)] for seen in held), rec["history"]
    # tincd's own log: debug level 5 from the open, packets logged, back to 0 at the close
    log = Path(n3.log).read_text(errors="replace")
    on = log.index("Temporarily setting debug level to 5")
    off = log.index("Reverting to old debug level (0)", on)
    assert "Broadcasting packet" in log[on:off] or "Received packet" in log[on:off], log[on:on + 500]
    assert bundles(inc) == [b]
