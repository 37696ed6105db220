"""What the table/JSON bridge views share (drops, loops, neigh, top without a
terminal): a View is a few small functions; run_view() runs it through the
one lifecycle and loop (tracer/runloop.py) and prints the summary however the
run ended (duration, Ctrl-C, SIGTERM, vanished bridge)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

from tracer.config import Config
from tracer.monitor import Monitor
from tracer.output import jsonl
from tracer.runloop import attached, last_pass
from tracer.session import BridgeRun


@dataclass(frozen=True)
class View:
    name: str
    groups: tuple                                   # hook groups (tracer/hooks/)
    # Called every interval in table mode (live output).
    on_interval: Optional[Callable] = None          # (cfg, run, monitor, out)
    # Called every interval in JSON mode (records while running).
    on_interval_json: Optional[Callable] = None     # (cfg, run, monitor, out)
    # Records a JSON run ends with, before findings and the summary.
    final_records: Callable = lambda run, monitor, rows: []
    # The table-mode summary.
    final_table: Optional[Callable] = None          # (cfg, run, monitor, rows, findings, out)
    # Whether JSON streams sampled drop records while running.
    stream_samples: bool = False


def header(run: BridgeRun, view: str) -> str:
    ns = f" (netns {run.netns.name})" if run.netns.name else ""
    hooks = ", ".join(f"{c.hook.name}={c.picked.mechanism}" for c in run.kernel.choices
                      if c.picked and c.hook.name in run.hooks)
    mode = {"kprobe": ", forwarding seen by kprobes on the bridge",
            "reconstructed": ", forwarding reconstructed from the port hooks (no kprobes)"}.get(run.mode, "")
    return f"brtrace {view}: bridge {run.bridge.name}{ns}, {len(run.bridge.ports)} ports, {hooks}{mode}"


def kernel_reads(features) -> str:
    """How the raw tracepoint programs read kernel memory (tracer/kernel/kfunc.py)."""
    return "kfunc:bpf_rdonly_cast" if features.direct_reads else "helper:bpf_probe_read_kernel"


def summary_record(run, view, monitor, rows, findings) -> dict:
    return {"kind": "summary", "view": view, "bridge": run.bridge.name, "netns": run.netns.name,
            "seconds": round(run.elapsed(), 3), "drops": sum(r.count for r in rows),
            "findings": len(findings), "mode": run.mode, "stats": monitor.stats(),
            "kernel_reads": kernel_reads(run.kernel.features),
            "probes": {c.hook.name: (f"{c.picked.mechanism}:{c.picked.target}" if c.picked else None)
                       for c in run.kernel.choices if c.hook.name in run.hooks}}


def port_event_line(ev: dict) -> str:
    """One line for a port event in table mode."""
    extra = {"added": "joined the bridge", "removed": "left the bridge", "down": "went down",
             "up": "came up", "stp_state": f"STP state {ev.get('previous')} -> {ev.get('stp_state')}"}
    text = f"+{ev['at_s']:.1f}s port {ev['port']} {extra.get(ev['event'], ev['event'])}"
    if ev.get("fdb_entries_removed"):
        text += f"; {ev['fdb_entries_removed']} learned MACs flushed (the bridge floods until it relearns)"
    if ev.get("note"):
        text += f" ({ev['note']})"
    return text


def run_view(view: View, cfg: Config, out=None, defines=None) -> int:
    out = out or sys.stdout
    run = BridgeRun(cfg, view.groups, defines)
    with attached([run]) as life:
        monitor = Monitor(run)
        if not cfg.json:
            print(header(run, view.name), file=out, flush=True)
        emit = (lambda rec: jsonl.emit(rec, out)) if cfg.json and view.stream_samples else None
        follow = monitor.follow(emit, port_event_printer(cfg, out))
        each = view.on_interval_json if cfg.json else view.on_interval
        life.loop([follow], cfg, on_interval=(lambda: each(cfg, run, monitor, out)) if each else None)
        _conclude(view, cfg, follow, monitor, out)
    return 0


def port_event_printer(cfg: Config, out):
    """How a view reports port events while it runs: a JSON record, or a line."""
    if cfg.json:
        return lambda rec: jsonl.emit(rec, out)
    return lambda rec: print(port_event_line(rec), file=out, flush=True)


def _conclude(view, cfg, follow, monitor, out) -> None:
    """Last read of the kernel maps, then the summary in the chosen format."""
    last_pass([follow])
    run = follow.run
    rows = monitor.rows()
    findings = monitor.findings(rows)
    if cfg.json:
        for rec in view.final_records(run, monitor, rows):
            jsonl.emit(rec, out)
        for f in findings:
            jsonl.emit(f.record(), out)
        jsonl.emit(summary_record(run, view.name, monitor, rows, findings), out)
    elif view.final_table:
        view.final_table(cfg, run, monitor, rows, findings, out)
    out.flush()
