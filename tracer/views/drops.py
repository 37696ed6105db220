"""`brtrace drops`: frames freed on a bridge and its ports, by port, reason and
kernel location, with what each means on a bridge; plus the findings that need
no per-packet hook (MAC flapping from the FDB hook, frames not forwarded)."""

from __future__ import annotations

import time

from tracer.config import Config
from tracer.output.table import drops_table, findings_lines
from tracer.views.base import View, run_view


def _interval(cfg, run, monitor, out):
    active = [r for r in monitor.rows() if r.rate > 0]
    if not active:
        return
    print(f"\n{time.strftime('%H:%M:%S')}  drops in the last {cfg.interval:g} s", file=out)
    print("\n".join(drops_table(active, cfg.width)), file=out, flush=True)


def _table(cfg, run, monitor, rows, findings, out):
    stats = monitor.stats()
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}, "
          f"{sum(r.count for r in rows)} frames dropped", file=out)
    print("\n".join(drops_table(rows, cfg.width, rates=False)), file=out)
    gaps = [r for r in reconcile(run, rows) if r["unexplained"]]
    for r in gaps:
        print(f"{r['port']}: the interface counted {r['iface_rx_dropped']} rx / {r['iface_tx_dropped']} tx "
              f"drops, brtrace saw {r['brtrace_drops']} freed: {r['unexplained']} dropped where "
              "kfree_skb does not see them (driver or qdisc)", file=out)
    if findings:
        print("\n".join(findings_lines(findings, cfg.width)), file=out)
    lost = stats.get("events_lost", 0) + stats.get("events_rate_limited", 0)
    if lost or stats.get("drop_keys_full"):
        print(f"(sampled records not delivered: {lost}; counts are exact"
              + (f", except {stats['drop_keys_full']} drops beyond the key table"
                 if stats.get("drop_keys_full") else "")
              + ")", file=out)


def reconcile(run, rows) -> list:
    """Per port: what the interface itself counted as dropped during the run
    beside what brtrace saw freed. Drops that never pass kfree_skb (a driver,
    some qdiscs) show as the difference instead of silently missing."""
    seen: dict = {}
    for r in rows:
        seen[r.port] = seen.get(r.port, 0) + r.count
    out = []
    for port, (rx, tx) in sorted(run.iface_drops().items()):
        out.append({"kind": "reconcile", "bridge": run.bridge.name, "port": port,
                    "iface_rx_dropped": rx, "iface_tx_dropped": tx, "brtrace_drops": seen.get(port, 0),
                    "unexplained": max(0, rx + tx - seen.get(port, 0))})
    return out


def _final_records(run, monitor, rows):
    return [r.record() for r in rows] + reconcile(run, rows)


DROPS = View(name="drops", groups=("drops", "fdb"), on_interval=_interval,
             final_records=_final_records, final_table=_table, stream_samples=True)


def run_drops(cfg: Config, out=None) -> int:
    return run_view(DROPS, cfg, out)
