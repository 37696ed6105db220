"""The Prometheus exposition from fixed snapshots (no kernel): exact lines for a
few series, HELP on every metric, `_total` on every counter, bounded labels
only (no MAC or IP ever becomes a label), findings as 0/1 gauges, and two
bridges side by side. The alert rules and the dashboard only use metric names
and labels the collector really exposes."""

import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracer.output.prometheus import (FINDING_TYPES, IncidentStoreCollector, PORT_COUNTERS, SINGLE_COUNTERS, VERSION,
                                      BridgeSnapshot, BrtraceCollector)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "brtrace-rules.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "brtrace-dashboard.json"

ALLOWED_LABELS = {"bridge", "port", "reason", "function", "direction", "type", "decision", "probe",
                  "op", "version", "mode"}
MAC = re.compile(r"(?i)\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b")


def counters(**over):
    """Every counter a port slot has (what Monitor.snapshot() returns), zero unless given."""
    base = {k: 0 for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_broadcast",
                           "rx_multicast", "rx_arp", "echoes", "returns", "reentries",
                           "arp_duplicates", "arp_requests", "arp_replies", "fdb_learned")}
    base.update(over)
    return base


def snapshots():
    """br-int: a stalled tap, a reflecting tap (echoes, returns, findings) in
    raw_tracepoint mode. br-ext: kprobe mode with decision counters, one
    probe not attached, a lost event."""
    br_int = BridgeSnapshot(
        bridge="br-int", netns="lab", mode="raw_tracepoint",
        drops=[("vnet0", "NOT_SPECIFIED", "br_handle_frame_finish", 7),
               ("t0", "FULL_RING", "tun_net_xmit", 40)],
        ports={
            "vnet0": counters(rx_packets=120, rx_bytes=7200, tx_packets=80, tx_bytes=4800,
                              rx_broadcast=12, rx_multicast=3, rx_arp=5, arp_requests=4,
                              arp_replies=1, fdb_learned=2),
            "t0": counters(tx_packets=50, tx_bytes=3000),
            "t3o": counters(rx_packets=27, rx_bytes=1620, tx_packets=27, tx_bytes=1620,
                            rx_broadcast=27, echoes=12, returns=27, arp_duplicates=1,
                            fdb_learned=15),
        },
        # mac_flap twice for the same (type, port): one still moving, one settled.
        findings=[("own_address_echo", "t3o", True), ("l2_loop", "t3o", True),
                  ("mac_flap", "vnet0", False), ("mac_flap", "t3o", False),
                  ("mac_flap", "t3o", True), ("storm", "t3o", False)],
        probes={"drops": True, "forward": True, "fdb": True},
        stats={"events_lost": 0, "events_rate_limited": 3, "bad_records": 0},
        neigh_failures={"br-int": 2})
    br_ext = BridgeSnapshot(
        bridge="br-ext", netns="lab", mode="kprobe",
        drops=[("eth1", "BRIDGE_INGRESS_STP_STATE", "br_handle_frame", 5)],
        ports={"eth1": {**counters(rx_packets=9, tx_packets=4), "decided_forward": 4,
                        "decided_same_port": 1, "decided_not_forwarding": 0,
                        "decided_flood": 2, "decided_local": 0}},
        findings=[],
        probes={"drops": True, "forward": False},
        stats={"events_lost": 6})
    return [br_int, br_ext]


def exposition(snaps) -> str:
    registry = CollectorRegistry()
    registry.register(BrtraceCollector(lambda: snaps))
    return generate_latest(registry).decode()


@pytest.fixture(scope="module")
def text():
    return exposition(snapshots())


@pytest.fixture(scope="module")
def families(text):
    return list(text_string_to_metric_families(text))


