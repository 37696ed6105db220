"""`brtrace trace`: the journey of selected frames through a bridge, step by
step (entered port X, forwarded / flooded / delivered locally / suppressed /
dropped, left via port Y), with an optional pcapng of every step.

The kernel side (bpf/trace.bpf.c) filters frames before recording anything;
tracer/journey.py ties the steps into journeys; tracer/output/pcapng.py
writes the capture. This module runs them and prints.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

from tracer.config import Config
from tracer.decode import ETHERTYPES, decode_frame
from tracer.errors import UsageError
from tracer.journey import Journeys
from tracer.output import jsonl
from tracer.output.pcapng import INBOUND, OUTBOUND, PcapngWriter, with_vlan_tag
from tracer.report import base_function
from tracer.runtime import require_root
from tracer.runloop import Follow, attached, last_pass
from tracer.session import BridgeRun
from tracer.topology import Topology, resolve_netns
from tracer.trace_abi import SNAP_MAX, ip6_filter, ip_filter, mac_filter, parse_trace_event
from tracer.views.base import port_event_printer


DEFAULT_SNAPLEN = 96
DEFAULT_RATE = 1000          # recorded steps per second and CPU
POLL_CAP = 0.1               # longest wait for the kernel before finishing quiet journeys
STEP_DIRECTION = {"entered": INBOUND, "delivered": INBOUND, "left": OUTBOUND, "originated": OUTBOUND}


@dataclass(frozen=True)
class Filters:
    """What to trace; None/False: no filter on that field."""

    mac: Optional[str] = None      # source or destination MAC
    ip: Optional[str] = None       # IPv4 or IPv6 source or destination; ARP sender or target,
                                   # Neighbor Solicitation/Advertisement target
    arp: bool = False              # ARP only
    vlan: Optional[int] = None     # VLAN id
    proto: Optional[int] = None    # ethertype
    port: Optional[str] = None     # port (or the bridge) the frame enters or leaves by
    ip_proto: Optional[int] = None  # IPv4 protocol / IPv6 next header (icmp 1, icmpv6 58)

    def defines(self, port_ifindex: int = 0) -> dict:
        v6 = bool(self.ip) and ipaddress.ip_address(self.ip).version == 6
        out = {"FILTER_MAC": mac_filter(self.mac) if self.mac else 0,
               "FILTER_IP": ip_filter(self.ip) if self.ip and not v6 else 0,
               "FILTER_ARP": int(self.arp), "FILTER_VLAN": self.vlan or 0,
               "FILTER_PROTO": self.proto or 0, "FILTER_PORT": port_ifindex,
               "FILTER_L4": self.ip_proto or 0}
        if v6:
            out.update(ip6_filter(self.ip))
        return out

    def record(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if v not in (None, False)}
        if "proto" in out:
            out["proto"] = f"0x{out['proto']:04x}"
        return out

    def text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.record().items()) or "none (every frame)"


# --proto names that are an IP protocol rather than an ethertype: (ethertype, protocol).
IP_PROTOCOLS = {"icmp": (0x0800, 1), "icmpv6": (0x86DD, 58), "icmp6": (0x86DD, 58)}


def parse_proto(text: str) -> tuple:
    """--proto: (ethertype, IP protocol or None). An ethertype is a name
    brtrace prints (arp, ipv4, ipv6, ...) or a number (0x88b5); icmp and
    icmpv6 name the ethertype and the protocol after it."""
    if text.lower() in IP_PROTOCOLS:
        return IP_PROTOCOLS[text.lower()]
    return parse_ethertype(text), None


def parse_ethertype(text: str) -> int:
    """An ethertype: a name brtrace prints (arp, ipv4, ...) or a number (0x88b5)."""
    names = {v: k for k, v in ETHERTYPES.items()}
    if text.lower() in names:
        return names[text.lower()]
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"unknown protocol {text!r}", "give an ethertype such as arp, ipv4, 0x88b5") from None
    if not 0 < value <= 0xFFFF:
        raise UsageError(f"ethertype {text} out of range", "an ethertype is 1..0xffff")
    return value


def check_filters(f: Filters) -> None:
    if f.mac:
        try:
            mac_filter(f.mac)
        except ValueError:
            raise UsageError(f"bad MAC {f.mac!r}", "write it as 02:00:00:00:00:01") from None
    if f.ip:
        try:
            ipaddress.ip_address(f.ip)
        except ValueError:
            raise UsageError(f"bad IP address {f.ip!r}",
                             "give an IPv4 (10.0.0.5) or IPv6 (2001:db8::5) address") from None
        if f.arp and ipaddress.ip_address(f.ip).version == 6:
            raise UsageError(f"--arp with an IPv6 address ({f.ip})",
                             "ARP is IPv4 only; IPv6 neighbour discovery is `--proto icmpv6`")
    if f.vlan is not None and not 1 <= f.vlan <= 4094:
        raise UsageError(f"VLAN {f.vlan} out of range", "a VLAN id is 1..4094")


def _port_ifindex(cfg: Config, name: Optional[str]) -> int:
    """The ifindex of a port (or the bridge) to filter on, read before compiling."""
    if not name:
        return 0
    with Topology(resolve_netns(cfg.netns)) as topo:
        bridge = topo.bridge(cfg.bridge)
    if name == bridge.name:
        return bridge.ifindex
    for ifindex, port in bridge.ports.items():
        if port.name == name:
            return ifindex
    raise UsageError(f"{name} is not a port of {cfg.bridge}",
                     f"ports: {', '.join(sorted(p.name for p in bridge.ports.values()))}")


def trace_stats(run: BridgeRun) -> dict:
    """The kernel maps' stats; the trace kind's own are events_*_trace."""
    return dict(run.maps.stats())


class Tracer:
    """Records -> steps -> output lines, journey records and pcapng blocks."""

    def __init__(self, cfg: Config, run: BridgeRun, count, out, pcap: Optional[PcapngWriter]):
        self.cfg, self.run, self.out, self.pcap, self.count = cfg, run, out, pcap, count
        self.on_event = port_event_printer(cfg, out)
        self.t0_ns = time.monotonic_ns()
        # bpf_ktime_get_ns() is CLOCK_MONOTONIC, as time.monotonic_ns() on Linux
        self.wall_offset_ns = time.time_ns() - time.monotonic_ns()
        self.fdb_ports: dict = {}
        self.journeys = Journeys(run.bridge.name, fdb_port=self.fdb_ports.get, max_journeys=count)
        self.steps = 0
        self.finished = 0
        self.bad_records = 0
        self.raw: list = []
        self.refresh_fdb()

    def refresh_fdb(self) -> None:
        run = self.run
        self.fdb_ports.clear()
        for e in run.fdb():
            if not e.local:
                self.fdb_ports[e.mac] = run.names.get(e.ifindex) or run.bridge.port_name(e.ifindex)

    # -- in the run loop (tracer/runloop.py) -----------------------------------
    def follow(self) -> Follow:
        """The traced bridge in the run loop: records become steps; after
        every look at the topology, port events are reported and the FDB
        (for verdicts) is read again."""
        return Follow(self.run, drain=self.drain, refreshed=self.refreshed)

    def refreshed(self, events: list) -> None:
        for ev in events:
            self.on_event(ev)
        self.refresh_fdb()

    def on_poll(self) -> bool:
        """After every poll: finish quiet journeys; False once --count is done."""
        self.show_journeys(self.journeys.expire(time.monotonic_ns()))
        return not (self.count is not None and self.journeys.started >= self.count and self.journeys.all_done)

    # -- per record -------------------------------------------------------------
    def drain(self) -> None:
        while self.raw:
            raw = self.raw.pop(0)
            try:
                rec = parse_trace_event(raw)
            except ValueError:
                self.bad_records += 1
                continue
            step = self.step(rec)
            journey = self.journeys.add(step)
            if journey is None:
                continue
            self.steps += 1
            step["n"] = journey.n
            self.show_step(step)
            if self.pcap is not None:
                self.capture(step)

    def step(self, rec: dict) -> dict:
        run, kernel = self.run, self.run.kernel
        ifindex = rec["ifindex"]
        s = {"step": rec["step"], "ts_ns": rec["ts_ns"], "skb": rec["skb"], "head": rec["head"],
             "ifindex": ifindex, "port": run.names.get(ifindex) or run.bridge.port_name(ifindex),
             "wire_len": rec["wire_len"], "data": rec["frame"], "vlan_tci": rec["vlan_tci"],
             "vlan_proto": rec["vlan_proto"], "cpu": rec["cpu"]}
        if rec["step"] == "freed":
            sym = kernel.kallsyms.symbolize(rec["location"])
            s.update(reason=kernel.reasons.name(rec["reason"]), function=base_function(sym.name),
                     location=sym.location)
        return s

    def rel(self, ts_ns: int) -> float:
        return (ts_ns - self.t0_ns) / 1e9

    def step_record(self, s: dict, full: bool = True) -> dict:
        rec = {"t": round(self.rel(s["ts_ns"]), 6), "step": s["step"], "port": s["port"]}
        if s["step"] == "freed":
            rec.update(reason=s["reason"], function=s["function"], location=s["location"])
        if full:
            rec = {"kind": "step", "frame": s["n"], **rec, "ts_ns": s["ts_ns"],
                   "skb": f"0x{s['skb']:x}", "cpu": s["cpu"], "wire_len": s["wire_len"]}
            rec.update(decode_frame(s["data"], s["vlan_tci"] or 0))
        return rec

    def show_step(self, s: dict) -> None:
        if self.cfg.json:
            jsonl.emit(self.step_record(s), self.out)
            return
        detail = ""
        if s["step"] == "freed":
            detail = f"{s['reason']} at {s['location']}"
        elif s["step"] in ("entered", "originated"):
            d = decode_frame(s["data"], s["vlan_tci"] or 0)
            if "src_mac" in d:
                detail = f"{d['src_mac']} > {d['dst_mac']} {d.get('proto', '')}"
                if "vlan" in d:
                    detail += f" vlan {d['vlan']}"
                if d.get("src_ip"):
                    detail += f" {d['src_ip']} > {d['dst_ip']}"
                elif d.get("arp_op"):
                    detail += f" {d['arp_op']} {d['arp_spa']} > {d['arp_tpa']}"
            detail += f" {s['wire_len']} bytes"
        print(f"{self.rel(s['ts_ns']):11.6f}  #{s['n']:<5} {s['step']:<10} {s['port']:<15} {detail}".rstrip(),
              file=self.out, flush=True)

    def capture(self, s: dict) -> None:
        data, orig = s["data"], s["wire_len"]
        if s["vlan_tci"] is not None:
            data, orig = with_vlan_tag(data, s["vlan_tci"], s["vlan_proto"]), orig + 4
        comment = f"port={s['port']} step={s['step']}"
        if s["step"] == "freed":
            comment += f" reason={s['reason']} location={s['location']}"
        comment += f" frame={s['n']}"
        if s["port"] not in self.pcap.ifaces:
            what = "bridge" if s["ifindex"] == self.run.bridge.ifindex else "port of"
            self.pcap.interface(s["port"], f"{what} {self.run.bridge.name}")
        self.pcap.packet(s["port"], s["ts_ns"] + self.wall_offset_ns, data, orig, comment,
                         STEP_DIRECTION.get(s["step"]))

    # -- per journey ------------------------------------------------------------
    def show_journeys(self, journeys: list) -> None:
        for j in journeys:
            self.finished += 1
            v = j.verdict
            if self.cfg.json:
                jsonl.emit({"kind": "journey", "frame": j.n, "bridge": self.run.bridge.name,
                            "steps": [self.step_record(s, full=False) for s in j.steps],
                            "verdict": v}, self.out)
            else:
                print(f"{'':11}  #{j.n:<5} {v['summary']} ({v['duration_us']:g} us)", file=self.out, flush=True)


def run_trace(cfg: Config, filters: Filters, count: Optional[int] = None, snaplen: int = DEFAULT_SNAPLEN,
              pcap_path: Optional[str] = None, out=None, rate: int = DEFAULT_RATE) -> int:
    """Trace until `count` journeys are complete, cfg.duration passes, or a
    signal; then print a summary. Returns the exit status."""
    out = out or sys.stdout
    if not 0 <= snaplen <= SNAP_MAX:
        raise UsageError(f"snaplen {snaplen} out of range", f"use 0..{SNAP_MAX}")
    if count is not None and count <= 0:
        raise UsageError("count must be positive", "omit it to trace until stopped")
    check_filters(filters)
    require_root()
    defines = {**filters.defines(_port_ifindex(cfg, filters.port)), "SNAPLEN": snaplen,
               "EVENTS_PER_SEC": rate}
    run = BridgeRun(cfg, ("trace",), defines)
    pcap_file = None
    try:
        with attached([run]) as life:
            if pcap_path:
                try:
                    pcap_file = open(pcap_path, "wb")
                except OSError as exc:
                    raise UsageError(f"cannot write {pcap_path}: {exc.strerror}", "pass a writable path") from exc
            pcap = PcapngWriter(pcap_file, snaplen=max(snaplen, 1) + 4) if pcap_file else None
            tracer = Tracer(cfg, run, count, out, pcap)
            run.maps.on_events(tracer.raw.append)
            if not cfg.json:
                ns = f" (netns {run.netns.name})" if run.netns.name else ""
                print(f"brtrace trace: bridge {run.bridge.name}{ns}, {len(run.bridge.ports)} ports, "
                      f"filters: {filters.text()}, snaplen {snaplen}"
                      + (f", pcapng {pcap_path}" if pcap_path else ""), file=out, flush=True)
            follow = tracer.follow()
            try:
                life.loop([follow], cfg, on_poll=tracer.on_poll, poll_cap=POLL_CAP)
            finally:
                last_pass([follow])
                tracer.show_journeys(tracer.journeys.flush())
                if pcap is not None:
                    pcap.flush()
            _summary(cfg, run, tracer, filters, pcap_path, out)
    finally:
        if pcap_file is not None:
            pcap_file.close()
    return 0


def _summary(cfg, run, tracer: Tracer, filters: Filters, pcap_path, out) -> None:
    stats = trace_stats(run)
    stats["bad_records"] = tracer.bad_records
    stats["steps_beyond_count"] = tracer.journeys.refused
    if cfg.json:
        jsonl.emit({"kind": "summary", "view": "trace", "bridge": run.bridge.name, "netns": run.netns.name,
                    "seconds": round(run.elapsed(), 3), "journeys": tracer.finished, "steps": tracer.steps,
                    "filters": filters.record(), "pcap": pcap_path,
                    "pcap_packets": tracer.pcap.packets if tracer.pcap else 0, "stats": stats}, out)
    else:
        print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}: {tracer.finished} frames traced, "
              f"{tracer.steps} steps" + (f", {tracer.pcap.packets} written to {pcap_path}" if tracer.pcap else ""),
              file=out)
        missed = stats["events_lost_trace"] + stats["events_rate_limited_trace"]
        if missed:
            print(f"(steps not recorded: {stats['events_lost_trace']} ring buffer full, "
                  f"{stats['events_rate_limited_trace']} over the rate limit; journeys may be incomplete)",
                  file=out)
    out.flush()
