"""What tracing a busy bridge costs: `scripts/bench` (python -m bench).

Developer tooling beside the package (pyproject.toml does not ship it):

* bench.run: the run itself (lab, senders, windows, tracers), arguments, main;
* bench.stats: views and workloads as data, results, the table (pure);
* bench.procfs: /proc and bpftool readers;
* bench.floor + floor.bpf.c: the counting-only floor program, run as a child.

See bench.run's docstring for how a run is laid out.  The names below are
importable from ``bench`` itself (the unit tests use them).
"""

from bench.floor import FLOOR_SRC, floor_cflags, floor_child, parse_tcx_spec
from bench.procfs import (CLK_TCK, bpf_objects, bpf_objects_from_fdinfo, bpftool_json, cpu_seconds,
                          cpu_ticks_by_pid, foreign_tracing_progs, map_bytes_bpftool, other_cpu_seconds,
                          parse_fdinfo, parse_stat_cpu_ticks, parse_stat_is_kthread, parse_vmhwm_kb,
                          vmhwm_kb)
from bench.run import BRTRACE, PREFIX, Bench, Senders, Tracer, brtrace_argv, main, parse_args
from bench.stats import (ARP_PAD_OFFSET, LAB_SEQ_OFFSET, VIEWS, WORKLOADS, Frames, ViewSpec, busy, cv_pct,
                         floor_name, last_summary, legend, mean, neighbours, parse_metrics,
                         parse_sender_output, ratio, ratio_se, render_sweep, render_table, summarize,
                         summary_tracepoints, sweep_rows, with_port_hooks, workload_frames)
from lab.traffic import SENDER_C, SENDER_PY

__all__ = [
    "ARP_PAD_OFFSET", "BRTRACE", "Bench", "CLK_TCK", "FLOOR_SRC", "Frames", "LAB_SEQ_OFFSET", "PREFIX",
    "SENDER_C", "SENDER_PY", "Senders", "Tracer", "VIEWS", "ViewSpec", "WORKLOADS", "bpf_objects",
    "bpf_objects_from_fdinfo", "bpftool_json", "brtrace_argv", "busy", "cpu_seconds", "cpu_ticks_by_pid",
    "cv_pct", "floor_cflags", "floor_child", "floor_name", "foreign_tracing_progs", "last_summary",
    "legend", "main", "map_bytes_bpftool", "mean", "neighbours", "other_cpu_seconds", "parse_args",
    "parse_fdinfo", "parse_metrics", "parse_sender_output", "parse_stat_cpu_ticks",
    "parse_stat_is_kthread", "parse_tcx_spec", "parse_vmhwm_kb", "ratio", "ratio_se", "render_sweep",
    "render_table", "summarize", "summary_tracepoints", "sweep_rows", "vmhwm_kb", "with_port_hooks",
    "workload_frames",
]
