"""`brtrace loops`: own-address echoes, MAC flapping, L2 loops and reflecting
ports, broadcast/ARP storms, frames not forwarded, on one bridge.

Needs the port hooks (group `ports`) besides kfree_skb and the FDB hook.
Findings print as soon as they are first seen; the summary lists them all
with per-port counters.
"""

from __future__ import annotations

import time

from tabulate import tabulate

from tracer.config import Config
from tracer.output import jsonl
from tracer.output.table import findings_lines
from tracer.views.base import View, run_view


def port_records(run, monitor, rows) -> list:
    """Drop rows, then one record per port with its counters."""
    st = monitor.bridge_state
    return [r.record() for r in rows] + [
        {"kind": "port", "bridge": run.bridge.name, "port": port,
         "identity": run.labels.get(port, ""), "counters": dict(st.totals[port])}
        for port in sorted(st.totals)]


def ports_table(run, monitor) -> list[str]:
    st = monitor.bridge_state
    heads = ["PORT", "RX", "TX", "BCAST", "ARP", "ECHO", "BACK"]
    rows = []
    for port in sorted(st.totals, key=lambda p: (p != run.bridge.name, p)):
        t = st.totals[port]
        rows.append([port[:15], t.get("rx_packets", 0), t.get("tx_packets", 0),
                     t.get("rx_broadcast", 0) + t.get("rx_multicast", 0), t.get("rx_arp", 0),
                     t.get("echoes", 0), t.get("returns", 0) + t.get("reentries", 0)])
    return tabulate(rows, headers=heads, tablefmt="simple").splitlines()


class _NewFindings:
    """Prints each finding (type, ports) the first interval it shows up."""

    def __init__(self):
        self.seen: set = set()

    def __call__(self, cfg, run, monitor, out):
        new = [f for f in monitor.findings() if (f.type, tuple(f.ports)) not in self.seen]
        self.seen.update((f.type, tuple(f.ports)) for f in new)
        if new:
            print(f"\n{time.strftime('%H:%M:%S')}  +{run.elapsed():.0f}s new findings", file=out)
            print("\n".join(findings_lines(new, cfg.width)[2:]), file=out, flush=True)


def findings_now(cfg, run, monitor, out):
    """JSON mode, every interval: the verdicts as they stand, so a consumer
    (or a test) sees when a finding first appears and that it holds."""
    jsonl.emit({"kind": "findings_now", "at_s": round(run.elapsed(), 3),
                "findings": [{"type": f.type, "ports": f.ports, "verdict": f.evidence.get("kind"),
                              "culprit_ports": f.culprit_ports, "active": f.active}
                             for f in monitor.findings()]}, out)


def _table(cfg, run, monitor, rows, findings, out):
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}", file=out)
    print("\n".join(ports_table(run, monitor)), file=out)
    if findings:
        print("\n".join(findings_lines(findings, cfg.width)), file=out)
    else:
        print("\nno loop, echo, flapping or storm seen", file=out)


def run_loops(cfg: Config, out=None) -> int:
    view = View(name="loops", groups=("drops", "ports", "fdb"),
                on_interval=_NewFindings(), on_interval_json=findings_now,
                final_records=port_records, final_table=_table)
    return run_view(view, cfg, out)
