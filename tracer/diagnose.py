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
# A port is on a loop's path when the copies coming in by it are at least this
# share of the flooded frames the bridge sent out of it. On the path nearly
# every frame sent out comes back (a VPN under a storm loses some); a port that
# only carries the storm (a VM's, the gateway's) sees a copy come in when its
# host happens to resend a frame that is also going round: a fraction of a
# percent of what the storm floods out to it.
LOOP_SHARE = 0.25
# A port that leads on to another switch joins the loop's ports with at least
# this share of the copies the others get (see loop_ports()).
ONWARD_SHARE = 0.01
# Per-port rates (frames/s, highest over a full interval) that make a storm;
# the ARP figure counts requests (replies answer a storm, they do not make one).
STORM_BROADCAST_PPS = 500.0
STORM_ARP_PPS = 100.0
# The same for IPv6 neighbour discovery: solicitations make a storm (they are
# ARP requests' counterpart, and may be unicast, so the broadcast/multicast
# figure need not show them); advertisements answer one.
STORM_NDP_PPS = 100.0
# Per-port NDP counters (port_ndp.bpf.h nd_seen()), every type.
NDP_TYPES = ("ndp_ns", "ndp_na", "ndp_rs", "ndp_ra")


@dataclass
class Finding:
    type: str                 # own_address_echo, mac_flap, l2_loop, storm, ndp_unanswered, ...
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
    # l2_loop: the ports whose removal ends the loop (None: not a loop finding).
    culprit_ports: list | None = None

    def shown_ports(self) -> list:
        return [f"{p} ({self.identities[p]})" if self.identities.get(p) else p for p in self.ports]

    def record(self) -> dict:
        return {"kind": "finding", "type": self.type, "bridge": self.bridge, "ports": self.ports,
                "identities": self.identities, "severity": self.severity, "active": self.active,
                "message": self.message, "hint": self.hint, "evidence": self.evidence,
                **({} if self.culprit_ports is None else {"culprit_ports": self.culprit_ports})}

    @classmethod
    def from_record(cls, rec: dict) -> "Finding":
        """record() read back (an incident bundle's findings); missing fields
        are left empty, so an older or hand-edited file still prints."""
        return cls(type=rec.get("type", "?"), bridge=rec.get("bridge", ""), ports=list(rec.get("ports") or []),
                   severity=rec.get("severity", "?"), message=rec.get("message", ""), hint=rec.get("hint", ""),
                   evidence=rec.get("evidence") or {}, active=rec.get("active", True),
                   identities=rec.get("identities") or {}, culprit_ports=rec.get("culprit_ports"))


@dataclass
class Inputs:
    bridge: object            # topology.Bridge (current)
    state: BridgeState
    seconds: float            # run length so far
    drop_rows: list = field(default_factory=list)
    ns_prefix: str = ""       # "ip netns exec NS " when the bridge lives in a namespace
    labels: dict = field(default_factory=dict)   # port -> who holds it ("vpn tincd (pid 42)")
    onward: dict = field(default_factory=dict)   # veth port -> its other end is a switch's port
    jiffy_ms: float = 4.0     # the kernel tick: unit of the loop records' round trips
    started_ns: int = 0       # the run's start on the kernel's monotonic clock


def _forwarding(inp: Inputs, port: str) -> bool:
    """STP-blocked ports receive the loop's frames and discard them: that is
    STP working, not a loop. A port now disabled (its tap's reader gone, its
    link down) or removed keeps what it did while it forwarded."""
    for p in inp.bridge.ports.values():
        if p.name == port:
            return p.stp_state not in ("blocking", "listening", "learning")
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
    looping = loop_ports(inp)
    for m in sorted(inp.state.macs.values(), key=lambda m: -m.count):
        moves = m.count - 1
        if moves < FLAP_MIN_MOVES or len(m.ports) < 2:
            continue
        # over the state's trailing window: a short last interval (the tail
        # folded at exit) must not decide the rate or `active`
        rate = m.moves_per_second
        vlan = f" (VLAN {m.vlan})" if m.vlan else ""
        ports = " and ".join(m.ports[:4])
        # Where it lives: the one port it was learned on that is not on a
        # loop's path; the loop's ports learn it from copies coming back.
        home = [p for p in m.ports if p not in looping]
        wrong = [p for p in m.ports if p in looping]
        where = (f"; it lives behind {home[0]} and is wrongly learned on {', '.join(wrong)} from "
                 f"copies of its frames coming back" if len(home) == 1 and wrong else "")
        out.append(Finding(
            "mac_flap", inp.bridge.name, list(m.ports), "critical" if moves >= 10 * FLAP_MIN_MOVES else "warning",
            f"MAC {m.mac}{vlan} moved {moves} times between {ports}: the bridge keeps relearning it, "
            f"so frames for it go to the wrong port part of the time{where}",
            f"a MAC lives behind one port; a loop or a port that reflects frames makes it jump "
            f"(see the other findings for {ports}); "
            f"`{inp.ns_prefix}bridge fdb show br {inp.bridge.name} | grep {m.mac}`",
            {"mac": m.mac, "vlan": m.vlan, "moves": moves, "moves_per_second": round(rate, 1),
             "peak_moves_per_second": round(m.peak_rate, 1), "over_seconds": round(inp.seconds, 1),
             "lives_on": home[0] if len(home) == 1 and wrong else None,
             "wrongly_learned_on": wrong if len(home) == 1 else []},
            active=m.moves_per_second > 0))
    return out


