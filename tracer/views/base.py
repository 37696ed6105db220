"""What every bridge view shares: attach, run until told to stop, print a
summary however the run ended (duration, Ctrl-C, SIGTERM, vanished bridge),
detach. A view supplies three small functions; this module owns the lifecycle."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable, Optional

from tracer.config import Config
from tracer.errors import BridgeGone
from tracer.monitor import Monitor, drive
from tracer.output import jsonl
from tracer.session import BridgeRun, Stopped, stop_on_signals


@dataclass(frozen=True)
class View:
    name: str
    sources: tuple
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


def warn_run(run: BridgeRun) -> None:
    run.kernel.warn()
    for idx in run.unwatchable:
        print(f"brtrace: warning: ifindex {idx} is too large to watch", file=sys.stderr)
    for idx in run.unslotted:
        print(f"brtrace: warning: port ifindex {idx} has no counter slot (too many ports)", file=sys.stderr)


def run_view(view: View, cfg: Config, out=None, defines=None) -> int:
    out = out or sys.stdout
    run = BridgeRun(cfg, view.sources, defines)
    gone = None
    with stop_on_signals():
        try:
            with run:
                warn_run(run)
                monitor = Monitor(run)
                if not cfg.json:
                    print(header(run, view.name), file=out, flush=True)
                emit = (lambda rec: jsonl.emit(rec, out)) if cfg.json and view.stream_samples else None
                on_event = ((lambda rec: jsonl.emit(rec, out)) if cfg.json
                            else (lambda rec: print(port_event_line(rec), file=out, flush=True)))
                each = view.on_interval_json if cfg.json else view.on_interval
                tick = (lambda: each(cfg, run, monitor, out)) if each else None
                gone = drive(cfg, run, monitor, tick, emit, on_event)
                _conclude(view, cfg, run, monitor, out, emit)
        except Stopped:
            pass   # a signal during start-up or the summary: nothing more to say
    if gone is not None:
        raise gone
    return 0


def _conclude(view, cfg, run, monitor, out, emit) -> None:
    """Last read of the kernel maps, then the summary in the chosen format."""
    run.maps.poll(0)      # deliver what is still in the ring buffer
    monitor.drain(emit)
    try:
        monitor.note_port_events(run.refresh())   # fresh interface counters for the summary
    except BridgeGone:
        pass                 # the summary uses the last look at the bridge
    monitor.tick()
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
