"""From counters to findings: what is wrong on the bridge, which ports, what
to try. Pure: reads a BridgeState, drop rows and the bridge topology.

Each detector returns Finding records with evidence numbers, a plain-language
conclusion and the confirming step an operator would take. Thresholds are
deliberately conservative: a healthy bridge yields no finding.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tracer.aggregate import BridgeState

# A MAC that moved this many times during the run is flapping.
FLAP_MIN_MOVES = 3
# Flooded frames seen coming back at least this often make a loop finding.
LOOP_MIN_FRAMES = 5
# Per-port rates (frames/s over the last interval) that make a storm.
STORM_BROADCAST_PPS = 500.0
STORM_ARP_PPS = 100.0


@dataclass
class Finding:
    type: str                 # own_address_echo, mac_flap, l2_loop, storm, not_forwarded
    bridge: str
    ports: list
    severity: str             # critical, warning
    message: str
    hint: str
    evidence: dict = field(default_factory=dict)
    # Still happening: its counters moved during the last interval. Findings
    # are kept for the whole run; `active` is what an alert should follow.
    active: bool = True
    identities: dict = field(default_factory=dict)   # port -> "vm web01", "vpn tincd"

    def shown_ports(self) -> list:
        return [f"{p} ({self.identities[p]})" if self.identities.get(p) else p for p in self.ports]

    def record(self) -> dict:
        return {"kind": "finding", "type": self.type, "bridge": self.bridge, "ports": self.ports,
                "identities": self.identities, "severity": self.severity, "active": self.active,
                "message": self.message, "hint": self.hint, "evidence": self.evidence}


@dataclass
class Inputs:
    bridge: object            # topology.Bridge (current)
    state: BridgeState
    seconds: float            # run length so far
    drop_rows: list = field(default_factory=list)
    ns_prefix: str = ""       # "ip netns exec NS " when the bridge lives in a namespace


def _forwarding(inp: Inputs, port: str) -> bool:
    """STP-blocked ports receive the loop's frames and discard them: that is
    STP working, not a loop."""
    for p in inp.bridge.ports.values():
        if p.name == port:
            return p.stp_state == "forwarding"
    return True


def own_address_echo(inp: Inputs) -> list:
    out = []
    for port, values in sorted(inp.state.totals.items()):
        n = values.get("echoes", 0)
        if not n or port == inp.bridge.name:
            continue
        macs = Counter(e.get("src_mac") for e in inp.state.echoes if e["port"] == port)
        out.append(Finding(
            "own_address_echo", inp.bridge.name, [port], "critical",
            f"{n} frames entered {inp.bridge.name} on {port} with one of the bridge's own MACs "
            f"as source (what dmesg reports, rate-limited, as 'received packet on {port} with "
            f"own address as source address'): something behind {port} sends the bridge's "
            f"frames back",
            f"confirm: take {port} out of the bridge (`{inp.ns_prefix}ip link set {port} nomaster`); "
            f"if the echoes stop, the device or VPN behind {port} is reflecting frames",
            {"frames": n, "per_second": round(inp.state.rate(port, "echoes"), 1),
             "own_macs_seen": dict(macs.most_common(3))},
            active=inp.state.rate(port, "echoes") > 0))
    return out


def mac_flap(inp: Inputs) -> list:
    out = []
    for m in sorted(inp.state.macs.values(), key=lambda m: -m.count):
        moves = m.count - 1
        if moves < FLAP_MIN_MOVES or len(m.ports) < 2:
            continue
        rate = m.interval_moves / inp.state.interval if inp.state.interval else 0.0
        vlan = f" (VLAN {m.vlan})" if m.vlan else ""
        ports = " and ".join(m.ports[:4])
        out.append(Finding(
            "mac_flap", inp.bridge.name, list(m.ports), "critical" if moves >= 10 * FLAP_MIN_MOVES else "warning",
            f"MAC {m.mac}{vlan} moved {moves} times between {ports}: the bridge keeps relearning it, "
            f"so frames for it go to the wrong port part of the time",
            f"a MAC lives behind one port; a loop or a port that reflects frames makes it jump "
            f"(see the other findings for {ports}); `{inp.ns_prefix}bridge fdb show br {inp.bridge.name} | grep {m.mac}`",
            {"mac": m.mac, "vlan": m.vlan, "moves": moves, "moves_per_second": round(rate, 1),
             "peak_moves_per_second": round(m.peak_rate, 1), "over_seconds": round(inp.seconds, 1)},
            active=m.interval_moves > 0))
    return out


def l2_loop(inp: Inputs) -> list:
    st = inp.state
    counts = {}
    for port, values in st.totals.items():
        n = values.get("returns", 0) + values.get("reentries", 0)
        if n >= LOOP_MIN_FRAMES and _forwarding(inp, port) and port != inp.bridge.name:
            counts[port] = (values.get("returns", 0), values.get("reentries", 0))
    if not counts:
        return []
    total = sum(r + e for r, e in counts.values())
    active = any(st.rate(p, "returns") + st.rate(p, "reentries") > 0 for p in counts)
    evidence = {"frames_back": total, "per_port": {p: {"returned": r, "reentered": e}
                                                   for p, (r, e) in sorted(counts.items())}}
    if len(counts) == 1:
        (port, (returned, reentered)), = counts.items()
        return [Finding(
            "l2_loop", inp.bridge.name, [port], "critical",
            f"{port} reflects: {total} flooded frames that the bridge sent out of {port} came back "
            f"in through {port} itself",
            f"confirm: `{inp.ns_prefix}ip link set {port} nomaster`; if the returns (and echoes, "
            f"MAC moves) stop, the device or VPN behind {port} sends frames back",
            {**evidence, "kind": "reflecting_port"}, active=active)]
    ports = sorted(counts)
    return [Finding(
        "l2_loop", inp.bridge.name, ports, "critical",
        f"layer-2 loop through {', '.join(ports)}: {total} flooded frames left the bridge and came "
        f"back in through another of these ports",
        f"enable STP on every bridge of the loop (`{inp.ns_prefix}ip link set {inp.bridge.name} type "
        f"bridge stp_state 1`) or unplug one link (`{inp.ns_prefix}ip link set {ports[-1]} nomaster`)",
        {**evidence, "kind": "loop_between_ports"}, active=active)]


def storm(inp: Inputs) -> list:
    """Per-port broadcast/ARP rates at their peak interval of the run, so a
    storm that has since stopped is still reported (with its current rate)."""
    out = []
    st = inp.state
    for port in sorted(st.peaks):
        if port == inp.bridge.name:
            continue
        bcast = max(st.peak(port, "rx_broadcast"), st.peak(port, "rx_multicast"))
        arp = st.peak(port, "rx_arp")
        if bcast < STORM_BROADCAST_PPS and arp < STORM_ARP_PPS:
            continue
        now = st.rate(port, "rx_broadcast") + st.rate(port, "rx_multicast")
        arps = st.total(port, "rx_arp")
        dups = st.total(port, "arp_duplicates")
        targets = Counter(e.get("arp_tpa") for e in st.loops if e["port"] == port and e.get("arp_tpa"))
        dup_ratio = round(dups / arps, 3) if arps else 0.0
        out.append(Finding(
            "storm", inp.bridge.name, [port], "critical" if bcast >= 4 * STORM_BROADCAST_PPS else "warning",
            f"broadcast storm on {port}: up to {bcast:.0f} broadcast/multicast frames/s "
            f"(now {now:.0f}/s), up to {arp:.0f} ARP/s"
            + (f"; {dup_ratio:.0%} of ARP frames are copies coming back" if dups else ""),
            "copies coming back point at a loop or a reflecting port (see l2_loop); without copies, "
            f"look at who sends: `{inp.ns_prefix}tcpdump -eni {port} broadcast`",
            {"peak_broadcast_per_second": round(bcast, 1), "broadcast_per_second": round(now, 1),
             "peak_arp_per_second": round(arp, 1), "arp_duplicate_ratio": dup_ratio,
             "top_arp_targets": dict(targets.most_common(5))},
            active=now >= STORM_BROADCAST_PPS or st.rate(port, "rx_arp") >= STORM_ARP_PPS))
    return out


def not_forwarded(inp: Inputs) -> list:
    """Frames the bridge receives but does not send on because the FDB places
    their destination behind their ingress port. Counted exactly by the
    br_forward() kprobe where the kernel has kprobes (decided_same_port);
    otherwise read from the drop rows, whose sampled frames name the MAC."""
    out = []
    by_port = {row.port: row for row in inp.drop_rows if row.same_port_mac}
    exact = {p: v["decided_same_port"] for p, v in inp.state.totals.items() if v.get("decided_same_port")}
    for port in sorted(set(by_port) | set(exact)):
        row = by_port.get(port)
        frames = exact.get(port, row.count if row else 0)
        mac = row.same_port_mac if row else ""
        flapped = next((m for (a, _vlan), m in inp.state.macs.items() if a == mac), None) if mac else None
        where = (f"; {mac} has been learned on {', '.join(flapped.ports)} (it moves)"
                 if flapped and len(flapped.ports) > 1 else "")
        what = f"frames for {mac}" if mac else "unicast frames"
        out.append(Finding(
            "not_forwarded", inp.bridge.name, [port], "critical",
            f"{frames} {what} entered on {port} and were not forwarded: the FDB places the "
            f"destination behind {port} itself, so the bridge will not send them back out{where}",
            f"such frames should not arrive on {port}; find what reflects or loops them there, then "
            f"`{inp.ns_prefix}bridge fdb show br {inp.bridge.name}` should name the right port again",
            {"mac": mac, "frames": frames, "exact": port in exact,
             "function": row.function if row else "br_forward"},
            active=(row is not None and row.rate > 0)
            or inp.state.rate(port, "decided_same_port") > 0))
    return out


# ARP requests for one address with no reply at all that make a finding.
ARP_UNANSWERED_MIN = 3
# REACHABLE/STALE transitions of one entry that make churn.
NEIGH_CHURN_MIN = 20


def arp_unanswered(inp: Inputs) -> list:
    out = []
    for t in sorted(inp.state.arp, key=lambda t: -t["requests"]):
        if t["requests"] < ARP_UNANSWERED_MIN or t["replies"]:
            continue
        asker = t.get("asker") or "?"
        out.append(Finding(
            "arp_unanswered", inp.bridge.name, [asker], "warning",
            f"{t['requests']} ARP requests for {t['ip']} (latest from {asker}) got no reply on "
            f"{inp.bridge.name}: nothing behind the bridge answers for {t['ip']}",
            f"is the host with {t['ip']} up and on this bridge? guests asking for their gateway "
            f"will fail to send (their neighbour entry goes INCOMPLETE -> FAILED)",
            {"ip": t["ip"], "requests": t["requests"], "replies": 0}))
    return out


def ip_conflict(inp: Inputs) -> list:
    out = []
    for t in inp.state.arp:
        if not t["conflicts"]:
            continue
        ports = [p for p in dict.fromkeys([t.get("claimer"), t.get("other")]) if p]
        out.append(Finding(
            "ip_conflict", inp.bridge.name, ports, "critical",
            f"{t['ip']} is claimed by two MACs: {t['mac']} ({t.get('claimer') or '?'}) and "
            f"{t['other_mac']} ({t.get('other') or '?'}), {t['conflicts']} conflicting ARP claims",
            "two hosts use the same address (or a VM was cloned); neighbours flip between the two MACs",
            {"ip": t["ip"], "macs": [t["mac"], t["other_mac"]], "conflicting_claims": t["conflicts"]}))
    for n in inp.state.neigh:
        if n["lladdr_changes"] and n["state"] not in ("failed", "incomplete"):
            out.append(Finding(
                "ip_conflict", inp.bridge.name, [n["dev"]], "warning",
                f"the neighbour entry for {n['ip']} on {n['dev']} changed MAC {n['lladdr_changes']} times "
                f"({n['prev_lladdr']} -> {n['lladdr']})",
                "a gateway whose MAC changes is a failover, a cloned VM, or ARP spoofing; "
                "compare with the ARP claims seen on the bridge",
                {"ip": n["ip"], "macs": [n["prev_lladdr"], n["lladdr"]], "changes": n["lladdr_changes"]}))
    return out


def neigh_failed(inp: Inputs) -> list:
    out = []
    for n in inp.state.neigh:
        if not n["failed"]:
            continue
        dropped = n.get("dropped") or {}
        drops = sum(dropped.values()) or sum(r.count for r in inp.drop_rows
                                             if r.reason.startswith("NEIGH_") and r.port == n["dev"])
        out.append(Finding(
            "neigh_failed", inp.bridge.name, [n["dev"]], "critical",
            f"resolving {n['ip']} on {n['dev']} failed {n['failed']} times (INCOMPLETE -> FAILED): "
            f"packets queued for it were dropped" + (f" ({drops} NEIGH_* drops on {n['dev']})" if drops else ""),
            f"nothing answered ARP/NDP for {n['ip']}; check that the host is up and reachable through "
            f"the bridge (`brtrace neigh` shows the unanswered requests per port)",
            {"ip": n["ip"], "failed": n["failed"], "incomplete": n["incomplete"], "dev": n["dev"],
             "dropped": drops, "dropped_by_reason": dropped}))
    return out


def arp_churn(inp: Inputs) -> list:
    out = []
    for n in inp.state.neigh:
        flips = n["reachable"] + n["stale"]
        if flips < NEIGH_CHURN_MIN:
            continue
        out.append(Finding(
            "arp_churn", inp.bridge.name, [n["dev"]], "warning",
            f"the neighbour entry for {n['ip']} on {n['dev']} went REACHABLE/STALE {flips} times "
            f"in {inp.seconds:.0f} s",
            "short base_reachable_time or gc thresholds, or replies that arrive only sometimes",
            {"ip": n["ip"], "reachable": n["reachable"], "stale": n["stale"]}))
    return out


DETECTORS = (own_address_echo, mac_flap, l2_loop, storm, not_forwarded,
             arp_unanswered, ip_conflict, neigh_failed, arp_churn)


def diagnose(inp: Inputs) -> list:
    out = []
    for detector in DETECTORS:
        out.extend(detector(inp))
    return out
