"""`brtrace drops`: frames freed on a bridge and its ports, by port, reason and
kernel location, with what each means on a bridge."""

from __future__ import annotations

import sys
import time

from tracer.aggregate import DropState
from tracer.config import Config
from tracer.decode import parse_drop_event
from tracer.errors import BridgeGone
from tracer.output import jsonl
from tracer.output.table import drops_table
from tracer.report import drop_rows, sample_record
from tracer.session import BridgeRun, Stopped, stop_on_signals

SOURCES = ("drops.bpf.c",)


def header(run: BridgeRun) -> str:
    ns = f" (netns {run.netns.name})" if run.netns.name else ""
    hooks = ", ".join(f"{c.hook.name}={c.picked.mechanism}" for c in run.kernel.choices
                      if c.picked and c.hook.name == "drops")
    return f"brtrace drops: bridge {run.bridge.name}{ns}, {len(run.bridge.ports)} ports, {hooks}"


def run_drops(cfg: Config, out=None) -> int:
    out = out or sys.stdout
    state = DropState()
    run = BridgeRun(cfg, SOURCES)
    gone: BridgeGone | None = None
    with stop_on_signals():
        try:
            with run:
                run.kernel.warn()
                for idx in run.unwatchable:
                    print(f"brtrace: warning: ifindex {idx} is too large to watch", file=sys.stderr)
                samples = []
                run.session.on_events(samples.append)
                if not cfg.json:
                    print(header(run), file=out, flush=True)
                gone = _loop(cfg, run, state, samples, out)
                _final(cfg, run, state, out)
        except Stopped:
            pass  # _loop already printed the summary on its way out
    if gone is not None:
        raise gone
    return 0


def _loop(cfg, run, state, samples, out):
    """Poll events, refresh counters and topology every interval, until the
    duration ends, a signal arrives or the bridge vanishes."""
    deadline = None if cfg.duration is None else time.monotonic() + cfg.duration
    next_tick = time.monotonic() + cfg.interval
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            wait = min(next_tick, deadline or next_tick) - now
            run.session.poll(max(1, int(wait * 1000)))
            _drain(cfg, run, state, samples, out)
            if time.monotonic() >= next_tick:
                next_tick += cfg.interval
                state.fold_counts(run.session.drop_counts(), time.monotonic())
                run.refresh()
                if not cfg.json:
                    _interval_table(cfg, run, state, out)
    except BridgeGone as exc:
        return exc
    except Stopped:
        return None


def _drain(cfg, run, state, samples, out):
    while samples:
        rec = parse_drop_event(samples.pop(0))
        state.add_sample(rec)
        if cfg.json:
            jsonl.emit(sample_record(rec, run.bridge, run.kernel.reasons, run.kernel.kallsyms,
                                     run.names), out)


def _rows(run, state):
    return drop_rows(state.groups(), run.bridge, run.fdb(), run.kernel.reasons,
                     run.kernel.kallsyms, run.names)


def _interval_table(cfg, run, state, out):
    active = [r for r in _rows(run, state) if r.rate > 0]
    if not active:
        return
    print(f"\n{time.strftime('%H:%M:%S')}  drops in the last {cfg.interval:g} s", file=out)
    print("\n".join(drops_table(active, cfg.width)), file=out, flush=True)


def _final(cfg, run, state, out):
    """The whole-run summary; printed on normal end, signal, or vanished bridge."""
    if run.session is not None:
        state.fold_counts(run.session.drop_counts(), time.monotonic())
        stats = run.session.stats()
    else:
        stats = {}
    rows = _rows(run, state)
    elapsed = run.elapsed()
    if cfg.json:
        for row in rows:
            jsonl.emit(row.record(), out)
        jsonl.emit({"kind": "summary", "view": "drops", "bridge": run.bridge.name,
                    "netns": run.netns.name, "seconds": round(elapsed, 3),
                    "drops": sum(r.count for r in rows), "stats": stats,
                    "probes": {c.hook.name: (f"{c.picked.mechanism}:{c.picked.target}" if c.picked else None)
                               for c in run.kernel.choices if c.hook.name == "drops"}}, out)
        return
    print(f"\nsummary: {elapsed:.1f} s on {run.bridge.name}, "
          f"{sum(r.count for r in rows)} frames dropped", file=out)
    print("\n".join(drops_table(rows, cfg.width, rates=False)), file=out)
    lost = stats.get("events_lost", 0) + stats.get("events_rate_limited", 0)
    if lost or stats.get("drop_keys_full"):
        print(f"(sampled records not delivered: {lost}; counts are exact"
              + (f", except {stats['drop_keys_full']} drops beyond the key table" if stats.get("drop_keys_full") else "")
              + ")", file=out)
    out.flush()