def _copies(values: dict) -> int:
    return values.get("returns", 0) + values.get("reentries", 0)


def loop_totals(inp: Inputs) -> dict:
    """The whole-run port totals, with the copies that came in by a frame's
    first port faster than a host repeats itself (origin_copies, port_flood.bpf.h
    flood_ingress()) counted as reentries where the port leads on to another
    switch: a loop beyond it, seen from a bridge that met the storm's frames
    first as they came in there (a storm already running). On a guest's port
    they are its host sending one frame over and over: a storm, not a loop."""
    out = {}
    for port, values in inp.state.totals.items():
        extra = values.get("origin_copies", 0)
        if extra and leads_on(inp, port):
            values = {**values, "reentries": values.get("reentries", 0) + extra}
        out[port] = values
    return out


def _copy_rate(inp: Inputs, port: str) -> float:
    """Loop copies per second coming in by `port` now (as loop_totals() counts them)."""
    st = inp.state
    rate = st.rate(port, "returns") + st.rate(port, "reentries")
    return rate + (st.rate(port, "origin_copies") if leads_on(inp, port) else 0.0)


def loop_ports(inp: Inputs) -> dict:
    """Ports on a loop's path: port -> its counters. Whole-run totals, so the
    verdict holds from interval to interval while a storm is unchanged, and
    a share rather than a count, so it does not depend on when brtrace
    started. STP-blocked ports and the bridge itself are never on it."""
    candidates = {port: values for port, values in loop_totals(inp).items()
                  if port != inp.bridge.name and _copies(values) >= LOOP_MIN_FRAMES
                  and _forwarding(inp, port)}
    out = {port: values for port, values in candidates.items()
           if _copies(values) >= LOOP_SHARE * values.get("tx_flooded", 0)}
    # A port that leads on to another switch (a VPN tap, a link to another
    # bridge) and gets copies back is on the loop's path even when the way
    # back through it carries far less than goes out (tinc under a storm
    # passes one direction much better than the other); a guest's port never
    # qualifies this way, however its host's resends look.
    total = sum(_copies(v) for v in out.values())
    if out:
        out.update({port: values for port, values in candidates.items()
                    if port not in out and _copies(values) >= ONWARD_SHARE * total
                    and leads_on(inp, port)})
    return out


def _percentile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def loop_evidence(inp: Inputs, ports: dict) -> dict:
    """What the loop looks like: copies per port, round trip, amplification,
    when it was first seen. Round trips come from the sampled loop records
    (jiffies: resolution one tick)."""
    st = inp.state
    per_port = {p: {"reentering": _copies(v), "returned": v.get("returns", 0),
                    "reentered": v.get("reentries", 0), "crossed": v.get("crossings", 0),
                    "flooded_out": v.get("tx_flooded", 0), "host_repeats": v.get("host_repeats", 0)}
                for p, v in sorted(ports.items())}
    back = sum(_copies(v) for v in ports.values())
    # Frames the bridge saw new: every flooded frame in, less the copies and repeats.
    flooded_in = sum(v.get("rx_broadcast", 0) + v.get("rx_multicast", 0)
                     - _copies(v) - v.get("host_repeats", 0)
                     for p, v in loop_totals(inp).items() if p != inp.bridge.name)
    gaps = [g for p in ports for g in st.round_trips.get(p, ())]
    evidence = {"frames_back": back, "per_port": per_port,
                "copies_per_frame": round(back / max(1, flooded_in), 1),
                "round_trip_ms": ({"median": round(_percentile(gaps, 0.5) * inp.jiffy_ms, 1),
                                   "p95": round(_percentile(gaps, 0.95) * inp.jiffy_ms, 1),
                                   "samples": len(gaps), "resolution_ms": round(inp.jiffy_ms, 3)}
                                  if gaps else None),
                "first_seen_s": (round(max(0.0, (st.first_loop_ns - inp.started_ns) / 1e9), 1)
                                 if st.first_loop_ns is not None and inp.started_ns else None)}
    sources = Counter(e.get("src_mac") for e in st.loops if e["port"] in ports and e.get("src_mac"))
    evidence["top_sources"] = dict(sources.most_common(5))
    return evidence


