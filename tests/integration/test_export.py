"""`brtrace export` on a real bridge, scraped over HTTP and by a real Prometheus.

Ground truth as in test_drops: a tap whose reader never reads holds exactly
txqueuelen frames, so K frames to it make exactly K - Q FULL_RING drops. The
tap has flooding turned off, so the other traffic (a ping, with its ARP
broadcasts) never takes a slot in its ring.

The exporter, `brtrace drops`, and Prometheus are children of the test,
started with bounded durations and stopped by PID. Everything lives in
namespaces prefixed brtx; the tools listen on free loopback ports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from harness import (Served, free_port, http_get, metric_value as value, parse_metrics as parse, pdeathsig,
                     stop_pid, wait_for as _wait)
from lab import BROADCAST, ETH_P_LAB, Lab, ether, ping, run, send_frames, start_sender, wait_sender

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "brtrace-rules.yml"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(
    not (PROMTOOL and PROMETHEUS),
    reason="promtool/prometheus not installed (Debian package `prometheus`; scripts/setup installs it)")

TAP_MAC = "02:b7:00:00:aa:01"
_ids = iter(range(1, 1000))


class Exporter(Served):
    """`brtrace export` as a child process, on a free loopback port."""

    def __init__(self, workdir: Path, lab, *bridges: str, interval: float = 0.5,
                 duration: float = 150.0, start_timeout: float = 60.0):
        super().__init__(workdir, "export", lab.bridge_ns, *(bridges or (lab.bridge,)),
                         args=("--interval", str(interval)), duration=duration, start_timeout=start_timeout)


class Prometheus:
    """A real Prometheus server scraping the exporter every second."""

    def __init__(self, workdir: Path, target_port: int, rules: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="brtx-prom-"))
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n  - {rules}\n" if rules else "")
            + "scrape_configs:\n  - job_name: brtrace\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.log = open(self.dir / "prometheus.log", "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=pdeathsig)
        try:
            self.wait_for(lambda: http_get(self.base + "/-/ready", timeout=1).strip() != "",
                          timeout=60, what="Prometheus ready")
        except BaseException:
            self.stop()
            raise

    def wait_for(self, check, timeout: float, what: str, every: float = 0.5):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.output()[-3000:]}")
            try:
                last = check()
                if last:
                    return last
            except (OSError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(every)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def api(self, path: str, **params) -> dict:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        body = json.loads(http_get(url))
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> dict:
        """Instant query -> {frozenset(labels): value}."""
        data = self.api("query", query=promql)
        return {frozenset(r["metric"].items()): float(r["value"][1]) for r in data["result"]}

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        stop_pid(self.proc)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def n_alerts() -> int:
    return sum(1 for line in RULES.read_text().splitlines() if line.strip().startswith("- alert:"))


def counters_of(scrape: dict) -> dict:
    return {k: v for k, v in scrape.items() if k[0].endswith("_total")}


def assert_monotonic(scrapes: list) -> None:
    for before, after in zip(scrapes, scrapes[1:]):
        for key, v in counters_of(before).items():
            assert key in after, f"counter series vanished: {key}"
            assert after[key] >= v, f"counter went backwards: {key} {v} -> {after[key]}"


@pytest.fixture
def lab():
    with Lab(prefix=f"brtx{os.getpid() % 1000}x{next(_ids)}", hosts=2) as built:
        yield built


@pytest.fixture
def workdir():
    d = Path(tempfile.mkdtemp(prefix="brtx-export-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def no_flood(lab: Lab, port: str) -> None:
    """Only known unicast reaches PORT: flooded frames take no slot in its ring."""
    run(["bridge", "-n", lab.bridge_ns, "link", "set", "dev", port, "flood", "off",
         "mcast_flood", "off", "bcast_flood", "off"])


# -- tests ------------------------------------------------------------------------

@needs_prometheus
def test_export_counts_drops_like_drops_view_and_prometheus(lab, workdir, tracer_factory):
    h1, h2 = lab.host(1), lab.host(2)
    K, Q = 100, 10
    tap = lab.add_tap(lab.prefix + "t0", reader="stalled", txqueuelen=Q)
    lab.add_fdb(TAP_MAC, tap.name)
    no_flood(lab, tap.name)

    exporter = Exporter(workdir, lab)
    prom = None
    try:
        drops_view = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns,
                                    "--interval", "0.5", "--duration", "120")
        prom = Prometheus(workdir, exporter.port, rules=RULES)
        scrapes = [exporter.scrape()]
        assert value(scrapes[0], "brtrace_drops_total", port=tap.name) == 0
        assert value(scrapes[0], "brtrace_probe_attached", probe="drops") == 1

        # Traffic: K frames to the stalled tap over ~3 s, a ping h1 -> h2 alongside.
        sender = start_sender(h1.netns, h1.ifname, ether(TAP_MAC, h1.mac, ETH_P_LAB, b"x"), K, 0.03)
        pinged = {}
        pinger = threading.Thread(target=lambda: pinged.update(ok=ping(h1.netns, h2.ip, count=10,
                                                                         interval=0.2)))
        pinger.start()
        try:
            while sender.poll() is None and len(scrapes) < 200:
                time.sleep(0.25)
                scrapes.append(exporter.scrape())
        finally:
            assert wait_sender(sender, timeout=60) == K
            pinger.join(timeout=30)
        during = len(scrapes) - 1
        time.sleep(1.0)                    # let the last frames land
        scrapes.append(exporter.scrape())
        text = exporter.scrape_text()
        scrapes.append(parse(text))
        drops_view.stop()

        assert pinged.get("ok"), "h1 could not ping h2 through the bridge"
        assert during >= 2, "fewer than two scrapes while traffic flowed"
        assert_monotonic(scrapes)
        tap_drops = [value(s, "brtrace_drops_total", port=tap.name, reason="FULL_RING") for s in scrapes]
        assert tap_drops[-1] == K - Q
        assert any(0 < v < K - Q for v in tap_drops), f"no scrape caught the drops midway: {tap_drops}"
        final = scrapes[-1]
        assert value(final, "brtrace_drops_total", port=tap.name) == K - Q      # FULL_RING only
        assert value(final, "brtrace_drops_total", port=tap.name, reason="FULL_RING",
                     function="tun_net_xmit") == K - Q
        # The kernel's own counter agrees; the ping passed through h1's and h2's ports.
        assert lab.link_stats(lab.bridge_ns, tap.name)["tx_dropped"] == K - Q
        assert value(final, "brtrace_port_packets_total", port=h1.port, direction="rx") >= K + 5
        assert value(final, "brtrace_port_packets_total", port=h2.port, direction="rx") >= 5
        assert value(final, "brtrace_port_arp_packets_total", port=h1.port, op="request") >= 1
        assert value(final, "brtrace_port_flood_packets_total", port=tap.name) == 0

        # `brtrace drops -o json` over the same window says the same.
        assert drops_view.count(port=tap.name, reason="FULL_RING") == K - Q
        view = {}
        for d in drops_view.drops():
            view[(d["port"], d["reason"])] = view.get((d["port"], d["reason"]), 0) + d["count"]
        exported = {}
        for (name, labels), v in final.items():
            if name == "brtrace_drops_total":
                ls = dict(labels)
                exported[(ls["port"], ls["reason"])] = exported.get((ls["port"], ls["reason"]), 0) + v
        assert exported == view

        # promtool accepts the exposition.
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                              capture_output=True, timeout=30)
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

        # A real Prometheus scraped it: drops by port, as PromQL sees them.
        by_port = prom.wait_for(
            lambda: (lambda r: r if r.get(frozenset({("port", tap.name)})) == K - Q else None)(
                prom.query("sum by (port) (brtrace_drops_total)")),
            timeout=30, what=f"sum by (port) (brtrace_drops_total) to show {K - Q} on {tap.name}")
        assert by_port == {frozenset({("port", p)}): float(n) for p, n in
                           ((p, sum(v for (pp, _r), v in exported.items() if pp == p))
                            for p in {p for p, _r in exported})}
        up = prom.query('up{job="brtrace"}')
        assert list(up.values()) == [1.0]

        # Every alert rule evaluates against the real series without error.
        def rules_evaluated():
            rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
            bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
            assert not bad, bad
            return rules if rules and all(r["health"] == "ok" for r in rules) else None
        rules = prom.wait_for(rules_evaluated, timeout=30, what="every rule evaluated")
        assert len(rules) == n_alerts()
        firing = {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]}
        assert not firing & {"BrtraceExporterDown", "BrtraceProbeNotAttached", "BrtraceL2Loop",
                             "BrtraceOwnAddressEcho", "BrtraceBroadcastStorm"}, firing
    finally:
        if prom is not None:
            prom.stop()
        rc = exporter.stop()
    assert rc == 0, exporter.output()


@needs_prometheus
def test_export_reflecting_tap_raises_findings_and_alerts(lab, workdir):
    """A tap whose far end writes every frame back: the bridge's own broadcasts
    return on it. Echoes are exact, the l2_loop and own_address_echo findings
    go to 1 while it happens and back to 0 after, and Prometheus puts the
    matching alerts (pending: their `for:` is longer than the test) on that port."""
    E = 80
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=10000)
    exporter = Exporter(workdir, lab)
    prom = None
    try:
        prom = Prometheus(workdir, exporter.port, rules=RULES)
        prom.wait_for(lambda: prom.query('up{job="brtrace"}') and
                      list(prom.query('up{job="brtrace"}').values()) == [1.0], timeout=30,
                      what="Prometheus scraping the exporter")
        scrapes = [exporter.scrape()]
        sender = start_sender(lab.bridge_ns, lab.bridge,
                              ether(BROADCAST, lab.bridge_mac, ETH_P_LAB, b"own"), E, 0.05)
        try:
            while sender.poll() is None and len(scrapes) < 200:
                time.sleep(0.25)
                scrapes.append(exporter.scrape())
        finally:
            assert wait_sender(sender, timeout=60) == E
        time.sleep(1.0)
        scrapes.append(exporter.scrape())
        assert_monotonic(scrapes)
        final = scrapes[-1]
        assert value(final, "brtrace_own_address_echoes_total", port=tap.name) == E
        assert value(final, "brtrace_own_address_echoes_total") == E         # on no other port
        assert value(final, "brtrace_flood_returns_total", port=tap.name, type="returned") >= E
        for type_ in ("l2_loop", "own_address_echo"):
            seen = [value(s, "brtrace_findings_active", type=type_, port=tap.name) for s in scrapes]
            assert 1.0 in seen, f"{type_} never active on {tap.name}: {seen}"
            assert set(seen) <= {0.0, 1.0}
        assert all(dict(ls)["port"] == tap.name for (n, ls) in final if n == "brtrace_findings_active"
                   and dict(ls)["type"] in ("l2_loop", "own_address_echo"))

        def alerts_on_tap():
            alerts = {a["labels"]["alertname"]: a for a in prom.api("alerts")["alerts"]
                      if a["labels"].get("port") == tap.name}
            return alerts if {"BrtraceL2Loop", "BrtraceOwnAddressEcho"} <= set(alerts) else None
        alerts = prom.wait_for(alerts_on_tap, timeout=30, what="loop and echo alerts on the tap")
        for name in ("BrtraceL2Loop", "BrtraceOwnAddressEcho"):
            a = alerts[name]
            assert a["state"] in ("pending", "firing")
            assert a["labels"]["bridge"] == lab.bridge and a["labels"]["severity"] == "critical"
            assert tap.name in a["annotations"]["summary"] and lab.bridge in a["annotations"]["summary"]
            assert f"ip link set {tap.name} nomaster" in a["annotations"]["description"]

        # Traffic over: the findings stay, but no longer active.
        def settled():
            s = exporter.scrape()
            return all(value(s, "brtrace_findings_active", type=t, port=tap.name) == 0
                       for t in ("l2_loop", "own_address_echo"))
        prom.wait_for(settled, timeout=15, what="findings to go inactive")
    finally:
        if prom is not None:
            prom.stop()
        rc = exporter.stop()
    assert rc == 0, exporter.output()


def test_export_follows_ports_between_intervals_and_logs_port_events(lab, workdir):
    """With --interval 30 nothing is refreshed by the clock during the test,
    so only the netlink reaction (within 0.2 s) can explain what it sees: a
    port that joins appears in the metrics within ~0.5 s, its frames counted
    from the first; ports joining and leaving are logged on stderr, a line
    each naming the bridge, as the table views print them."""
    exporter = Exporter(workdir, lab, interval=30)
    started = time.monotonic()
    try:
        h3 = lab.add_host(3)                  # a VM starts: its port joins the bridge
        joined, took = _wait(lambda: ("brtrace_port_packets_total",
                                      frozenset({("bridge", lab.bridge), ("port", h3.port), ("direction", "rx")}))
                             in exporter.scrape(), timeout=3)
        assert joined, f"{h3.port} not in the metrics 3 s after it joined"
        assert took < 0.5 + 0.3, f"{h3.port} took {took:.2f} s to appear (netlink reaction is 0.2 s)"
        send_frames(h3.netns, h3.ifname, ether(BROADCAST, h3.mac, ETH_P_LAB, b"new"), 11)
        counted, _ = _wait(lambda: value(exporter.scrape(), "brtrace_port_flood_packets_total",
                                         port=h3.port, type="broadcast") == 11, timeout=2)
        assert counted, "the new port's broadcasts were not counted from the first"
        gone = lab.host(2).port
        lab.ip(lab.bridge_ns, "link", "del", gone)    # another VM stops
        logged, _ = _wait(lambda: f"port {gone} left the bridge" in exporter.output(), timeout=2)
        assert logged, exporter.output()
        assert time.monotonic() - started < 30, "test must finish inside one interval to prove netlink"
    finally:
        rc = exporter.stop()
    assert rc == 0, exporter.output()
    events = [line for line in exporter.output().splitlines() if line.startswith(f"brtrace export: {lab.bridge}: +")]
    assert any(line.endswith(f"port {h3.port} joined the bridge") for line in events), events
    assert any(line.endswith(f"port {gone} left the bridge") for line in events), events


@pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (Debian package `prometheus`)")
def test_alert_rules_pass_promtool():
    proc = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert f"SUCCESS: {n_alerts()} rules found".encode() in proc.stdout


UNIT_TESTS = """\
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'brtrace_findings_active{{instance="h:9435", bridge="br-int", type="l2_loop", port="t3o"}}'
        values: '0 1x10'
      - series: 'brtrace_own_address_echoes_total{{instance="h:9435", bridge="br-int", port="t3o"}}'
        values: '0+60x10'
      - series: 'brtrace_own_address_echoes_total{{instance="h:9435", bridge="br-int", port="vnet0"}}'
        values: '0x10'
      - series: 'brtrace_drops_total{{instance="h:9435", bridge="br-int", port="t0", reason="FULL_RING", function="tun_net_xmit"}}'
        values: '0+600x20'
      - series: 'brtrace_drops_total{{instance="h:9435", bridge="br-int", port="vnet1", reason="NOT_SPECIFIED", function="br_handle_frame_finish"}}'
        values: '0+6x20'
      - series: 'brtrace_probe_attached{{instance="h:9435", bridge="br-int", probe="fdb"}}'
        values: '0x10'
      - series: 'brtrace_events_lost_total{{instance="h:9435", bridge="br-int"}}'
        values: '0x20'
      - series: 'brtrace_bridge_up{{instance="h:9435", bridge="virbr1"}}'
        values: '1 1 0x10'
      - series: 'brtrace_bridge_up{{instance="h:9435", bridge="br-int"}}'
        values: '1x20'
      - series: 'brtrace_incident_write_errors_total{{instance="h:9435"}}'
        values: '0 0 0 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3 3'
      - series: 'brtrace_incidents_suppressed_total{{instance="h:9435"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 8m
        alertname: BrtraceBridgeGone
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9435", bridge: virbr1}}
            exp_annotations:
              summary: 'Bridge virbr1 is gone on h:9435'
              description: 'brtrace on h:9435 has been waiting 5 minutes for bridge virbr1 (or its network namespace) to come back; nothing on it is traced meanwhile. If the network was torn down on purpose, stop the service (`systemctl stop ''brtrace-*@virbr1''`); if not, check what removed it (libvirt: `virsh net-list --all`).'
      - eval_time: 5m
        alertname: BrtraceIncidentsNotRecorded
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9435"}}
            exp_annotations:
              summary: 'brtrace watch on h:9435 could not record every incident'
              description: 'brtrace watch on h:9435 failed to write to its incident directory, or hit its limit of new bundles per hour, so evidence of an incident may be missing. `journalctl -u ''brtrace-watch@*''` says which (disk full, read-only, removed directory, or a fault that keeps reopening); `brtrace incidents` lists what was kept.'
      - eval_time: 19m
        alertname: BrtraceIncidentsNotRecorded
        exp_alerts: []
      - eval_time: 4m
        alertname: BrtraceL2Loop
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "h:9435", bridge: br-int, type: l2_loop, port: t3o}}
            exp_annotations:
              summary: 'Layer-2 loop or reflecting port on br-int port t3o'
              description: 'Flooded frames that bridge br-int sent out keep coming back in through port t3o (host h:9435): a layer-2 loop, or a device/VPN behind t3o that reflects frames. Confirm with `brtrace loops --bridge br-int`. To stop it: take the port out (`ip link set t3o nomaster`), or enable STP on every bridge of the loop (`ip link set br-int type bridge stp_state 1`).'
      - eval_time: 4m
        alertname: BrtraceOwnAddressEcho
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "h:9435", bridge: br-int, port: t3o}}
            exp_annotations:
              summary: 'br-int receives its own frames back on port t3o'
              description: 'Frames with one of bridge br-int''s own MAC addresses as source arrive on port t3o (host h:9435, 1/s; the kernel logs "received packet on t3o with own address as source address"). Something behind t3o sends the bridge''s frames back: a loop, or a VPN/tap that reflects. Confirm by taking it out (`ip link set t3o nomaster`); if the echoes stop, fix the device behind it.'
      - eval_time: 15m
        alertname: BrtraceDrops
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9435", bridge: br-int, port: t0, reason: FULL_RING}}
            exp_annotations:
              summary: 'br-int drops 10 frames/s on t0 (FULL_RING)'
              description: 'The kernel frees 10 frames/s on port t0 of bridge br-int (host h:9435) with drop reason FULL_RING. `brtrace drops --bridge br-int` explains the reason and location. FULL_RING: the reader of t0 (VM, VPN daemon) is not reading its queue; check that process.'
      - eval_time: 15m
        alertname: BrtraceDropsHigh
        exp_alerts: []
      - eval_time: 8m
        alertname: BrtraceProbeNotAttached
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9435", bridge: br-int, probe: fdb}}
            exp_annotations:
              summary: 'brtrace hook fdb is not attached for br-int'
              description: 'On host h:9435 brtrace could not attach its fdb hook for bridge br-int, so the metrics that hook feeds stay at zero. Run `brtrace doctor` there to see what the kernel lacks (BTF, tracepoints, kprobes) and check the exporter''s log (`journalctl -u brtrace-export@br-int`).'
      - eval_time: 20m
        alertname: BrtraceEventsLost
        exp_alerts: []
