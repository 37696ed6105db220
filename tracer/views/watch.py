"""`brtrace watch`: always on, near-free until a symptom, then an incident
bundle nobody had to ask for.

Per watched bridge, every second (tracer/runloop.py through tracer/fleet.py,
so bridges may come and go as under `export`):

1. the always-on tier is read: drops, FDB moves, the interfaces' own
   counters, own-address lines of the kernel log (tracer/arming.py says
   why these are cheap);
2. a symptom arms the detail tier (the port programs, BridgeRun.set_detail)
   and starts a new episode for the findings; a quiet period disarms it;
3. the findings go to tracer/episodes.py, which opens, updates and closes
   incidents; an open incident is a bundle (tracer/incident/store.py):
   incident.json, the per-second timeline from up to 10 minutes before
   (tracer/incident/timeline.py), a pcapng of the involved ports
   (tracer/incident/capture.py), snapshots at open and close, the kernel
   log of the window (tracer/incident/kmsg.py), and the operator's
   --on-incident command with its output (tracer/incident/command.py).

The Prometheus endpoint is export's, plus brtrace_detail_armed,
brtrace_incident_open, brtrace_incidents_total and the store's counters.
Under watch the port packet and byte counters are the interfaces' own
(complete whether or not detail is armed); the frame-kind counters
(broadcast, ARP, echoes, returns) count while detail is armed.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Optional

from tracer.arming import Arming, Sample
from tracer.config import Config
from tracer.episodes import Episodes, triggers
from tracer.fleet import Fleet, Member, serving
from tracer.incident.capture import Capture
from tracer.incident.command import OnIncident
from tracer.incident.kmsg import KernelLog, format_line
from tracer.incident.store import Store, iso
from tracer.incident.timeline import Timeline
from tracer.output.prometheus import IncidentStoreCollector
from tracer.runloop import Follow
from tracer.session import BridgeRun, write_ready_file
from tracer.topology import IFACE_COUNTERS
from tracer.views.base import port_event_line
from tracer.views.export import GROUPS, member_snapshot, parse_listen, serve_metrics

INTERVAL = 1.0               # the timeline's resolution, and how often symptoms are looked at
BEFORE = 600.0               # seconds of timeline kept before a trigger
# br_fdb_update(): "br-int: received packet on t3o with own address as source address (...)"
ECHO_LINE = re.compile(r"(\S+): received packet on (\S+) with own address as source address")
# Of the bundle's size cap, what the capture may take; the rest is for the
# timeline and the kernel log (appends stop at the cap, Bundle.append_lines).
CAPTURE_SHARE = 0.75
# Port counters of the detail tier that go into the timeline (per second).
DETAIL_COUNTERS = ("rx_broadcast", "rx_multicast", "arp_requests", "arp_replies", "echoes",
                   "returns", "reentries", "origin_copies", "tx_flooded", "ndp_ns", "ndp_na")


@dataclass
class WatchOptions:
    dir: str
    quiet: float = 60.0                  # disarm detail / close an incident after this long without symptoms
    on_incident: Optional[str] = None
    on_close: bool = False
    command_timeout: float = 30.0
    max_bundles: int = 50
    max_total_mb: int = 512
    bundle_mb: int = 64
    max_per_hour: int = 6
    capture_seconds: float = 60.0
    capture_packets: int = 20000
    # The bench's tiers: "armed" from the start and never disarmed, or
    # "disarmed" whatever the symptoms; "auto": symptoms decide.
    detail: str = "auto"


class Watched:
    """One bridge's incarnation under watch: arming, episodes, the timeline,
    the open incident's bundle."""

    def __init__(self, member: Member, shared: "Shared"):
        self.member, self.shared = member, shared
        self.monitor = member.monitor
        self.run: BridgeRun = member.run
        opts = shared.opts
        self.arming = Arming(quiet_after=float("inf") if opts.detail == "armed" else opts.quiet)
        self.episodes = Episodes(close_after=opts.quiet)
        self.timeline = Timeline(seconds=int(BEFORE))
        self.findings: list = []
        self.bundle = None
        self.capture: Optional[Capture] = None
        self.kmsg_last_usec = -1         # timestamp of the last kernel line written
        # Moves and drops count from the load; the bridge's rx from now.
        self.prev = {"moves": 0, "drops": 0, "bridge_rx": self.run.bridge.counters.get("rx_packets", 0)}
        self.prev_t = self.run.started
        self._last_ports: dict = {}
        self.log = shared.log
        if opts.detail == "armed":
            self.arming.armed, self.arming.armed_at = True, time.monotonic()
            self._arm(True, "always (--detail armed)")

    # -- every second ----------------------------------------------------------
    def tick(self) -> None:
        """One second: fold the maps, judge, then arm or disarm. The findings
        come first: MAC flapping seen by the always-on tier opens the incident
        in the same second detail is armed, and the loop's verdict follows
        one second later."""
        self.monitor.tick()
        now = time.monotonic()
        totals = self._totals()
        dt = max(1e-3, now - self.prev_t)
        delta = {k: max(0, v - self.prev.get(k, 0)) for k, v in totals.items()}
        echo = len(self.shared.echo_lines(self.run.bridge.name, self.prev_t,
                                          {p.name for p in self.run.bridge.ports.values()}))
        self.prev, self.prev_t = totals, now
        found = self.monitor.findings()
        self.monitor.last_findings = found
        self.findings = [f.record() for f in found]
        self.timeline.add(now, self._second(delta))
        for what, ep in self.episodes.update(self.findings, now):
            getattr(self, f"_on_{what}")(ep, now)
        change = self.arming.observe(Sample(
            t=now, moves=delta["moves"], echo_lines=echo, bridge_rx_pps=delta["bridge_rx"] / dt,
            drops_pps=delta["drops"] / dt, critical_active=bool(triggers(self.findings))))
        if change is not None and self.shared.opts.detail != "disarmed":
            self._arm(change.armed, change.reason)
        if self.bundle is not None:
            self._write_second(now)

    def _totals(self) -> dict:
        snap = self.monitor.last_snapshot
        return {"moves": sum(max(0, m["count"] - 1) for m in snap.get("moves", [])),
                "drops": sum(snap.get("drops", {}).values()),
                "bridge_rx": self.run.bridge.counters.get("rx_packets", 0)}

    def _arm(self, on: bool, reason: str) -> None:
        self.run.set_detail(on)
        if on:
            # A new episode, and its first fold now: the next second has rates.
            self.monitor.restart_episode()
            self.monitor.tick()
        self.log(f"brtrace watch: {self.run.bridge.name}: detail {'armed' if on else 'disarmed'}: {reason}")

    def _second(self, delta: dict) -> dict:
        """The timeline record of this second: per-second deltas of every
        port's interface counters (and detail counters while armed), the
        bridge's moves, drops and frames delivered to it, the active findings."""
        rec = {"t": iso(time.time()), "armed": self.run.detail, "ports": {}}
        cur: dict = {}
        counters = self.monitor.last_snapshot.get("counters", {})
        for p in self.run.bridge.ports.values():
            values = {k: getattr(p, k) for k in IFACE_COUNTERS}
            if self.run.detail:
                values.update({k: v for k, v in counters.get(p.name, {}).items() if k in DETAIL_COUNTERS})
            cur[p.name] = values
            before = self._last_ports.get(p.name, {})
            # Sparse: only what moved this second (a quiet port is {}), so
            # ten minutes of a large bridge stay small in memory.
            rec["ports"][p.name] = {k: v - before[k] for k, v in values.items()
                                    if k in before and v > before[k]}
        self._last_ports = cur
        rec.update({k: delta.get(k, 0) for k in ("moves", "drops", "bridge_rx")})
        rec["findings"] = sorted({f["type"] for f in self.findings if f.get("active")})
        return rec

    # -- incidents ---------------------------------------------------------------
    def _on_open(self, ep, now: float) -> None:
        shared, run = self.shared, self.run
        verdict = ep.verdict
        bundle = shared.store.open(run.bridge.name, run.netns.name or None, ep.type, ep.ports,
                                   trigger={"finding": verdict, "detail_armed_at": self._armed_wall(now)})
        shared.opened[(run.bridge.name, ep.type)] += 1
        self.log(f"brtrace watch: {run.bridge.name}: incident opened: {verdict['message'] if verdict else ep.type}"
                 + (f" -> {bundle.path}" if bundle else " (not recorded)"))
        if bundle is None:
            return
        self.bundle = bundle
        bundle.set_findings(self.findings)
        bundle.update(verdict=verdict)
        bundle.append_lines("timeline.jsonl", [_json(r) for _t, r in self.timeline.since(now - BEFORE)])
        self._written_t = now
        bundle.write_json("snapshots/open.json", self._snapshot())
        self.kmsg_last_usec = -1         # a new bundle gets its own window, written or not
        self._write_kmsg(bundle, now - BEFORE)
        self.capture = Capture(bundle.open_binary("capture.pcapng"), run.bridge.name,
                               netns=run.netns.path if run.netns.name else None,
                               max_bytes=int(bundle.room() * CAPTURE_SHARE),
                               max_packets=shared.opts.capture_packets,
                               max_seconds=shared.opts.capture_seconds,
                               on_error=lambda what, exc: shared.store.failed(what, bundle.path, exc))
        self.capture.start({p.name: p.ifindex for p in run.bridge.ports.values() if p.name in ep.ports})
        shared.command_for(bundle, "open")

    def _on_ports(self, ep, now: float) -> None:
        if self.capture is not None:
            for p in self.run.bridge.ports.values():
                if p.name in ep.ports:
                    self.capture.add_port(p.name, p.ifindex)
        if self.bundle is not None:
            self.bundle.update(ports=list(ep.ports))

    def _on_changed(self, ep, now: float) -> None:
        if self.bundle is not None:
            self.bundle.set_findings(self.findings)
            self.bundle.update(verdict=ep.verdict)

    def _on_close(self, ep, now: float, why: str = "quiet") -> None:
        self.log(f"brtrace watch: {self.run.bridge.name}: incident closed ({why})")
        bundle, self.bundle = self.bundle, None
        if bundle is None:
            return
        self._finish(bundle, ep.verdict, why)
        if self.shared.opts.on_close:
            self.shared.command_for(bundle, "close")

    def _finish(self, bundle, verdict: Optional[dict], why: str) -> None:
        capture, self.capture = self.capture, None
        if capture is not None:
            capture.stop()
        self._write_kmsg(bundle, 0.0)
        bundle.write_json("snapshots/close.json", self._snapshot())
        bundle.set_findings(self.findings)
        bundle.update(verdict=verdict or bundle.record.get("verdict"),
                      capture=capture.stats() if capture is not None else {}, closed_because=why)
        bundle.close()

    def _write_second(self, now: float) -> None:
        bundle = self.bundle
        recs = self.timeline.since(self._written_t + 1e-6)
        if recs:
            bundle.append_lines("timeline.jsonl", [_json(r) for _t, r in recs])
        self._written_t = now
        self._write_kmsg(bundle, 0.0)

    def _write_kmsg(self, bundle, since: float) -> None:
        """The kernel's lines logged since `since` (monotonic s) and not
        written yet into the bundle's kernel.log (by their own timestamps: a
        line read late is still written once)."""
        start = max(int(since * 1_000_000), self.kmsg_last_usec + 1)
        new = [(usec, msg) for usec, msg in self.shared.kmsg.lines if usec >= start]
        if new:
            bundle.append_lines("kernel.log", [format_line(usec, msg) for usec, msg in new])
            self.kmsg_last_usec = new[-1][0]

    def _armed_wall(self, now: float) -> Optional[str]:
        at = self.arming.armed_at
        return iso(time.time() - (now - at)) if at is not None else None

    def _snapshot(self) -> dict:
        """FDB, neighbour entries, port states and interface counters now."""
        run = self.run
        snap = self.monitor.last_snapshot
        return {"at": iso(time.time()), "bridge": run.bridge.name, "netns": run.netns.name,
                "bridge_counters": dict(run.bridge.counters),
                "ports": [{"port": p.name, "ifindex": p.ifindex, "kind": p.kind, "mac": p.mac,
                           "operstate": p.operstate, "stp_state": p.stp_state,
                           "identity": run.labels.get(p.name, ""),
                           **{k: getattr(p, k) for k in IFACE_COUNTERS}}
                          for p in run.bridge.ports.values()],
                "fdb": [{"mac": e.mac, "port": run.names.get(e.ifindex, str(e.ifindex)), "vlan": e.vlan,
                         "local": e.local} for e in run.fdb()],
                "fdb_dump_skipped": run.fdb_skipped,
                "neighbours": snap.get("neigh", []), "arp_targets": snap.get("arp", []),
                "detail_armed": run.detail}

    def stop(self, why: str) -> None:
        """Watch stops, or the bridge vanished: an open incident is closed
        consistently (valid JSON, a complete pcapng)."""
        if self.bundle is not None:
            self.log(f"brtrace watch: {self.run.bridge.name}: incident closed ({why})")
            bundle, self.bundle = self.bundle, None
            ep = self.episodes.current
            self._finish(bundle, ep.verdict if ep else None, why)

    def snapshot_extra(self, m: Member, snap) -> None:
        """Under watch: packets and bytes from the interfaces' own counters;
        armed and incident state."""
        for p in self.run.bridge.ports.values():
            c = snap.ports.setdefault(p.name, {})
            for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes"):
                c[k] = getattr(p, k)
        snap.armed = self.run.detail
        snap.incident_open = self.bundle is not None or self.episodes.current is not None
        snap.incidents = {t: n for (b, t), n in self.shared.opened.items() if b == self.run.bridge.name}