# Device kinds that are not a guest's end: uplinks and tunnels to other switches.
_HOST_KINDS = ("veth", "tun")


def leads_on(inp: Inputs, port: str) -> bool:
    """Can frames sent out of `port` reach another switch, and so come back by
    another way? A VPN tap, a veth whose other end is a bridge's port, a NIC,
    a bond or a tunnel can; a guest (a VM's tap, a veth into a namespace of
    its own) cannot, unless the guest bridges, which brtrace does not see."""
    label = inp.labels.get(port, "")
    if label.startswith("vpn"):
        return True
    if label.startswith("vm") or port == inp.bridge.name:
        return False
    kind = next((p.kind for p in inp.bridge.ports.values() if p.name == port), None)
    if kind == "veth":
        return bool(inp.onward.get(port))
    return kind is not None and kind not in _HOST_KINDS


def _who(inp: Inputs, port: str) -> str:
    return f"{port} ({inp.labels[port]})" if inp.labels.get(port) else port


def l2_loop(inp: Inputs) -> list:
    """One verdict from the loop model (ports.bpf.c counts the copies):
    two or more ports on the path: a loop between them; one port: it
    reflects when the copies come in after the bridge sent the frame out of
    it, and the loop lies beyond it when copies keep coming in by it although
    the bridge never sends them back there (hairpin off)."""
    ports = loop_ports(inp)
    if not ports:
        return []
    st = inp.state
    evidence = loop_evidence(inp, ports)
    active = any(_copy_rate(inp, p) > 0 for p in ports)
    back = evidence["frames_back"]
    rtt = evidence["round_trip_ms"]
    took = f", round trip ~{rtt['median']:g} ms" if rtt and rtt["median"] >= inp.jiffy_ms else (
        f", round trip under {inp.jiffy_ms:g} ms" if rtt else "")
    ns = inp.ns_prefix
    if len(ports) >= 2:
        names = sorted(ports)
        return [Finding(
            "l2_loop", inp.bridge.name, names, "critical",
            f"layer-2 loop between {', '.join(names)}: flooded frames leave the bridge by one of "
            f"these ports and come back in by another ({back} copies{took}, "
            f"{evidence['copies_per_frame']:g} per frame)",
            f"enable STP on every bridge of the loop (`{ns}ip link set {inp.bridge.name} type bridge "
            f"stp_state 1`) or unplug one of these links (`{ns}ip link set {names[-1]} nomaster`)",
            {**evidence, "kind": "loop_between_ports"}, active=active, culprit_ports=names)]
    (port, values), = ports.items()
    if values.get("reentries", 0) > values.get("returns", 0):
        # Copies keep coming in by one port without being sent back out of it.
        # From one bridge that is a loop beyond the port, or a loop that runs
        # one way through this bridge: out of a port that leads on to another
        # switch (where the storm goes and nothing comes back), round, and in
        # again here. Only what the other ports lead to tells them apart.
        back = _copies(values)
        onward = sorted(p for p, v in st.totals.items()
                        if p != port and _forwarding(inp, p) and leads_on(inp, p)
                        and v.get("tx_flooded", 0) >= LOOP_SHARE * back)
        if onward:
            names = sorted([port] + onward)
            out = ", ".join(onward)
            return [Finding(
                "l2_loop", inp.bridge.name, names, "critical",
                f"layer-2 loop through {out} and {port}: the bridge floods frames out of {out}, "
                f"which leads on to another switch, and they come back in by {port} ({back} "
                f"copies{took}, {evidence['copies_per_frame']:g} per frame; one way: nothing comes "
                f"back by {out})",
                f"enable STP on every bridge of the loop (`{ns}ip link set {inp.bridge.name} type "
                f"bridge stp_state 1`) or unplug one of these links (`{ns}ip link set {port} "
                f"nomaster`); if the storm goes on after {out} is taken out, the loop lies "
                f"beyond {port} instead",
                {**evidence, "kind": "loop_between_ports", "one_way": {"out": onward, "in": port}},
                active=active, culprit_ports=names)]
        peers = ", ".join(evidence["top_sources"]) or "none sampled"
        return [Finding(
            "l2_loop", inp.bridge.name, [port], "critical",
            f"a loop beyond {port}: frames keep coming back in through {port} although the bridge "
            f"does not send them back out there ({back} copies{took}, "
            f"{evidence['copies_per_frame']:g} per frame): two hosts behind {port} are joined "
            f"by a second path",
            f"the loop is behind {_who(inp, port)}, not on this bridge: look for a second path "
            f"between the hosts behind it (a VPN peer also cabled or bridged another way); "
            f"sources of the copies: {peers}; `{ns}bridge fdb show br {inp.bridge.name} | grep "
            f"{port}` lists the MACs behind it. Meanwhile `{ns}ip link set {port} nomaster` "
            f"shields this host (and cuts it off that segment)",
            {**evidence, "kind": "loop_beyond_port"}, active=active, culprit_ports=[])]
    return [Finding(
        "l2_loop", inp.bridge.name, [port], "critical",
        f"{port} reflects: {back} flooded frames that the bridge sent out of {port} came back in "
        f"through {port} itself{took}",
        f"take {port} out of the bridge (`{ns}ip link set {port} nomaster`): if the copies (and "
        f"echoes, MAC moves) stop, {_who(inp, port)} sends frames back; check what is behind "
        f"it (a VPN whose far end loops, a tap reader writing frames back)",
        {**evidence, "kind": "reflecting_port"}, active=active, culprit_ports=[port])]


