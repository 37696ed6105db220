"""`brtrace drops`: frames freed on a bridge and its ports, by port, reason and
kernel location, with what each means on a bridge; plus the findings that need
no per-packet hook (MAC flapping from the FDB hook, frames not forwarded)."""

from __future__ import annotations

import sys
import time

from tracer.config import Config
from tracer.monitor import Monitor, drive
from tracer.output import jsonl
from tracer.output.table import drops_table, findings_lines
from tracer.session import BridgeRun, Stopped, stop_on_signals

SOURCES = ("drops.bpf.c", "fdb.bpf.c")


def header(run: BridgeRun, view: str) -> str:
    ns = f" (netns {run.netns.name})" if run.netns.name else ""
    hooks = ", ".join(f"{c.hook.name}={c.picked.mechanism}" for c in run.kernel.choices
                      if c.picked and c.hook.name in run.hooks)
    mode = {"kprobe": ", forwarding seen by kprobes on the bridge",
            "raw_tracepoint": ", forwarding reconstructed from tracepoints (no kprobes)"}.get(run.mode, "")
    return f"brtrace {view}: bridge {run.bridge.name}{ns}, {len(run.bridge.ports)} ports, {hooks}{mode}"




def warn_run(run: BridgeRun) -> None:
    run.kernel.warn()
    for idx in run.unwatchable:
        print(f"brtrace: warning: ifindex {idx} is too large to watch", file=sys.stderr)
    for idx in run.unslotted:
        print(f"brtrace: warning: port ifindex {idx} has no counter slot (too many ports)", file=sys.stderr)


def run_drops(cfg: Config, out=None) -> int:
    out = out or sys.stdout
    run = BridgeRun(cfg, SOURCES)
    gone = None
    with stop_on_signals():
        try:
            with run:
                warn_run(run)
                monitor = Monitor(run)
                if not cfg.json:
                    print(header(run, "drops"), file=out, flush=True)
                emit = (lambda rec: jsonl.emit(rec, out)) if cfg.json else None
                gone = drive(cfg, run, monitor, None if cfg.json else lambda: _interval(cfg, monitor, out), emit)
                _final(cfg, run, monitor, out)
        except Stopped:
            pass
    if gone is not None:
        raise gone
    return 0


def _interval(cfg, monitor, out):
    active = [r for r in monitor.rows() if r.rate > 0]
    if not active:
        return
    print(f"\n{time.strftime('%H:%M:%S')}  drops in the last {cfg.interval:g} s", file=out)
    print("\n".join(drops_table(active, cfg.width)), file=out, flush=True)


def summary_record(run, view, monitor, rows, findings) -> dict:
    return {"kind": "summary", "view": view, "bridge": run.bridge.name, "netns": run.netns.name,
            "seconds": round(run.elapsed(), 3), "drops": sum(r.count for r in rows),
            "findings": len(findings), "mode": run.mode, "stats": monitor.stats(),
            "probes": {c.hook.name: (f"{c.picked.mechanism}:{c.picked.target}" if c.picked else None)
                       for c in run.kernel.choices if c.hook.name in run.hooks}}


def _final(cfg, run, monitor, out):
    """The whole-run summary; printed on normal end, signal, or vanished bridge."""
    if run.session is not None:
        monitor.drain()
        monitor.tick()
    rows = monitor.rows()
    findings = monitor.findings(rows)
    if cfg.json:
        for row in rows:
            jsonl.emit(row.record(), out)
        for f in findings:
            jsonl.emit(f.record(), out)
        jsonl.emit(summary_record(run, "drops", monitor, rows, findings), out)
        return
    stats = monitor.stats()
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}, "
          f"{sum(r.count for r in rows)} frames dropped", file=out)
    print("\n".join(drops_table(rows, cfg.width, rates=False)), file=out)
    if findings:
        print("\n".join(findings_lines(findings, cfg.width)), file=out)
    lost = stats.get("events_lost", 0) + stats.get("events_rate_limited", 0)
    if lost or stats.get("drop_keys_full"):
        print(f"(sampled records not delivered: {lost}; counts are exact"
              + (f", except {stats['drop_keys_full']} drops beyond the key table" if stats.get("drop_keys_full") else "")
              + ")", file=out)
    out.flush()
