"""From aggregated drop groups to named, explained rows. Pure.

This is where ifindexes become port names, reason numbers become the running
kernel's names and addresses become function+offset. Outputs (table, JSON,
later Prometheus) render these rows and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.decode import proto_name
from tracer.explain import DropContext, explain, same_port_mac, stage_of


@dataclass(frozen=True)
class DropRow:
    bridge: str
    netns: str
    port: str
    reason: str
    function: str
    location: str
    stage: str
    proto: str             # the most common protocol in this group
    protos: dict           # protocol name -> frames
    count: int
    rate: float
    explanation: str
    same_port_mac: str = ""  # destination suppressed because it is learned on the ingress port

    def record(self) -> dict:
        """The `"kind": "drop"` JSON record."""
        return {"kind": "drop", "bridge": self.bridge, "netns": self.netns, "port": self.port,
                "reason": self.reason, "function": self.function, "location": self.location,
                "stage": self.stage, "proto": self.proto, "protos": self.protos,
                "count": self.count, "explanation": self.explanation}


def base_function(symbol: str) -> str:
    """The C function behind a symbol: `__netif_receive_skb_core.constprop.0`
    is `__netif_receive_skb_core` (the compiler's clone suffixes vary by build;
    the location keeps the exact symbol)."""
    return symbol.split(".", 1)[0]


def drop_rows(groups: list, bridge, fdb, reasons, kallsyms, names: dict, moved=None,
              fdb_at=None) -> list:
    """Rows for `groups`. `names` maps ifindexes of ports that have since left
    the bridge to their last known name. `moved` (MACs that moved during the
    run, see DropContext) and `fdb_at` (when `fdb` was read) let explanations
    say when the FDB they rest on may be stale."""
    rows = []
    for g in groups:
        sym = kallsyms.symbolize(g.location)
        function = base_function(sym.name)
        reason = reasons.name(g.reason)
        ctx = DropContext(group=g, reason=reason, function=function, bridge=bridge, fdb=fdb,
                          moved=moved or {}, fdb_at=fdb_at)
        port = names.get(g.ifindex) or bridge.port_name(g.ifindex)
        protos = {}
        for ethertype, n in g.by_ethertype.most_common():
            name = proto_name(ethertype)
            protos[name] = protos.get(name, 0) + n
        rows.append(DropRow(
            bridge=bridge.name, netns=bridge.netns.name, port=port, reason=reason,
            function=function, location=sym.location, stage=stage_of(function),
            proto=next(iter(protos), ""), protos=protos, count=g.count, rate=g.rate,
            explanation=explain(ctx), same_port_mac=same_port_mac(ctx)))
    return rows


def sample_record(rec: dict, bridge, reasons, kallsyms, names: dict) -> dict:
    """A `"kind": "drop_sample"` JSON record for one sampled frame."""
    sym = kallsyms.symbolize(rec["location"])
    out = {"kind": "drop_sample", "bridge": bridge.name,
           "port": names.get(rec["ifindex"]) or bridge.port_name(rec["ifindex"]),
           "reason": reasons.name(rec["reason"]), "function": base_function(sym.name),
           "location": sym.location}
    out.update({k: v for k, v in rec.items() if k not in ("kind", "ifindex", "reason", "location")})
    return out