def dad_looped(inp: Inputs) -> list:
    """IPv6 Duplicate Address Detection probes (solicitations from ::) that
    came back into the bridge: a guest that hears its own probe concludes
    that another host already has the address (RFC 4862 5.4.3) and leaves it
    unconfigured ("dadfailed"), so it goes without IPv6 while the loop or
    reflection lasts; stacks that add RFC 7527's nonce (Linux by default,
    net.ipv6.conf.*.enhanced_dad) recognise their own probe and carry on.
    Named by the port the probes came back through."""
    out = []
    for port, values in sorted(inp.state.totals.items()):
        n = values.get("ndp_dad_back", 0)
        if not n or port == inp.bridge.name:
            continue
        out.append(Finding(
            "dad_looped", inp.bridge.name, [port], "critical",
            f"{n} IPv6 duplicate address detection probes came back into {inp.bridge.name} through "
            f"{port}: a guest that hears its own probe takes its address for a duplicate and leaves "
            f"it unconfigured (unless it tags its probes with a nonce, RFC 7527, as Linux does by "
            f"default)",
            f"stop what sends frames back through {_who(inp, port)} (see the l2_loop finding); then "
            f"on the guests, `ip -6 addr` shows `dadfailed`: re-add the address or bring the "
            f"interface down and up to run DAD again",
            {"probes_back": n, "probes_seen": values.get("ndp_dad", 0),
             "per_second": round(inp.state.rate(port, "ndp_dad_back"), 1)},
            active=inp.state.rate(port, "ndp_dad_back") > 0))
    return out