def samples(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_exact_lines(text):
    lines = set(text.splitlines())
    for line in (
        f'brtrace_build_info{{bridge="br-int",mode="raw_tracepoint",version="{VERSION}"}} 1.0',
        f'brtrace_build_info{{bridge="br-ext",mode="kprobe",version="{VERSION}"}} 1.0',
        'brtrace_drops_total{bridge="br-int",function="tun_net_xmit",port="t0",reason="FULL_RING"} 40.0',
        'brtrace_drops_total{bridge="br-int",function="br_handle_frame_finish",port="vnet0",'
        'reason="NOT_SPECIFIED"} 7.0',
        'brtrace_drops_total{bridge="br-ext",function="br_handle_frame",port="eth1",'
        'reason="BRIDGE_INGRESS_STP_STATE"} 5.0',
        'brtrace_port_packets_total{bridge="br-int",direction="rx",port="vnet0"} 120.0',
        'brtrace_port_packets_total{bridge="br-int",direction="tx",port="vnet0"} 80.0',
        'brtrace_port_bytes_total{bridge="br-int",direction="rx",port="vnet0"} 7200.0',
        'brtrace_port_flood_packets_total{bridge="br-int",port="vnet0",type="broadcast"} 12.0',
        'brtrace_port_flood_packets_total{bridge="br-int",port="vnet0",type="multicast"} 3.0',
        'brtrace_port_arp_packets_total{bridge="br-int",op="request",port="vnet0"} 4.0',
        'brtrace_port_arp_packets_total{bridge="br-int",op="reply",port="vnet0"} 1.0',
        'brtrace_flood_returns_total{bridge="br-int",port="t3o",type="returned"} 27.0',
        'brtrace_own_address_echoes_total{bridge="br-int",port="t3o"} 12.0',
        'brtrace_fdb_moves_total{bridge="br-int",port="t3o"} 15.0',
        'brtrace_arp_duplicates_total{bridge="br-int",port="t3o"} 1.0',
        'brtrace_bridge_decisions_total{bridge="br-ext",decision="same_port",port="eth1"} 1.0',
        'brtrace_probe_attached{bridge="br-ext",probe="forward"} 0.0',
        'brtrace_probe_attached{bridge="br-int",probe="fdb"} 1.0',
        'brtrace_events_lost_total{bridge="br-ext"} 6.0',
        'brtrace_events_lost_total{bridge="br-int"} 0.0',
        'brtrace_events_rate_limited_total{bridge="br-int"} 3.0',
        'brtrace_events_rate_limited_total{bridge="br-ext"} 0.0',
        'brtrace_neighbour_failures_total{bridge="br-int",port="br-int"} 2.0',
    ):
        assert line in lines, line


def test_every_metric_has_help_and_type(text):
    helps = {m.group(1): m.group(2) for m in re.finditer(r"^# HELP (\S+) (.*)$", text, re.M)}
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert set(helps) == set(types)
    assert all(h.strip() for h in helps.values())
    for line in samples(text):
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
        assert name in types, f"{name} has no HELP/TYPE"
    assert all(name.startswith("brtrace_") for name in types)


def test_counters_end_in_total_and_gauges_do_not(text):
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    assert set(types.values()) == {"counter", "gauge"}
    for name, type_ in types.items():
        assert name.endswith("_total") == (type_ == "counter"), (name, type_)
    expected = {n for n, *_ in PORT_COUNTERS} | {n for n, *_ in SINGLE_COUNTERS} | {
        "brtrace_drops_total", "brtrace_events_lost_total", "brtrace_events_rate_limited_total",
        "brtrace_neighbour_failures_total"}
    assert {n for n, t in types.items() if t == "counter"} == expected


def test_labels_are_bounded_and_never_addresses(families):
    for fam in families:
        for s in fam.samples:
            assert set(s.labels) <= ALLOWED_LABELS, (s.name, s.labels)
            for value in s.labels.values():
                assert not MAC.search(value), (s.name, s.labels)
                try:
                    ipaddress.ip_address(value)
                except ValueError:
                    pass
                else:
                    raise AssertionError(f"{s.name} carries an IP label: {s.labels}")


def test_findings_active_is_one_series_per_type_and_port(families):
    (fam,) = [f for f in families if f.name == "brtrace_findings_active"]
    got = {(s.labels["bridge"], s.labels["type"], s.labels["port"]): s.value for s in fam.samples}
    assert got == {
        ("br-int", "own_address_echo", "t3o"): 1.0,
        ("br-int", "l2_loop", "t3o"): 1.0,
        ("br-int", "mac_flap", "vnet0"): 0.0,
        ("br-int", "mac_flap", "t3o"): 1.0,     # any active finding of the pair wins
        ("br-int", "storm", "t3o"): 0.0,
    }
    assert len(fam.samples) == len(got)
    assert {t for _b, t, _p in got} <= set(FINDING_TYPES)


def test_two_bridges_stay_apart(families):
    by_bridge = {}
    for fam in families:
        for s in fam.samples:
            by_bridge.setdefault(s.labels["bridge"], set()).add(s.labels.get("port"))
    assert set(by_bridge) == {"br-int", "br-ext"}
    assert by_bridge["br-ext"] - {None} == {"eth1"}
    assert by_bridge["br-int"] - {None} == {"vnet0", "t0", "t3o", "br-int"}   # br-int: its neighbour failures
    # Decisions only where the snapshot has them (kprobe mode, br-ext).
    (dec,) = [f for f in families if f.name == "brtrace_bridge_decisions"]
    assert {s.labels["bridge"] for s in dec.samples} == {"br-ext"}
    assert len(dec.samples) == 5


def test_no_bridge_still_describes_every_metric():
    text = exposition([])
    assert samples(text) == []
    assert len(re.findall(r"^# HELP ", text, re.M)) == len(re.findall(r"^# TYPE ", text, re.M)) == 21


def test_a_vanished_bridge_is_only_bridge_up_zero():
    text = exposition([BridgeSnapshot(bridge="br0", netns="", mode="", up=False,
                                      ports={"vnet0": {"rx_packets": 5}}, stats={"events_lost": 3}),
                       BridgeSnapshot(bridge="br1", netns="", mode="")])
    assert [line for line in samples(text) if 'bridge="br0"' in line] == ['brtrace_bridge_up{bridge="br0"} 0.0']
    assert 'brtrace_bridge_up{bridge="br0"} 0.0' in text
    assert 'brtrace_bridge_up{bridge="br1"} 1.0' in text


def test_missing_stats_read_as_zero():
    text = exposition([BridgeSnapshot(bridge="br0", netns="", mode="")])
    assert 'brtrace_events_lost_total{bridge="br0"} 0.0' in text
    assert 'brtrace_build_info{bridge="br0",mode="",version="%s"} 1.0' % VERSION in text


def test_source_is_called_once_per_scrape():
    calls = []

    def source():
        calls.append(1)
        return snapshots()

    registry = CollectorRegistry()
    registry.register(BrtraceCollector(source))
    calls.clear()  # register() may describe the collector once
    generate_latest(registry)
    assert len(calls) == 1


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_exposition(text):
    proc = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


# -- the deploy files use what the collector exposes ----------------------------------

def watch_exposition() -> str:
    """What watch adds: a bridge's armed/incident state, and the store's counters."""
    registry = CollectorRegistry()
    registry.register(BrtraceCollector(lambda: [BridgeSnapshot(bridge="br-int", netns="", mode="", armed=True,
                                                               incident_open=True, incidents={"l2_loop": 2})]))
    registry.register(IncidentStoreCollector(lambda: {"write_errors": 1, "suppressed": 2, "bundles": 3,
                                                      "bytes": 4096}))
    return generate_latest(registry).decode()


def test_watch_metrics():
    text = watch_exposition()
    for line in ('brtrace_detail_armed{bridge="br-int"} 1.0', 'brtrace_incident_open{bridge="br-int"} 1.0',
                 'brtrace_incidents_total{bridge="br-int",type="l2_loop"} 2.0',
                 "brtrace_incident_write_errors_total 1.0", "brtrace_incidents_suppressed_total 2.0",
                 "brtrace_incident_bundles 3.0", "brtrace_incident_bundles_bytes 4096.0"):
        assert line in text.splitlines(), line
    assert "brtrace_detail_armed" not in exposition(snapshots())     # export has no such state


def exposed():
    """metric name -> label names, from the exposition of the fixed snapshots
    (export's, and what watch adds)."""
    out = {}
    for fam in [*text_string_to_metric_families(exposition(snapshots())),
                *text_string_to_metric_families(watch_exposition())]:
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def metric_names(expr: str) -> set:
    return {name for name in re.findall(r"\b(brtrace_[a-z_]+)\b", expr)}


def label_matchers(expr: str) -> list:
    """(metric, label) for every `metric{label=...}` selector."""
    out = []
    for metric, body in re.findall(r"\b(brtrace_[a-z_]+)\{([^}]*)\}", expr):
        out.extend((metric, label) for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", body))
    return out


def rule_exprs() -> list:
    # No YAML parser in the project's dependencies: expressions are single
    # `expr:` lines or `expr: |` blocks in our own file.
    exprs, lines = [], RULES.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) in ("|", ">", "|-", ">-"):
            block = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m.group(1)):
                    break
                block.append(nxt.strip())
            exprs.append(" ".join(block))
        else:
            exprs.append(m.group(2))
    return exprs


def dashboard_exprs() -> list:
    dash = json.loads(DASHBOARD.read_text())
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [v.get("query", {}).get("query", "") if isinstance(v.get("query"), dict) else v.get("query", "")
            for v in dash["templating"]["list"] if v.get("type") == "query"]
    return out


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_deploy_files_use_exposed_metrics_and_labels(source):
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    assert exprs
    names = exposed()
    for expr in exprs:
        for metric in metric_names(expr):
            assert metric in names, f"{source}: {metric} is not exposed ({expr})"
        for metric, label in label_matchers(expr):
            assert label in names[metric], f"{source}: {metric} has no label {label} ({expr})"
        for typ in re.findall(r'type\s*=\s*"([a-z_]+)"', expr):
            assert typ in FINDING_TYPES + ("broadcast", "multicast", "returned", "reentered"), expr


def test_dashboard_shape():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"bridge", "port"} <= set(variables)
    for panel in dash["panels"]:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert 'bridge=~"$bridge"' in target["expr"], (panel["title"], target["expr"])
            assert target["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
