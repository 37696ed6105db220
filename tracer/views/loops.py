"""`brtrace loops`: own-address echoes, MAC flapping, L2 loops and reflecting
ports, broadcast/ARP storms, frames not forwarded, on one bridge.

Needs the per-packet hooks (forward.bpf.c) besides kfree_skb and the FDB hook.
Findings print as soon as they are first seen; the summary lists them all
with per-port counters.
"""

from __future__ import annotations

import sys
import time

from tabulate import tabulate

from tracer.config import Config
from tracer.monitor import Monitor, drive
from tracer.output import jsonl
from tracer.output.table import findings_lines
from tracer.session import BridgeRun, Stopped, stop_on_signals
from tracer.views.drops import header, summary_record, warn_run

SOURCES = ("drops.bpf.c", "forward.bpf.c", "fdb.bpf.c")
PORT_COLUMNS = ("rx_packets", "tx_packets", "rx_broadcast", "rx_arp", "echoes", "returns", "reentries")


def port_records(run, monitor) -> list:
    st = monitor.bridge_state
    out = []
    for port in sorted(st.totals):
        out.append({"kind": "port", "bridge": run.bridge.name, "port": port,
                    "counters": dict(st.totals[port]),
                    "fdb_learned": st.total(port, "fdb_learned")})
    return out


def ports_table(run, monitor, width: int = 80) -> list[str]:
    st = monitor.bridge_state
    heads = ["PORT", "RX", "TX", "BCAST", "ARP", "ECHO", "BACK"]
    rows = []
    for port in sorted(st.totals, key=lambda p: (p != run.bridge.name, p)):
        t = st.totals[port]
        rows.append([port[:15], t.get("rx_packets", 0), t.get("tx_packets", 0),
                     t.get("rx_broadcast", 0) + t.get("rx_multicast", 0), t.get("rx_arp", 0),
                     t.get("echoes", 0), t.get("returns", 0) + t.get("reentries", 0)])
    return tabulate(rows, headers=heads, tablefmt="simple").splitlines()


def run_loops(cfg: Config, out=None) -> int:
    out = out or sys.stdout
    run = BridgeRun(cfg, SOURCES)
    gone = None
    seen: set = set()
    with stop_on_signals():
        try:
            with run:
                warn_run(run)
                monitor = Monitor(run)
                if not cfg.json:
                    print(header(run, "loops"), file=out, flush=True)

                def on_interval():
                    if cfg.json:
                        return
                    new = [f for f in monitor.findings() if (f.type, tuple(f.ports)) not in seen]
                    for f in new:
                        seen.add((f.type, tuple(f.ports)))
                    if new:
                        print(f"\n{time.strftime('%H:%M:%S')}  +{run.elapsed():.0f}s new findings",
                              file=out)
                        print("\n".join(findings_lines(new, cfg.width)[2:]), file=out, flush=True)

                gone = drive(cfg, run, monitor, on_interval)
                _final(cfg, run, monitor, out)
        except Stopped:
            pass
    if gone is not None:
        raise gone
    return 0


def _final(cfg, run, monitor, out):
    if run.session is not None:
        monitor.drain()
        monitor.tick()
    rows = monitor.rows()
    findings = monitor.findings(rows)
    if cfg.json:
        for rec in port_records(run, monitor):
            jsonl.emit(rec, out)
        for f in findings:
            jsonl.emit(f.record(), out)
        jsonl.emit(summary_record(run, "loops", monitor, rows, findings), out)
        return
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}", file=out)
    print("\n".join(ports_table(run, monitor, cfg.width)), file=out)
    if findings:
        print("\n".join(findings_lines(findings, cfg.width)), file=out)
    else:
        print("\nno loop, echo, flapping or storm seen", file=out)
    out.flush()