def storm(inp: Inputs) -> list:
    """Per-port broadcast/ARP/NDP rates at their peak interval of the run, so
    a storm that has since stopped is still reported (with its current rate).
    A storm is judged on broadcast/multicast frames, ARP *requests* and IPv6
    neighbour *solicitations*; a port whose only high figure is ARP replies
    or neighbour advertisements answers a storm that enters elsewhere, and is
    reported as such. The headline names what crossed its threshold, so a
    storm of (unicast) solicitations is never called a broadcast storm."""
    out = []
    st = inp.state
    figures = {}
    for port in sorted(st.peaks):
        if port == inp.bridge.name:
            continue
        # Requests and replies are told apart where the ARP frame was readable;
        # without that breakdown every ARP frame counts as a request.
        split = st.total(port, "arp_requests") + st.total(port, "arp_replies") > 0
        figures[port] = (max(st.peak(port, "rx_broadcast"), st.peak(port, "rx_multicast")),
                         st.peak(port, "arp_requests" if split else "rx_arp"),
                         st.peak(port, "ndp_ns"), split)
    storming = [p for p, (bcast, requests, solicits, _s) in figures.items()
                if bcast >= STORM_BROADCAST_PPS or requests >= STORM_ARP_PPS or solicits >= STORM_NDP_PPS]
    for port, (bcast, requests, solicits, split) in figures.items():
        replies, adverts = st.peak(port, "arp_replies"), st.peak(port, "ndp_na")
        answers_evidence = {"peak_arp_replies_per_second": round(replies, 1),
                            "arp_replies_per_second": round(st.rate(port, "arp_replies"), 1),
                            "peak_ndp_advertisements_per_second": round(adverts, 1),
                            "ndp_advertisements_per_second": round(st.rate(port, "ndp_na"), 1)}
        if port not in storming:
            if replies >= STORM_ARP_PPS or adverts >= STORM_NDP_PPS:
                out.append(_answering_storm(inp, port, storming, answers_evidence,
                                            ndp=replies < STORM_ARP_PPS))
            continue
        out.append(_storm_on(inp, port, bcast, requests, solicits, split, answers_evidence))
    return out


def _storm_on(inp: Inputs, port: str, bcast: float, requests: float, solicits: float, split: bool,
              answers_evidence: dict) -> Finding:
    st = inp.state
    now = st.rate(port, "rx_broadcast") + st.rate(port, "rx_multicast")
    arp_now = st.rate(port, "arp_requests" if split else "rx_arp")
    ndp_now = st.rate(port, "ndp_ns")
    arps, ndps = st.total(port, "rx_arp"), sum(st.total(port, k) for k in NDP_TYPES)
    dups = st.total(port, "arp_duplicates")
    ndp_dups = st.total(port, "ndp_duplicates") + st.total(port, "ndp_dad_back")
    dup_ratio = round(dups / arps, 3) if arps else 0.0
    ndp_dup_ratio = round(ndp_dups / ndps, 3) if ndps else 0.0
    targets = Counter(e.get("arp_tpa") for e in st.loops if e["port"] == port and e.get("arp_tpa"))
    ndp_targets = {t["ip"]: t["solicits"] + t["copies"] for t in st.ndp
                   if port in (t.get("asker"), t.get("echo")) and t["solicits"] + t["copies"]}
    # The headline is what crossed a threshold: broadcast frames or ARP
    # requests (themselves broadcast) make a broadcast storm; solicitations
    # alone an NDP storm, whatever the broadcast figure says.
    broadcast = bcast >= STORM_BROADCAST_PPS or requests >= STORM_ARP_PPS
    figures = []
    if broadcast or bcast:
        figures.append(f"up to {bcast:.0f} broadcast/multicast frames/s (now {now:.0f}/s)")
    if requests:
        figures.append(f"up to {requests:.0f} ARP {'requests' if split else 'frames'}/s")
    if solicits:
        figures.append(f"up to {solicits:.0f} IPv6 neighbour solicitations/s (now {ndp_now:.0f}/s)")
    copies = [f"{ratio:.0%} of {what} frames are copies coming back"
              for ratio, n, what in ((dup_ratio, dups, "ARP"), (ndp_dup_ratio, ndp_dups, "NDP")) if n]
    if broadcast:
        head, kind = f"broadcast storm on {port}", "broadcast_storm"
        critical = bcast >= 4 * STORM_BROADCAST_PPS
        look = f"`{inp.ns_prefix}tcpdump -eni {port} broadcast`"
    else:
        head, kind = f"IPv6 neighbour solicitation storm on {port}", "ndp_storm"
        critical = solicits >= 4 * STORM_NDP_PPS
        look = f"`{inp.ns_prefix}tcpdump -eni {port} 'icmp6 and ip6[40] == 135'`"
    return Finding(
        "storm", inp.bridge.name, [port], "critical" if critical else "warning",
        f"{head}: {', '.join(figures)}" + "".join(f"; {c}" for c in copies),
        f"copies coming back point at a loop or a reflecting port (see l2_loop); without copies, "
        f"look at who sends: {look}",
        {"kind": kind, "peak_broadcast_per_second": round(bcast, 1),
         "broadcast_per_second": round(now, 1), "peak_arp_per_second": round(st.peak(port, "rx_arp"), 1),
         "peak_arp_requests_per_second": round(requests, 1) if split else None,
         "peak_ndp_solicitations_per_second": round(solicits, 1),
         "ndp_solicitations_per_second": round(ndp_now, 1),
         **answers_evidence, "arp_duplicate_ratio": dup_ratio, "ndp_duplicate_ratio": ndp_dup_ratio,
         "top_arp_targets": dict(targets.most_common(5)),
         "top_ndp_targets": dict(Counter(ndp_targets).most_common(5))},
        active=now >= STORM_BROADCAST_PPS or arp_now >= STORM_ARP_PPS or ndp_now >= STORM_NDP_PPS)