"""  # noqa: E501 - promtool test file: rule annotations quoted whole


@pytest.mark.skipif(not PROMTOOL, reason="promtool not installed (Debian package `prometheus`)")
def test_alert_rules_fire_on_synthetic_series(workdir):
    """promtool's rule unit tests: the alerts fire on the series the exporter
    writes, with bridge and port labels, and stay quiet where they should."""
    tests = workdir / "rules-test.yml"
    tests.write_text(UNIT_TESTS.format(rules=RULES))
    proc = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


class _Where:
    """What Exporter needs to know of a lab: the namespace and the bridge."""

    def __init__(self, bridge_ns: str, bridge: str):
        self.bridge_ns, self.bridge = bridge_ns, bridge


def _build_bridge(ns: str, bridge: str, port: str, peer: str) -> None:
    for cmd in (["link", "add", bridge, "type", "bridge", "mcast_snooping", "0"],
                ["link", "set", bridge, "up"],
                ["link", "add", port, "type", "veth", "peer", "name", peer],
                ["link", "set", port, "master", bridge, "up"], ["link", "set", peer, "up"]):
        run(["ip", "-n", ns, *cmd])


def _netns_add(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])


def test_export_keeps_serving_while_a_bridge_and_its_namespace_come_and_go(workdir):
    """libvirt tears networks down and builds them again. The bridge deleted:
    export keeps serving, `brtrace_bridge_up` 0 within 2 s and no series of
    the old incarnation left; the bridge re-created: up again within 2 s,
    its counters from 0 (exactly the 7 broadcasts sent since). The same when
    the bridge's namespace is deleted and re-created under its name (our own
    netlink sockets kept the old one alive: it must not be served as a
    ghost)."""
    ns, bridge, port, peer = f"brtxg{os.getpid() % 10000}", "brg0", "gp0", "gh0"
    frame = ether(BROADCAST, "02:b7:00:00:bb:01", ETH_P_LAB, b"back")
    _netns_add(ns)
    try:
        _build_bridge(ns, bridge, port, peer)
        exporter = Exporter(workdir, _Where(ns, bridge), interval=0.5)
        try:
            def up() -> float:
                return value(exporter.scrape(), "brtrace_bridge_up", bridge=bridge)

            def series() -> set:
                return {n for (n, ls) in exporter.scrape() if ("bridge", bridge) in ls}

            assert up() == 1
            send_frames(ns, peer, frame, 3)
            ok, _ = _wait(lambda: value(exporter.scrape(), "brtrace_port_flood_packets_total",
                                        port=port, type="broadcast") == 3, timeout=3)
            assert ok, exporter.scrape_text()

            def bridge_again():     # the port outlived its bridge: enslave it again
                for cmd in (["link", "add", bridge, "type", "bridge", "mcast_snooping", "0"],
                            ["link", "set", bridge, "up"], ["link", "set", port, "master", bridge]):
                    run(["ip", "-n", ns, *cmd])

            def namespace_again():
                _netns_add(ns)
                _build_bridge(ns, bridge, port, peer)

            for what, remove, rebuild in (
                    ("bridge", lambda: run(["ip", "-n", ns, "link", "del", bridge]), bridge_again),
                    ("namespace", lambda: run(["ip", "netns", "del", ns]), namespace_again)):
                remove()
                went, took = _wait(lambda: up() == 0, timeout=4)
                assert went, f"{what} deleted: bridge_up still 1 after 4 s\n{exporter.output()}"
                assert took < 2.5, f"{what} deleted: bridge_up went 0 after {took:.1f} s"
                assert series() == {"brtrace_bridge_up"}, series()
                assert exporter.proc.poll() is None, exporter.output()
                rebuild()
                back, took = _wait(lambda: up() == 1, timeout=6)
                assert back, f"{what} re-created: not attached again after 6 s\n{exporter.output()}"
                assert took < 2.5, f"{what} re-created: attached again after {took:.1f} s"
                send_frames(ns, peer, frame, 7)
                ok, _ = _wait(lambda: value(exporter.scrape(), "brtrace_port_flood_packets_total",
                                            port=port, type="broadcast") == 7, timeout=3)
                assert ok, f"after the {what} came back: {exporter.scrape_text()}"
        finally:
            rc = exporter.stop()
        assert rc == 0, exporter.output()
        log = exporter.output()
        assert log.count("waiting for it to come back") == 2, log
        assert "was deleted" in log, log
        assert log.count(f"{bridge}: back (attach #") == 2, log
    finally:
        run(["ip", "netns", "del", ns], check=False)
