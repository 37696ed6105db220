"""`brtrace neigh`: ARP on the wire per port (requests, replies, gratuitous,
unanswered targets, conflicts) and the kernel's neighbour state machine
(INCOMPLETE -> FAILED, REACHABLE/STALE churn, address changes)."""

from __future__ import annotations

from dataclasses import replace

from tabulate import tabulate

from tracer.config import Config
from tracer.output.table import findings_lines
from tracer.views.base import View, run_view
from tracer.views.loops import _NewFindings

GROUPS = ("drops", "ports", "fdb", "neigh")
TOP_TARGETS = 5


def arp_records(run, monitor, rows) -> list:
    """One `arp` record per port, then the neighbour entries seen changing."""
    st = monitor.bridge_state
    unanswered: dict = {}
    for t in st.arp:
        if t["requests"] and not t["replies"] and t.get("asker"):
            unanswered.setdefault(t["asker"], []).append((t["requests"], t["ip"]))
    out = [r.record() for r in rows]
    for port in sorted(st.totals):
        c = st.totals[port]
        top = sorted(unanswered.get(port, []), reverse=True)[:TOP_TARGETS]
        out.append({"kind": "arp", "bridge": run.bridge.name, "port": port,
                    "arp": c.get("rx_arp", 0), "requests": c.get("arp_requests", 0),
                    "replies": c.get("arp_replies", 0), "gratuitous": c.get("arp_gratuitous", 0),
                    "unanswered": [{"ip": ip, "requests": n} for n, ip in top]})
    for n in st.neigh:
        out.append({"kind": "neigh", "bridge": run.bridge.name, **n})
    return out


def _table(cfg, run, monitor, rows, findings, out):
    recs = arp_records(run, monitor, [])
    arp = [[r["port"][:15], r["requests"], r["replies"], r["gratuitous"],
            ", ".join(f"{u['ip']}x{u['requests']}" for u in r["unanswered"])[:30]]
           for r in recs if r["kind"] == "arp"]
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}", file=out)
    print("\n".join(tabulate(arp, headers=["PORT", "REQ", "REPLY", "GARP", "UNANSWERED"],
                             tablefmt="simple").splitlines()), file=out)
    neigh = [[n["dev"][:20], n["ip"], n["state"], n["failed"], n["reachable"] + n["stale"],
              n["lladdr_changes"]] for n in monitor.bridge_state.neigh]
    if neigh:
        print("", file=out)
        print("\n".join(tabulate(neigh, headers=["DEVICE", "IP", "STATE", "FAILED", "FLIPS", "MAC CHANGES"],
                                 tablefmt="simple").splitlines()), file=out)
    print("\n".join(findings_lines(findings, cfg.width)) if findings else "\nno neighbour problem seen",
          file=out)


def run_neigh(cfg: Config, all_netns: bool = False, out=None) -> int:
    view = View(name="neigh", groups=GROUPS, on_interval=_NewFindings(),
                final_records=arp_records, final_table=_table)
    flag = 1 if all_netns else 0
    return run_view(view, replace(cfg), out, defines={"ALL_NETNS": flag, "NEIGH_DROPS": flag})