def _answering_storm(inp: Inputs, port: str, storming: list, evidence: dict, ndp: bool) -> Finding:
    """A port whose only high figure is ARP replies (or, `ndp`, neighbour
    advertisements): what is behind it answers requests that flood in from
    elsewhere (e.g. a gateway answering a storm)."""
    key, what, storm_kind, proto = (("ndp_na", "IPv6 neighbour advertisements", "a solicitation storm",
                                     "'icmp6 and ip6[40] == 136'") if ndp else
                                    ("arp_replies", "ARP replies", "an ARP storm", "arp"))
    peak, now = inp.state.peak(port, key), inp.state.rate(port, key)
    if storming:
        where = ", ".join(storming)
        why = f"it answers {storm_kind} that enters elsewhere (see the storm on {where})"
        look = "'icmp6 and ip6[40] == 135'" if ndp else "broadcast"
        hint = (f"{port} is not the cause: stop the {'' if ndp else 'broadcast '}storm on {where} "
                f"(see that storm finding; `{inp.ns_prefix}tcpdump -eni {storming[0]} {look}`) "
                f"and {port}'s {'advertisements' if ndp else 'replies'} stop with it")
    else:
        asks = "neighbour solicitations" if ndp else "ARP requests"
        why = (f"it answers {asks} at a storm's rate, though no port of {inp.bridge.name} "
               f"shows a broadcast storm (the requests may come from this host or be unicast)")
        hint = (f"{port} is not the cause: see whom it answers, `{inp.ns_prefix}tcpdump -eni {port} {proto}`, "
                f"and why they ask so often")
    return Finding(
        "storm", inp.bridge.name, [port], "warning",
        f"{port} sends up to {peak:.0f} {what}/s (now {now:.0f}/s): {why}",
        hint, {"kind": "answering_ndp_storm" if ndp else "answering_arp_storm", **evidence,
               "storm_ports": list(storming)},
        active=now >= (STORM_NDP_PPS if ndp else STORM_ARP_PPS))


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


# Findings under which ARP requests may never reach their target: the bridge
# suppresses them (not_forwarded) or a loop, storm or echo loses them on the way.
SUPPRESSING = ("not_forwarded", "l2_loop", "storm", "own_address_echo")


def arp_unanswered(inp: Inputs, earlier=()) -> list:
    """`earlier`: the findings diagnose() made before this detector. When one
    of them may have kept the requests from their target, no reply does not
    mean that nothing answers."""
    out = []
    causes = [f for f in earlier if f.type in SUPPRESSING]
    for t in sorted(inp.state.arp, key=lambda t: -t["requests"]):
        if t["requests"] < ARP_UNANSWERED_MIN or t["replies"]:
            continue
        asker = t.get("asker") or "?"
        out.append(_unanswered(
            inp, "arp_unanswered", causes, t, asker, "requests",
            f"{t['requests']} ARP requests for {t['ip']} (latest from {asker}) got no reply on {inp.bridge.name}",
            f"is the host with {t['ip']} up and on this bridge? guests asking for their gateway "
            f"will fail to send (their neighbour entry goes INCOMPLETE -> FAILED)",
            {"ip": t["ip"], "requests": t["requests"], "replies": 0},
            active=inp.state.arp_rate(t["ip"], "requests") > 0))
    return out


def ndp_unanswered(inp: Inputs, earlier=()) -> list:
    """arp_unanswered for IPv6: neighbour solicitations for an address that
    no advertisement answered. Duplicate address detection probes are not
    counted: nobody answering them is their success."""
    out = []
    causes = [f for f in earlier if f.type in SUPPRESSING]
    for t in sorted(inp.state.ndp, key=lambda t: -t["solicits"]):
        if t["solicits"] < ARP_UNANSWERED_MIN or t["adverts"]:
            continue
        asker = t.get("asker") or "?"
        out.append(_unanswered(
            inp, "ndp_unanswered", causes, t, asker, "solicitations",
            f"{t['solicits']} IPv6 neighbour solicitations for {t['ip']} (latest from {asker}) got no "
            f"advertisement on {inp.bridge.name}",
            f"is the host with {t['ip']} up, on this bridge and speaking IPv6 (not `disable_ipv6`)? "
            f"guests asking for it (their gateway?) fail to send to it: their neighbour entry goes "
            f"INCOMPLETE -> FAILED (`{inp.ns_prefix}tcpdump -eni {asker} icmp6` shows the solicitations)",
            {"ip": t["ip"], "solicitations": t["solicits"], "advertisements": 0, "copies": t["copies"]},
            active=inp.state.ndp_rate(t["ip"], "solicits") > 0))
    return out


