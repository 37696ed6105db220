"""`brtrace export`: a Prometheus endpoint for one or more bridges.

Counters are read from the kernel maps at scrape time (nothing is cleared);
the run loop (tracer/runloop.py) follows each bridge's ports within 0.2 s of
a link change, logs port events on stderr, and refreshes findings every interval.
Listens on loopback unless told otherwise.
"""

from __future__ import annotations

import ipaddress
import sys
import threading

from prometheus_client import CollectorRegistry, start_http_server

from tracer.config import Config
from tracer.errors import UsageError
from tracer.monitor import Monitor
from tracer.output.prometheus import BridgeSnapshot, BrtraceCollector
from tracer.report import base_function
from tracer.fleet import Fleet, Member, serving
from tracer.runloop import Follow
from tracer.session import BridgeRun, write_ready_file
from tracer.views.base import port_event_line

GROUPS = ("drops", "ports", "fdb", "neigh")


def parse_listen(listen: str) -> tuple:
    """"127.0.0.1:9435" or "[::1]:9435" -> (host, port); UsageError otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port_n = int(port)
        if not sep or not 0 < port_n < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"--listen {listen!r} is not ADDRESS:PORT",
                         "e.g. --listen 127.0.0.1:9435 (loopback; another address is your explicit choice)") from None
    return host, port_n


def bridge_snapshot(run: BridgeRun, monitor: Monitor) -> BridgeSnapshot:
    """Fresh kernel counters for one bridge, names resolved; findings as of the
    last refresh."""
    snap = monitor.snapshot()
    groups = {}
    for (ifindex, reason, location, _eth), n in snap["drops"].items():
        port = run.names.get(ifindex) or run.bridge.port_name(ifindex)
        # Without /proc/kallsyms addresses (no CAP_SYSLOG) the name would be a
        # raw address that changes every boot: not a label.
        function = (base_function(run.kernel.kallsyms.symbolize(location).name)
                    if run.kernel.kallsyms.usable else "unknown")
        key = (port, run.kernel.reasons.name(reason), function)
        groups[key] = groups.get(key, 0) + n
    findings = [(f.type, p, f.active) for f in monitor.last_findings for p in f.ports]
    probes = {c.hook.name: c.picked is not None for c in run.kernel.choices if c.hook.name in run.hooks}
    failures: dict = {}
    for n in snap["neigh"]:
        failures[n["dev"]] = failures.get(n["dev"], 0) + n["failed"]
    return BridgeSnapshot(bridge=run.bridge.name, netns=run.netns.name, mode=run.mode or "",
                          drops=[(*k, n) for k, n in groups.items()], ports=snap["counters"],
                          findings=findings, probes=probes, stats=monitor.stats(),
                          neigh_failures=failures)


def run_export(cfg: Config, bridges: list, listen: str, out=None) -> int:
    out = out or sys.stderr
    host, port = parse_listen(listen)
    lock = threading.Lock()
    fleet = Fleet(cfg, bridges, lambda c: BridgeRun(c, GROUPS), on_up=lambda m: _follow(m.monitor, out),
                  log=lambda line: print(line, file=out, flush=True))
    with serving(fleet):
        def source():
            with lock:
                return [member_snapshot(m) for m in fleet.members]
        server = serve_metrics(source, listen, host, port, out, "export", bridges)
        try:
            if cfg.ready_file:
                write_ready_file(cfg.ready_file)
            fleet.loop(cfg.interval, cfg.duration, lock=lock)
        finally:
            server.shutdown()
    return 0


def member_snapshot(m: Member, extra=None) -> BridgeSnapshot:
    """A bridge of the fleet at scrape time: its counters while it is up;
    only `brtrace_bridge_up 0` while it is down (the old incarnation's
    counters are gone with it)."""
    if not m.up:
        return BridgeSnapshot(bridge=m.bridge, netns=m.cfg.netns or "", mode="", up=False)
    snap = bridge_snapshot(m.run, m.monitor)
    if extra is not None:
        extra(m, snap)
    return snap


def serve_metrics(source, listen: str, host: str, port: int, out, view: str, bridges: list, collectors=()):
    """Start the scrape endpoint (a thread of prometheus_client)."""
    registry = CollectorRegistry()
    registry.register(BrtraceCollector(source))
    for c in collectors:
        registry.register(c)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen}: {exc.strerror or exc}",
                         "pick a free port with --listen ADDRESS:PORT") from exc
    print(f"brtrace {view}: serving {', '.join(bridges)} on http://{listen}/metrics", file=out, flush=True)
    if not ipaddress.ip_address(host).is_loopback:
        print(f"brtrace {view}: note: {host} is not loopback; the metrics are reachable "
              "from the network", file=out, flush=True)
    return server


def _follow(monitor: Monitor, out) -> Follow:
    """One exported bridge in the run loop. Port events are logged, a line
    each on stderr naming the bridge (the journal, under systemd): as metrics
    they would need a port label that grows with every tap that ever came and
    went, and would lose the order and the detail (learned MACs flushed)."""
    bridge = monitor.run.bridge.name
    monitor.last_findings = []
    follow = monitor.follow(on_event=lambda ev: print(f"brtrace export: {bridge}: {port_event_line(ev)}",
                                                      file=out, flush=True))

    def tick():
        monitor.tick()
        monitor.last_findings = monitor.findings()
    follow.tick = tick
    return follow
