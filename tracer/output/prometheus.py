"""Prometheus exposition of brtrace's kernel counters. Pure: the collector is
handed a function that returns plain snapshots, so tests pin its text.

Conventions: `brtrace_` prefix, base units, `_total` on counters, help on every
metric, bounded labels only (bridge, port, reason, function, direction, type,
decision, probe). MACs and IPs never become labels: they are in JSON events.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tracer.version import VERSION


@dataclass
class BridgeSnapshot:
    """One bridge at scrape time, names resolved."""

    bridge: str
    netns: str
    mode: str                                       # kprobe | reconstructed | ""
    drops: list = field(default_factory=list)       # (port, reason, function, frames)
    ports: dict = field(default_factory=dict)       # port -> {counter: value}
    findings: list = field(default_factory=list)    # (type, port, active)
    probes: dict = field(default_factory=dict)      # hook -> attached (bool)
    stats: dict = field(default_factory=dict)       # events_lost, events_rate_limited, ...
    neigh_failures: dict = field(default_factory=dict)  # device -> resolutions that failed
    up: bool = True                                 # False: the bridge vanished (export, watch)
    # watch only (None: not watch)
    armed: bool | None = None                       # the per-flooded-frame detail is attached
    incident_open: bool | None = None
    incidents: dict = field(default_factory=dict)   # type -> incidents opened


# (metric, help, label values from a port's counters: {label value: counter})
PORT_COUNTERS = (
    ("brtrace_port_packets_total", "Frames seen on a bridge port, by direction.",
     "direction", {"rx": "rx_packets", "tx": "tx_packets"}),
    ("brtrace_port_bytes_total", "Bytes seen on a bridge port (from the MAC header on), by direction.",
     "direction", {"rx": "rx_bytes", "tx": "tx_bytes"}),
    ("brtrace_port_flood_packets_total", "Broadcast and multicast frames received on a port.",
     "type", {"broadcast": "rx_broadcast", "multicast": "rx_multicast"}),
    ("brtrace_port_arp_packets_total", "ARP frames received on a port, by operation.",
     "op", {"request": "arp_requests", "reply": "arp_replies"}),
    ("brtrace_port_ndp_packets_total",
     "IPv6 neighbour discovery frames received on a port, by type (dad: solicitations from ::).",
     "type", {"ns": "ndp_ns", "na": "ndp_na", "rs": "ndp_rs", "ra": "ndp_ra", "dad": "ndp_dad"}),
    ("brtrace_flood_returns_total",
     "Flooded frames that came back into the bridge (loops, reflecting ports); at_origin: by the "
     "port where the frame was first seen, faster than a host repeats itself (a loop beyond a VPN "
     "or uplink port, or a host sending one frame over and over).",
     "type", {"returned": "returns", "reentered": "reentries", "at_origin": "origin_copies"}),
    ("brtrace_bridge_decisions_total",
     "Bridge forwarding decisions by ingress port (kprobe mode only).",
     "decision", {"forward": "decided_forward", "same_port": "decided_same_port",
                  "not_forwarding": "decided_not_forwarding", "flood": "decided_flood",
                  "local": "decided_local"}),
)
SINGLE_COUNTERS = (
    ("brtrace_own_address_echoes_total",
     "Frames received on a port with one of the bridge's own MACs as source.", "echoes"),
    ("brtrace_fdb_moves_total", "FDB entries created on or moved to a port (bridge:br_fdb_update).",
     "fdb_learned"),
    ("brtrace_arp_duplicates_total", "ARP frames among the flooded frames that came back.",
     "arp_duplicates"),
    ("brtrace_port_flooded_out_total",
     "Group-addressed (flooded) frames the bridge sent out of a port: what loop copies are "
     "weighed against.", "tx_flooded"),
    ("brtrace_flood_crossings_total",
     "Loop copies that came in by another port than the frame's previous pass.", "crossings"),
    ("brtrace_flood_host_repeats_total",
     "Copies taken for a host repeating its own frame (GARP bursts, retransmits), not loops.",
     "host_repeats"),
)
# Every type a finding can have (tracer/diagnose.py DETECTORS): the values of
# brtrace_findings_active's `type`.
FINDING_TYPES = ("own_address_echo", "mac_flap", "l2_loop", "dad_looped", "storm", "not_forwarded",
                 "arp_unanswered", "ndp_unanswered", "ip_conflict", "rogue_ra", "neigh_failed", "arp_churn")


class BrtraceCollector:
    """prometheus_client collector; `source()` returns a list of BridgeSnapshot."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        snaps = self.source()
        info = GaugeMetricFamily("brtrace_build_info", "brtrace version and forwarding mode (always 1).",
                                 labels=["version", "bridge", "mode"])
        drops = CounterMetricFamily("brtrace_drops", "Frames the kernel freed on a bridge or its ports, "
                                    "by the kernel's drop reason and freeing function.",
                                    labels=["bridge", "port", "reason", "function"])
        findings = GaugeMetricFamily("brtrace_findings_active",
                                     "1 while a finding's counters still move (see brtrace loops).",
                                     labels=["bridge", "type", "port"])
        probes = GaugeMetricFamily("brtrace_probe_attached", "1 if the hook is attached, 0 if not.",
                                   labels=["bridge", "probe"])
        neigh = CounterMetricFamily("brtrace_neighbour_failures",
                                    "Neighbour resolutions (ARP/NDP) that ended in FAILED, by device.",
                                    labels=["bridge", "port"])
        lost = CounterMetricFamily("brtrace_events_lost", "Sampled records the ring buffer had no room for.",
                                   labels=["bridge"])
        limited = CounterMetricFamily("brtrace_events_rate_limited",
                                      "Sampled records skipped by the in-kernel rate limit (counts stay exact).",
                                      labels=["bridge"])
        families = {name: CounterMetricFamily(name[:-len("_total")], help_, labels=["bridge", "port", label])
                    for name, help_, label, _m in PORT_COUNTERS}
        singles = {name: CounterMetricFamily(name[:-len("_total")], help_, labels=["bridge", "port"])
                   for name, help_, _c in SINGLE_COUNTERS}
        bridge_up = GaugeMetricFamily("brtrace_bridge_up",
                                      "1 while the bridge exists and is traced; 0 while it is gone "
                                      "(its counters restart from 0 when it comes back).",
                                      labels=["bridge"])
        armed = GaugeMetricFamily("brtrace_detail_armed",
                                  "1 while watch runs the per-flooded-frame detail (fingerprints, ARP "
                                  "tables), armed by a symptom; 0 while only the always-on tier runs.",
                                  labels=["bridge"])
        open_ = GaugeMetricFamily("brtrace_incident_open", "1 while watch has an incident open on the bridge.",
                                  labels=["bridge"])
        opened = CounterMetricFamily("brtrace_incidents", "Incidents watch opened, by the finding that opened them.",
                                     labels=["bridge", "type"])
        for snap in snaps:
            bridge_up.add_metric([snap.bridge], 1 if snap.up else 0)
            if snap.armed is not None:
                armed.add_metric([snap.bridge], 1 if snap.armed and snap.up else 0)
                open_.add_metric([snap.bridge], 1 if snap.incident_open else 0)
                for type_, n in sorted(snap.incidents.items()):
                    opened.add_metric([snap.bridge, type_], n)
            if not snap.up:
                continue
            info.add_metric([VERSION, snap.bridge, snap.mode or ""], 1)
            for port, reason, function, n in sorted(snap.drops):
                drops.add_metric([snap.bridge, port, reason, function], n)
            for port, counters in sorted(snap.ports.items()):
                for name, _h, _label, mapping in PORT_COUNTERS:
                    for value, counter in mapping.items():
                        if counter in counters:
                            families[name].add_metric([snap.bridge, port, value], counters[counter])
                for name, _h, counter in SINGLE_COUNTERS:
                    if counter in counters:
                        singles[name].add_metric([snap.bridge, port], counters[counter])
            active = {(t, p) for t, p, a in snap.findings if a}
            for type_, port in sorted({(t, p) for t, p, _a in snap.findings}):
                findings.add_metric([snap.bridge, type_, port], 1 if (type_, port) in active else 0)
            for hook, attached in sorted(snap.probes.items()):
                probes.add_metric([snap.bridge, hook], 1 if attached else 0)
            for device, n in sorted(snap.neigh_failures.items()):
                neigh.add_metric([snap.bridge, device], n)
            lost.add_metric([snap.bridge], snap.stats.get("events_lost", 0))
            limited.add_metric([snap.bridge], snap.stats.get("events_rate_limited", 0))
        yield info
        yield bridge_up
        if any(snap.armed is not None for snap in snaps):
            yield armed
            yield open_
            yield opened
        yield drops
        yield from families.values()
        yield from singles.values()
        yield neigh
        yield findings
        yield probes
        yield lost
        yield limited


class IncidentStoreCollector:
    """watch's incident store: `source()` returns {"write_errors", "suppressed",
    "bundles", "bytes"}."""

    def __init__(self, source):
        self.source = source

    def collect(self):
        st = self.source()
        errors = CounterMetricFamily("brtrace_incident_write_errors",
                                     "Writes to the incident directory that failed (disk full, unwritable); "
                                     "the log says which.")
        errors.add_metric([], st.get("write_errors", 0))
        suppressed = CounterMetricFamily("brtrace_incidents_suppressed",
                                         "Incidents not recorded because the per-hour limit was reached.")
        suppressed.add_metric([], st.get("suppressed", 0))
        bundles = GaugeMetricFamily("brtrace_incident_bundles", "Incident bundles kept in the directory.")
        bundles.add_metric([], st.get("bundles", 0))
        size = GaugeMetricFamily("brtrace_incident_bundles_bytes", "Bytes the kept incident bundles take.")
        size.add_metric([], st.get("bytes", 0))
        yield from (errors, suppressed, bundles, size)