def _unanswered(inp: Inputs, type_: str, causes: list, t: dict, asker: str, asks: str, asked: str,
                hint: str, evidence: dict, active: bool = True) -> Finding:
    """An address asked for (`asks`: "requests", "solicitations") and never
    answered; when one of `causes` may have kept the questions from their
    target, it says so rather than that nothing answers."""
    if not causes:
        return Finding(type_, inp.bridge.name, [asker], "warning",
                       f"{asked}: nothing behind the bridge answers for {t['ip']}", hint, evidence, active=active)
    # The not_forwarded finding for the target's own MAC first, then by SUPPRESSING order.
    ranked = sorted(causes, key=lambda f: (not (t.get("mac") and f.evidence.get("mac") == t.get("mac")),
                                           SUPPRESSING.index(f.type)))
    seen = "; ".join(f"{f.type} on {', '.join(f.ports)}" for f in ranked[:3])
    first = ranked[0]
    return Finding(
        type_, inp.bridge.name, [asker], "warning",
        f"{asked}, but the {asks} may have been suppressed or lost on the way ({seen}): "
        f"that is not proof that nothing answers for {t['ip']}",
        f"deal with the {first.type} finding on {', '.join(first.ports)} first; if {asks} for "
        f"{t['ip']} still go unanswered then, check that the host with {t['ip']} is up and on this bridge",
        {**evidence, "maybe_suppressed_by": [{"type": f.type, "ports": list(f.ports)} for f in ranked]},
        active=active)


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
            {"ip": t["ip"], "macs": [t["mac"], t["other_mac"]], "conflicting_claims": t["conflicts"]},
            active=inp.state.arp_rate(t["ip"], "conflicts") > 0))
    out += ipv6_conflicts(inp)
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


def ipv6_conflicts(inp: Inputs) -> list:
    """IPv6 addresses held twice, from neighbour discovery on the wire: two
    MACs advertising one address (both hosts keep it: duplicate address
    detection was off on one, or their probes never met), or a DAD probe
    answered (RFC 4862 5.4.3: the prober gives the address up, `dadfailed`)."""
    out = []
    st = inp.state
    for t in st.ndp:
        if t["conflicts"]:
            ports = [p for p in dict.fromkeys([t.get("claimer"), t.get("other")]) if p]
            out.append(Finding(
                "ip_conflict", inp.bridge.name, ports, "critical",
                f"{t['ip']} is advertised by two MACs: {t['mac']} ({t.get('claimer') or '?'}) and "
                f"{t['other_mac']} ({t.get('other') or '?'}), {t['conflicts']} conflicting IPv6 "
                f"advertisements",
                "two hosts use the same IPv6 address (a cloned VM, or an address set twice with duplicate "
                "address detection off: `ip -6 addr` shows `nodad`); neighbours flip between the two "
                "MACs with every advertisement that has the override flag",
                {"kind": "advertised_by_two_macs", "ip": t["ip"], "macs": [t["mac"], t["other_mac"]],
                 "conflicting_advertisements": t["conflicts"], "advertisements": t["adverts"],
                 "overrides": t["overrides"], "router_advertisements": t["routers"]},
                active=st.ndp_rate(t["ip"], "conflicts") > 0))
        if t["dad_answered"]:
            prober, answerer = t.get("prober") or "?", t.get("answerer") or "?"
            ports = [p for p in dict.fromkeys([t.get("prober"), t.get("answerer")]) if p]
            times = f" ({t['dad_answered']} times)" if t["dad_answered"] > 1 else ""
            out.append(Finding(
                "ip_conflict", inp.bridge.name, ports, "warning",
                f"the duplicate address detection probe for {t['ip']} from {t['prober_mac']} ({prober}) "
                f"was answered by {t['answer_mac']} ({answerer}){times}: {t['ip']} is already in use "
                f"behind {answerer}, so the host behind {prober} leaves it unconfigured (`dadfailed`)",
                f"give one of the two hosts another address: on the one behind {prober}, `ip -6 addr` "
                f"shows {t['ip']} `dadfailed` (delete it, add the right one); if the host behind "
                f"{answerer} should not hold {t['ip']}, it may be a clone keeping its original's address",
                {"kind": "dad_answered", "ip": t["ip"], "macs": [t["prober_mac"], t["answer_mac"]],
                 "prober_mac": t["prober_mac"], "answer_mac": t["answer_mac"],
                 "dad_probes": t["dad_probes"], "answers": t["dad_answered"]},
                active=st.ndp_rate(t["ip"], "dad_answered") > 0))
    return out


