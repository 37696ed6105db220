"""`brtrace neigh`: ARP and IPv6 neighbour discovery on the wire per port
(requests/solicitations, replies/advertisements, gratuitous ARP, DAD, router
advertisements, unanswered targets, conflicts) and the kernel's neighbour state machine
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


def _unanswered(targets, asked: str, answered: str) -> dict:
    """port -> [(questions, address)] of the addresses asked for from that
    port (latest asker) and never answered, most asked first."""
    out: dict = {}
    for t in targets:
        if t[asked] and not t[answered] and t.get("asker"):
            out.setdefault(t["asker"], []).append((t[asked], t["ip"]))
    return {port: sorted(v, reverse=True)[:TOP_TARGETS] for port, v in out.items()}


def arp_records(run, monitor, rows) -> list:
    """One `arp` and one `ndp` record per port, then the neighbour entries
    seen changing."""
    st = monitor.bridge_state
    unanswered = _unanswered(st.arp, "requests", "replies")
    unsolicited = _unanswered(st.ndp, "solicits", "adverts")
    out = [r.record() for r in rows]
    for port in sorted(st.totals):
        c = st.totals[port]
        out.append({"kind": "arp", "bridge": run.bridge.name, "port": port,
                    "arp": c.get("rx_arp", 0), "requests": c.get("arp_requests", 0),
                    "replies": c.get("arp_replies", 0), "gratuitous": c.get("arp_gratuitous", 0),
                    "unanswered": [{"ip": ip, "requests": n} for n, ip in unanswered.get(port, [])]})
    for port in sorted(st.totals):
        c = st.totals[port]
        out.append({"kind": "ndp", "bridge": run.bridge.name, "port": port,
                    "solicitations": c.get("ndp_ns", 0), "dad": c.get("ndp_dad", 0),
                    "advertisements": c.get("ndp_na", 0), "router_solicitations": c.get("ndp_rs", 0),
                    "router_advertisements": c.get("ndp_ra", 0),
                    "unanswered": [{"ip": ip, "solicitations": n} for n, ip in unsolicited.get(port, [])]})
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
    ndp = [[r["port"][:15], r["solicitations"], r["dad"], r["advertisements"], r["router_advertisements"],
            ", ".join(f"{u['ip']}x{u['solicitations']}" for u in r["unanswered"])[:30]]
           for r in recs if r["kind"] == "ndp"]
    if any(any(row[1:5]) for row in ndp):       # IPv6 neighbour discovery seen at all
        print("", file=out)
        print("\n".join(tabulate(ndp, headers=["PORT", "NS", "DAD", "NA", "RA", "UNANSWERED"],
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