def _json(rec: dict) -> str:
    return json.dumps(rec, separators=(",", ":"))


class Shared:
    """What every watched bridge shares: the store, the kernel log, the
    operator's command, the log."""

    def __init__(self, opts: WatchOptions, log):
        self.opts, self.log = opts, log
        mib = 1 << 20
        self.store = Store(opts.dir, max_bundles=opts.max_bundles, max_total_bytes=opts.max_total_mb * mib,
                           max_per_hour=opts.max_per_hour, bundle_max_bytes=opts.bundle_mb * mib, log=log)
        self.kmsg = KernelLog()
        self.command = OnIncident(opts.on_incident, timeout=opts.command_timeout, log=log) \
            if opts.on_incident else None
        self.opened: Counter = Counter()
        self._echo: list = []        # (monotonic t, bridge, port) from the kernel log
        self._bundles: dict = {}     # bundle id -> bundle, for command results

    def poll(self) -> None:
        """Every round of the loop: new kernel lines; finished commands."""
        added = self.kmsg.poll()
        if added:
            for usec, text in list(self.kmsg.lines)[-added:]:
                m = ECHO_LINE.search(text)
                if m:
                    self._echo.append((usec / 1e6, m.group(1), m.group(2)))
            del self._echo[:-1000]
        if self.command is not None:
            for result in self.command.poll():
                bundle = self._bundles.get(result.get("incident"))
                if bundle is not None:
                    bundle.record.setdefault("on_incident", []).append(result)
                    bundle.save()

    def echo_lines(self, bridge: str, since: float, ports: set) -> list:
        """Own-address lines the kernel logged for this bridge's ports since `since`."""
        return [(t, port) for t, b, port in self._echo if b == bridge and port in ports and t >= since]

    def command_for(self, bundle, event: str) -> None:
        if self.command is not None:
            self._bundles[bundle.id] = bundle
            self.command.start_for(bundle, event)

    def store_stats(self) -> dict:
        return {"write_errors": self.store.write_errors, "suppressed": self.store.suppressed,
                **self.store.usage()}

    def close(self) -> None:
        if self.command is not None:
            self.command.stop_all()
        self.kmsg.close()