def rogue_ra(inp: Inputs) -> list:
    """Router advertisements from more than one MAC (guests take every
    advertising router as a default router, with its prefixes: a rogue one,
    a guest running radvd or with forwarding on, draws their traffic), or a
    router's advertisements entering by another port than the router's own
    (a loop or a reflecting port sends them back: guests then learn the
    router's MAC through the wrong port)."""
    out = []
    st = inp.state
    routers = [t for t in st.ndp if t["routers"]]
    senders: dict = {}          # MAC -> {mac, port, source addresses}
    for t in routers:
        # The first MAC seen advertising from the address, and one that
        # advertised it after (conflicts): one link-local address, two routers.
        for mac, port in [(t["mac"], t.get("claimer"))] + ([(t["other_mac"], t.get("other"))]
                                                           if t["conflicts"] else []):
            senders.setdefault(mac, {"mac": mac, "port": port, "from": []})["from"].append(t["ip"])
    if len(senders) >= 2:
        listed = sorted(senders.values(), key=lambda s: (s["port"] or "", s["mac"]))
        ports = list(dict.fromkeys(s["port"] for s in listed if s["port"]))
        who = ", ".join(f"{s['mac']} ({s['port'] or '?'}, from {', '.join(s['from'])})" for s in listed)
        out.append(Finding(
            "rogue_ra", inp.bridge.name, ports, "critical",
            f"router advertisements on {inp.bridge.name} come from {len(listed)} MACs: {who}; guests "
            f"take each as a default router, with its prefixes",
            f"unless all of them are routers you run (a redundant pair), the others are rogue: a guest "
            f"running radvd or with forwarding on; stop it there, or drop ICMPv6 type 134 entering the "
            f"guests' ports (RA guard, RFC 6105); `{inp.ns_prefix}tcpdump -eni {ports[0] if ports else 'PORT'} "
            f"'icmp6 and ip6[40] == 134'` shows them",
            {"kind": "several_routers", "routers": listed},
            active=any(st.ndp_rate(t["ip"], "routers") > 0 for t in routers)))
    for t in routers:
        back = t["copies"] + t["elsewhere"]
        echo, home = t.get("echo"), t.get("claimer")
        if not back or not echo or echo == home:
            continue
        out.append(Finding(
            "rogue_ra", inp.bridge.name, [echo], "warning",
            f"router advertisements from {t['mac']} ({t['ip']}), the router behind {home or '?'}, also "
            f"enter {inp.bridge.name} through {echo}: {back} came back in (reflected or looped), so "
            f"guests may learn the router through {echo}",
            f"{_who(inp, echo)} sends frames back (see the l2_loop finding); `{inp.ns_prefix}tcpdump -eni "
            f"{echo} 'icmp6 and ip6[40] == 134'` shows the router's advertisements coming in there",
            {"kind": "reflected_ra", "ip": t["ip"], "router_mac": t["mac"], "router_port": home,
             "came_back": back, "copies": t["copies"], "advertisements": t["routers"]},
            active=st.ndp_rate(t["ip"], "copies") + st.ndp_rate(t["ip"], "elsewhere") > 0))
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


DETECTORS = (own_address_echo, mac_flap, l2_loop, dad_looped, storm, not_forwarded,
             arp_unanswered, ndp_unanswered, ip_conflict, rogue_ra, neigh_failed, arp_churn)


# Detectors that also read the findings made before them (second argument).
SEES_EARLIER = (arp_unanswered, ndp_unanswered)


def diagnose(inp: Inputs) -> list:
    out = []
    for detector in DETECTORS:
        out.extend(detector(inp, tuple(out)) if detector in SEES_EARLIER else detector(inp))
    return out