def run_watch(cfg: Config, bridges: list, listen: str, opts: WatchOptions, out=None) -> int:
    out = out or sys.stderr
    host, port = parse_listen(listen)
    cfg = Config(**{**cfg.__dict__, "interval": INTERVAL})
    lock = threading.Lock()

    def log(line: str) -> None:
        print(line, file=out, flush=True)

    shared = Shared(opts, log)
    watched: dict = {}           # bridge name -> Watched of its current incarnation

    def on_up(m: Member) -> Follow:
        w = watched[m.bridge] = Watched(m, shared)
        bridge = m.bridge
        follow = m.monitor.follow(on_event=lambda ev: log(f"brtrace watch: {bridge}: {port_event_line(ev)}"))
        follow.tick = w.tick
        return follow

    def on_down(m: Member, reason: str) -> None:
        w = watched.pop(m.bridge, None)
        if w is not None:
            w.stop("the bridge vanished" if reason != "stopped" else "watch stopped")

    fleet = Fleet(cfg, bridges, lambda c: BridgeRun(c, GROUPS, detail_on_demand=True),
                  on_up=on_up, on_down=on_down, log=log)
    try:
        with serving(fleet):
            def source():
                with lock:
                    return [member_snapshot(m, watched[m.bridge].snapshot_extra if m.up and m.bridge in watched
                                            else None) for m in fleet.members]

            def store_source():
                with lock:
                    return shared.store_stats()
            server = serve_metrics(source, listen, host, port, out, "watch", bridges,
                                   collectors=[IncidentStoreCollector(store_source)])
            try:
                log(f"brtrace watch: incidents go to {opts.dir}")
                if cfg.ready_file:
                    write_ready_file(cfg.ready_file)
                fleet.loop(cfg.interval, cfg.duration, lock=lock, on_poll=shared.poll)
            finally:
                server.shutdown()
    finally:
        shared.close()
    return 0
