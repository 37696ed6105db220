"""What tracing a busy bridge costs: `scripts/bench`.

One run builds a lab bridge with two hosts in namespaces of its own (prefix
``brtb``), then measures, in alternating windows, how many frames per second
the bridge delivers untraced and with each view attached::

    per round, per workload:  U  T(drops)  U  T(floor drops)  U  T(loops)  U  T(floor loops)  U

U is an untraced window; T a traced one, for which the tracer is started,
waited for (its ready file), measured for one window and stopped with SIGTERM
(its JSON summary then gives events lost).  The *floor* of a view is the
cheapest BPF program imaginable on the same raw tracepoints: it only
increments a per-CPU array.  The gap between the floor's ratio and the view's
is what brtrace's own BPF code costs; the floor's gap to 1.0 is the price of
having a program on those tracepoints at all.

Workloads (sent from host 1 by compiled sendmmsg() senders, or Python ones if
there is no C compiler; each bounded in frames and in seconds):

* unicast: frames to host 2's MAC (an ethertype nothing handles, so host 2's
  stack frees each one: a kfree_skb per frame, outside the traced namespace);
* broadcast: ARP who-has requests nobody answers, distinct in their padding
  (--distinct) so that the loops view's flood fingerprints see new frames.

Delivered pps is the delta of host 2's eth0 rx_packets over the window.

Run as root: python -m tracer.bench [--window S] [--rounds N] [--views drops,loops]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tracer import lab as labmod
from tracer.kernel.bpfsys import enable_stats
from tracer.kernel.btf import Btf
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.tcx import DIRECTIONS, TcxLinks, attach_types
from tracer.lab import ETH_P_LAB, Lab, LabError, arp_request, ether

PREFIX = "brtb"
REPO = Path(__file__).resolve().parents[1]
BRTRACE = REPO / ".venv" / "bin" / "brtrace"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Sampling: senders run WARMUP + window + TAIL seconds; the window is measured
# in their middle, so start-up and wind-down of the senders are not in it.
WARMUP = 0.3
TAIL = 0.3
SETTLE = 0.3           # after the tracer says ready, before traffic starts
READY_TIMEOUT = 90.0
MAX_PPS = 20_000_000   # frame bound per sender: far above what veths reach


# --------------------------------------------------------------------------
# views and workloads: data, so new views are one line
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewSpec:
    """How to run one brtrace view under the bench.

    floor_tracepoints is used when the view's JSON summary does not say which
    raw tracepoints it attached (its `probes`).  json=False for views without
    `-o json` (no summary); metrics=True for views serving Prometheus metrics
    on the loopback address in extra_args ("{port}": a free port), which then
    give events lost instead of the summary."""
    name: str
    floor_tracepoints: tuple
    extra_args: tuple = ()
    json: bool = True
    metrics: bool = False


_FORWARD_TPS = ("kfree_skb", "br_fdb_update", "netif_receive_skb", "net_dev_queue")
_NEIGH_TPS = ("neigh_update_done", "neigh_timer_handler", "neigh_event_send_done",
              "neigh_event_send_dead")

VIEWS: Dict[str, ViewSpec] = {
    "drops": ViewSpec("drops", ("kfree_skb", "br_fdb_update")),
    "loops": ViewSpec("loops", _FORWARD_TPS),
    # Run only where this brtrace has them (`brtrace VIEW --help` works).
    "top": ViewSpec("top", _FORWARD_TPS),
    "neigh": ViewSpec("neigh", _FORWARD_TPS + _NEIGH_TPS),
    "export": ViewSpec("export", _FORWARD_TPS + _NEIGH_TPS, ("--listen", "127.0.0.1:{port}"),
                       json=False, metrics=True),
}

WORKLOADS = ("unicast", "broadcast")

# Bytes 42.. of a 60-byte ARP frame are padding: receivers ignore them, but the
# loops view's flood fingerprint (first 64 bytes) sees each value as a new frame.
ARP_PAD_OFFSET = 42
LAB_SEQ_OFFSET = 14   # first payload byte of an ETH_P_LAB frame


@dataclass(frozen=True)
class Frames:
    """What a sender sends: a template, and where a per-frame counter goes.

    Frame i carries base + (i % distinct) as a big-endian u32 at `offset`
    (distinct <= 1: the template unchanged)."""
    template: bytes
    offset: int = 0
    distinct: int = 1

    def frame(self, i: int) -> bytes:
        """Frame number i, as the C sender builds it (for tests and the Python sender)."""
        if self.distinct <= 1:
            return self.template
        base = int.from_bytes(self.template[self.offset:self.offset + 4], "big")
        value = (base + i % self.distinct) & 0xFFFFFFFF
        return self.template[:self.offset] + value.to_bytes(4, "big") + self.template[self.offset + 4:]


def workload_frames(name: str, src_mac: str, src_ip: str, dst_mac: str, distinct: int) -> Frames:
    """The frames of one workload, from host 1 (src) to host 2 (dst)."""
    if name == "unicast":
        return Frames(ether(dst_mac, src_mac, ETH_P_LAB, b"\x00" * 4 + b"brtb-bench"))
    if name == "broadcast":
        # who-has .200 (nobody) tell host 1: one broadcast each, never answered.
        target = src_ip.rsplit(".", 1)[0] + ".200"
        return Frames(arp_request(src_mac, src_ip, target), ARP_PAD_OFFSET, max(1, distinct))
    raise ValueError(f"unknown workload {name!r}")


# --------------------------------------------------------------------------
# pure computations: results from windows, and the table
# --------------------------------------------------------------------------

def mean(values: Sequence[float]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def cv_pct(values: Sequence[float]) -> Optional[float]:
    """Coefficient of variation in percent (population); None below two values."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    if m == 0:
        return None
    return 100.0 * math.sqrt(sum((v - m) ** 2 for v in values) / len(values)) / m


def ratio(traced: Optional[float], untraced: Optional[float]) -> Optional[float]:
    """traced / untraced, None when either is unknown or untraced is 0."""
    if traced is None or not untraced:
        return None
    return traced / untraced


def floor_name(view: str) -> str:
    return f"floor:{view}"


BUSY_OTHER_CPU_PCT = 25.0


def neighbours(windows: Sequence[dict], traced: Sequence[dict]) -> List[dict]:
    """The untraced windows right before and after each traced one (same round
    and workload, by `seq`): the baseline that shares the machine's state at
    the time.  Without `seq` (or neighbours), every untraced window of the
    workload."""
    by_seq = {w["seq"]: w for w in windows if "seq" in w}
    out: Dict[int, dict] = {}
    for t in traced:
        for s in (t.get("seq", -10) - 1, t.get("seq", -10) + 1):
            n = by_seq.get(s)
            if n is not None and n["config"] is None and n["workload"] == t["workload"] \
                    and n.get("round") == t.get("round"):
                out[s] = n
    if out:
        return [out[k] for k in sorted(out)]
    wls = {t["workload"] for t in traced}
    return [w for w in windows if w["config"] is None and w["workload"] in wls]


def ratio_se(windows: Sequence[dict], traced: Sequence[dict]) -> Optional[float]:
    """Standard error of the ratio: the spread of the per-window ratios (each
    traced window against its own neighbours), over the square root of their
    number. None below two traced windows with neighbours. It says how far
    apart two ratios must be to differ: with a baseline that moves 5-9%
    between windows, a few rounds resolve a few points, not one."""
    per = []
    for t in traced:
        base = neighbours(windows, [t]) if "seq" in t else []
        u = mean([w["pps"] for w in base])
        if u:
            per.append(t["pps"] / u)
    if len(per) < 2:
        return None
    m = sum(per) / len(per)
    return math.sqrt(sum((x - m) ** 2 for x in per) / (len(per) - 1) / len(per))


def busy(w: dict) -> bool:
    """Did this window share the machine with someone else's tracing BPF
    programs, or with other processes using a quarter of a core?"""
    return bool(w.get("foreign_progs")) or (w.get("other_cpu_pct") or 0) > BUSY_OTHER_CPU_PCT


def _pct_of_core(ws: Sequence[dict], key: str, scale: float = 1.0) -> Optional[float]:
    return mean([100.0 * w[key] * scale / w["seconds"] for w in ws
                 if w.get(key) is not None and w["seconds"] > 0])


def summarize(windows: Sequence[dict], blocks: Sequence[dict], views: Sequence[str],
              workloads: Sequence[str]) -> List[dict]:
    """One result per (view, workload) from the raw window and block records.

    A window record has: seq, round, workload, config (None for untraced,
    "drops", "floor:drops", ...), pps, seconds, rx, sent, tracer_cpu_s and
    optional extras (floor_hits, bpf_ns, bpf_runs, foreign_progs,
    other_cpu_pct).  A block record (one tracer start) has: config, workload,
    ready_s, vmhwm_kb, map_bytes, events_lost, events_rate_limited, error.

    ratio = mean traced pps / mean pps of the untraced windows adjacent to
    them; the floor's ratio likewise against its own neighbours.
    """
    results = []
    for view in views:
        for wl in workloads:
            untraced = [w["pps"] for w in windows if w["workload"] == wl and w["config"] is None]
            traced = [w for w in windows if w["workload"] == wl and w["config"] == view]
            floor = [w for w in windows if w["workload"] == wl and w["config"] == floor_name(view)]
            base = neighbours(windows, traced) if traced else []
            fbase = neighbours(windows, floor) if floor else []
            vb = [b for b in blocks if b["workload"] == wl and b["config"] == view]
            fb = [b for b in blocks if b["workload"] == wl and b["config"] == floor_name(view)]
            u = mean([w["pps"] for w in base]) if base else mean(untraced)
            t = mean([w["pps"] for w in traced])
            f = mean([w["pps"] for w in floor])
            lost = [b.get("events_lost") for b in vb]
            limited = [b.get("events_rate_limited") for b in vb]
            involved = {id(w): w for w in list(traced) + list(floor) + base + fbase}.values()
            # the floor counts during the senders' whole run: per frame *sent*
            hooks = [w["floor_hits"] / w["sent"] for w in floor
                     if w.get("floor_hits") is not None and w.get("sent")]
            results.append({
                "view": view, "workload": wl,
                "untraced_pps": u, "untraced_cv_pct": cv_pct(untraced),
                "traced_pps": t, "ratio": ratio(t, u), "ratio_se": ratio_se(windows, traced),
                "floor_pps": f, "floor_ratio": ratio(f, mean([w["pps"] for w in fbase]) if fbase else u),
                "floor_ratio_se": ratio_se(windows, floor),
                "cpu_pct": _pct_of_core(traced, "tracer_cpu_s"),
                "floor_cpu_pct": _pct_of_core(floor, "tracer_cpu_s"),
                "rss_kb": max([b["vmhwm_kb"] for b in vb if b.get("vmhwm_kb") is not None], default=None),
                "map_bytes": max([b["map_bytes"] for b in vb if b.get("map_bytes") is not None], default=None),
                "floor_map_bytes": max([b["map_bytes"] for b in fb if b.get("map_bytes") is not None],
                                       default=None),
                "events_lost": sum(lost) if lost and None not in lost else None,
                "events_rate_limited": sum(limited) if limited and None not in limited else None,
                "ready_s": mean([b.get("ready_s") for b in vb]),
                "floor_ready_s": mean([b.get("ready_s") for b in fb]),
                "hooks_per_pkt": mean(hooks),
                "bpf_ns_per_run": mean([w["bpf_ns"] / w["bpf_runs"] for w in traced if w.get("bpf_runs")]),
                "bpf_runs_per_pkt": mean([w["bpf_runs"] / w["rx"] for w in traced
                                          if w.get("bpf_runs") is not None and w.get("rx")]),
                "bpf_cpu_pct": _pct_of_core(traced, "bpf_ns", 1e-9),
                "floor_bpf_ns_per_run": mean([w["bpf_ns"] / w["bpf_runs"] for w in floor if w.get("bpf_runs")]),
                "windows": len(traced), "untraced_windows": len(base),
                "busy_windows": sum(1 for w in involved if busy(w)), "involved_windows": len(involved),
                "errors": [b["error"] for b in vb + fb if b.get("error")],
            })
    return results


def _fmt(value, spec: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


COLUMNS = (
    # header, result key, format, scale
    ("view", "view", "s", 1),
    ("workload", "workload", "s", 1),
    ("untraced kpps", "untraced_pps", ".0f", 1e-3),
    ("cv%", "untraced_cv_pct", ".1f", 1),
    ("traced kpps", "traced_pps", ".0f", 1e-3),
    ("ratio", "ratio", ".3f", 1),
    ("±", "ratio_se", ".3f", 1),
    ("floor ratio", "floor_ratio", ".3f", 1),
    ("±", "floor_ratio_se", ".3f", 1),
    ("cpu%", "cpu_pct", ".1f", 1),
    ("rss MiB", "rss_kb", ".1f", 1 / 1024),
    ("maps KiB", "map_bytes", ".0f", 1 / 1024),
    ("lost", "events_lost", "d", 1),
    ("limited", "events_rate_limited", "d", 1),
    ("ready s", "ready_s", ".2f", 1),
    ("hooks/pkt", "hooks_per_pkt", ".2f", 1),
    ("busy", "busy", "s", 1),
)
BPF_COLUMNS = (
    ("bpf ns/run", "bpf_ns_per_run", ".0f", 1),
    ("floor ns/run", "floor_bpf_ns_per_run", ".0f", 1),
    ("runs/pkt", "bpf_runs_per_pkt", ".2f", 1),
    ("bpf cpu%", "bpf_cpu_pct", ".1f", 1),
)


def render_table(results: Sequence[dict], bpf_stats: bool = False) -> List[str]:
    """Fixed-width text table, one line per (view, workload)."""
    cols = COLUMNS + (BPF_COLUMNS if bpf_stats else ())
    rows = [[h for h, _, _, _ in cols]]
    for r in results:
        row = []
        for _, key, spec, scale in cols:
            v = r.get(key)
            if key == "busy":
                row.append("%s/%s" % (r.get("busy_windows", "-"), r.get("involved_windows", "-")))
            elif spec == "s":
                row.append(str(v))
            elif spec == "d":
                row.append("-" if v is None else str(int(v)))
            else:
                row.append(_fmt(v, spec, scale))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def sweep_rows(windows: Sequence[dict]) -> List[dict]:
    """The CPU sweep's windows (config "sweep:VIEW") as rows: view, rate asked
    (0: unlimited), delivered pps and brtrace's CPU in % of one core."""
    rows = []
    for w in windows:
        cfg = w.get("config") or ""
        if cfg.startswith("sweep:") and w.get("tracer_cpu_s") is not None and w["seconds"] > 0:
            rows.append({"view": cfg[6:], "rate": w.get("rate", 0), "pps": w["pps"],
                         "cpu_pct": 100.0 * w["tracer_cpu_s"] / w["seconds"]})
    return rows


def render_sweep(rows: Sequence[dict]) -> List[str]:
    """One line per view: CPU% at each delivered rate, and the spread (max - min
    in points): flat means the spread stays within the clock-tick resolution."""
    lines = []
    for view in dict.fromkeys(r["view"] for r in rows):
        mine = sorted((r for r in rows if r["view"] == view), key=lambda r: r["pps"])
        cells = ", ".join("%.0f kpps %.1f%%" % (r["pps"] / 1e3, r["cpu_pct"]) for r in mine)
        spread = max(r["cpu_pct"] for r in mine) - min(r["cpu_pct"] for r in mine)
        lines.append(f"cpu sweep {view}: {cells} (spread {spread:.1f} points)")
    return lines


def legend(results: Sequence[dict]) -> List[str]:
    return [
        "ratio: traced / untraced delivered pps (untraced: the windows just before and after each",
        "  traced one; 1.0 = free); floor ratio: the same for a BPF program that only counts, on",
        "  the tracepoints the view uses; ±: standard error of the ratio from its windows (two",
        "  ratios closer than about twice that do not differ); cv%: spread of all untraced",
        "  windows of the workload;",
        "  cpu%: brtrace's own CPU (user+sys) as % of one core, in the window, on the CPUs the",
        "  pinned senders leave (its BPF programs run in softirq context and are billed to the",
        "  senders, see --bpf-stats);",
        "  rss: peak (VmHWM); maps: memlock bytes of its BPF maps; lost/limited: events the summary",
        "  says were lost (ring full) / rate-limited; ready: start to attached (compile + load);",
        "  hooks/pkt: tracepoint hits per frame sent (counted by the floor); busy: windows of the row",
        "  run beside someone else's tracing BPF programs or >25% of a core of other processes.",
    ]


# --------------------------------------------------------------------------
# /proc readers (pure parsers + thin readers)
# --------------------------------------------------------------------------

def parse_stat_cpu_ticks(stat: str) -> int:
    """utime + stime (clock ticks) from a /proc/PID/stat line."""
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])   # fields 14 and 15


def parse_stat_is_kthread(stat: str) -> bool:
    rest = stat[stat.rindex(")") + 2:].split()
    return bool(int(rest[6]) & 0x00200000)   # field 9 flags: PF_KTHREAD


def parse_vmhwm_kb(status: str) -> Optional[int]:
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def parse_fdinfo(text: str) -> Dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def cpu_seconds(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return parse_stat_cpu_ticks(f.read()) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def vmhwm_kb(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            return parse_vmhwm_kb(f.read())
    except OSError:
        return None


def bpf_objects_from_fdinfo(texts: Sequence[str]) -> Dict[str, list]:
    """The BPF maps and programs among these fdinfo texts.

    {"maps": [{"id", "type", "memlock"}], "progs": [{"id", "run_time_ns", "run_cnt"}]},
    each deduplicated by id (bcc may hold one twice; a bpf_link's fdinfo names
    its program too, without the counters)."""
    maps, progs = {}, {}
    for text in texts:
        info = parse_fdinfo(text)
        if "map_id" in info and "map_type" in info:
            maps[int(info["map_id"])] = {"id": int(info["map_id"]), "type": int(info["map_type"]),
                                         "memlock": int(info.get("memlock", 0))}
        elif "prog_id" in info and "prog_type" in info:
            progs[int(info["prog_id"])] = {"id": int(info["prog_id"]),
                                           "run_time_ns": int(info.get("run_time_ns", 0)),
                                           "run_cnt": int(info.get("run_cnt", 0))}
    return {"maps": list(maps.values()), "progs": list(progs.values())}


def bpf_objects(pid: int) -> Dict[str, list]:
    """The BPF maps and programs PID holds, from /proc/PID/fdinfo."""
    texts = []
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        fds = []
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                texts.append(f.read())
        except OSError:
            continue
    return bpf_objects_from_fdinfo(texts)


def bpftool_json(*args: str):
    """`bpftool -j ARGS` parsed, or None (no bpftool, or it failed)."""
    if not shutil.which("bpftool"):
        return None
    try:
        return json.loads(labmod.run(["bpftool", "-j", *args], timeout=20).stdout)
    except (LabError, ValueError):
        return None


def map_bytes_bpftool(prog_ids: Sequence[int]) -> Optional[int]:
    """Cross-check through bpftool: bytes_memlock of the maps these programs use
    (`prog show` -> map_ids -> `map show`)."""
    progs, maps = bpftool_json("prog", "show"), bpftool_json("map", "show")
    if progs is None or maps is None:
        return None
    ids = {m for p in progs if p.get("id") in set(prog_ids) for m in p.get("map_ids", [])}
    return sum(m.get("bytes_memlock", 0) for m in maps if m.get("id") in ids) if ids else None


TRACING_PROG_TYPES = {"kprobe", "tracepoint", "raw_tracepoint", "tracing", "perf_event"}


def foreign_tracing_progs(progs: Optional[list], ours: set) -> Optional[List[str]]:
    """Names of tracing BPF programs loaded by someone else (from `bpftool prog
    show` output): on a shared machine they tax every frame, traced or not."""
    if progs is None:
        return None
    return sorted(p.get("name", "?") for p in progs
                  if p.get("type") in TRACING_PROG_TYPES and p.get("id") not in ours)


def cpu_ticks_by_pid(exclude: set) -> Dict[int, int]:
    """utime+stime ticks of every user process not in `exclude` (kernel threads
    left out: softirq work our traffic causes may run in ksoftirqd)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            if not parse_stat_is_kthread(stat):
                out[int(name)] = parse_stat_cpu_ticks(stat)
        except (OSError, ValueError, IndexError):
            continue
    return out


def other_cpu_seconds(before: Dict[int, int], after: Dict[int, int]) -> float:
    """CPU seconds used between two cpu_ticks_by_pid() scans by the processes
    present in both (a process that came or went in between is not counted)."""
    return sum(max(0, after[p] - before[p]) for p in after if p in before) / CLK_TCK


# --------------------------------------------------------------------------
# BPF run-time statistics (opt-in: they cost two clock reads per program run)
# --------------------------------------------------------------------------

def enable_bpf_stats() -> int:
    """Hold the kernel's BPF run-time statistics on (run_time_ns/run_cnt in
    fdinfo) until the returned fd is closed: scoped, unlike the sysctl."""
    return enable_stats()


# --------------------------------------------------------------------------
# the floor: a counting-only BPF program (run as a child: python -m tracer.bench --floor-child)
# --------------------------------------------------------------------------

def floor_source(tracepoints: Sequence[str], tcx: bool = False) -> str:
    """C text: each raw tracepoint increments its own slot of a per-CPU array;
    with tcx, two sched_cls programs (floor_ingress, floor_egress) the next two."""
    slots = len(tracepoints) + (2 if tcx else 0)
    body = ["BPF_PERCPU_ARRAY(hits, u64, %d);" % max(1, slots)]
    for i, tp in enumerate(tracepoints):
        if not tp.replace("_", "").isalnum():
            raise ValueError(f"bad tracepoint name {tp!r}")
        body.append("RAW_TRACEPOINT_PROBE(%s)\n{\n\tint k = %d;\n\tu64 *v = hits.lookup(&k);\n"
                    "\tif (v)\n\t\t*v += 1;\n\treturn 0;\n}" % (tp, i))
    if tcx:
        for i, d in enumerate(("ingress", "egress"), start=len(tracepoints)):
            body.append("int floor_%s(struct __sk_buff *skb)\n{\n\tint k = %d;\n\tu64 *v = "
                        "hits.lookup(&k);\n\tif (v)\n\t\t*v += 1;\n\treturn -1; /* TCX_NEXT */\n}"
                        % (d, i))
    return "\n".join(body) + "\n"


def parse_tcx_spec(spec: Optional[str]) -> Optional[tuple]:
    """"NETNS_PATH:IFINDEX,IFINDEX" -> (path, [ifindex, ...]); None for none."""
    if not spec:
        return None
    path, _, ifindexes = spec.rpartition(":")
    return path, [int(i) for i in ifindexes.split(",") if i]


def floor_child(tracepoints: List[str], ready_file: str, hold: float, tcx_spec: Optional[str] = None) -> int:
    """Load the floor program, write READY_FILE, wait for SIGTERM (or `hold`
    seconds), print {"hits": {hook: n}} and detach. With tcx_spec, its two tc
    programs are linked to those devices like brtrace's port programs."""
    headers, _note = bcc_kernel_source()
    if headers is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)
    import bcc  # noqa: PLC0415 - only this child loads BPF

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    tcx = parse_tcx_spec(tcx_spec)
    tracepoints = [tp for tp in tracepoints if tp]
    b = bcc.BPF(text=floor_source(tracepoints, tcx=tcx is not None))
    links = None
    hooks = list(tracepoints)
    try:
        if tcx is not None:
            with Btf() as btf:
                types = attach_types(btf)
            fds = {d: b.load_func(f"floor_{d}", bcc.BPF.SCHED_CLS).fd for d in DIRECTIONS}
            links = TcxLinks(fds, types, tcx[0])
            links.sync(tcx[1])
            hooks += [f"tcx_{d}" for d in DIRECTIONS]
        with open(ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
        end = time.monotonic() + hold
        while not stop and time.monotonic() < end:
            time.sleep(0.05)
        table = b["hits"]
        hits = {hook: sum(table[ctypes.c_int(i)]) for i, hook in enumerate(hooks)}
        print(json.dumps({"kind": "floor", "hits": hits}), flush=True)
    finally:
        if links is not None:
            links.close()
        b.cleanup()
    return 0


# --------------------------------------------------------------------------
# senders
# --------------------------------------------------------------------------

SENDER_C = r"""
/* brtb-sender: send copies of one Ethernet frame out of IFNAME as fast as
 * sendmmsg() allows (or at RATE frames/s when given and > 0), until COUNT
 * frames or SECONDS have gone, whichever first.
 * Frame i carries base + (i % DISTINCT) as a big-endian u32 at OFFSET.
 * Prints "SENT REFUSED" (REFUSED: batches the device refused with ENOBUFS). */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>

#define BATCH 64
static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static int unhex(const char *s, unsigned char *out, int max)
{
	int n = 0;
	for (; s[0] && s[1] && n < max; s += 2)
		if (sscanf(s, "%2hhx", &out[n++]) != 1)
			return -1;
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 7 && argc != 8) {
		fprintf(stderr, "usage: %s IFNAME COUNT SECONDS FRAME-HEX OFFSET DISTINCT [RATE]\n", argv[0]);
		return 2;
	}
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	long long count = atoll(argv[2]);
	double seconds = atof(argv[3]);
	unsigned char tmpl[2048];
	int len = unhex(argv[4], tmpl, sizeof(tmpl));
	int offset = atoi(argv[5]);
	unsigned long distinct = strtoul(argv[6], NULL, 10);
	if (len < 14 || offset < 0 || offset + 4 > len) {
		fprintf(stderr, "bad frame or offset\n");
		return 2;
	}
	int s = socket(AF_PACKET, SOCK_RAW, 0);   /* protocol 0: transmit only */
	if (s < 0) { perror("socket"); return 2; }
	int one = 1;
	setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
	struct sockaddr_ll addr;
	memset(&addr, 0, sizeof(addr));
	addr.sll_family = AF_PACKET;
	addr.sll_ifindex = if_nametoindex(argv[1]);
	if (!addr.sll_ifindex || bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		perror("bind");
		return 2;
	}
	static unsigned char frames[BATCH][2048];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	unsigned int base = (unsigned)tmpl[offset] << 24 | (unsigned)tmpl[offset + 1] << 16 |
			    (unsigned)tmpl[offset + 2] << 8 | tmpl[offset + 3];
	for (int i = 0; i < BATCH; i++) {
		memcpy(frames[i], tmpl, len);
		iov[i].iov_base = frames[i];
		iov[i].iov_len = len;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	long long sent = 0, refused = 0;
	unsigned long seq = 0;
	double rate = argc == 8 ? atof(argv[7]) : 0;
	double start = now(), end = start + seconds;
	while (sent < count && !stop) {
		if (rate > 0) {   /* paced: no batch before its time */
			double due = start + sent / rate;
			double t = now();
			if (t < due) {
				struct timespec ts = { 0, (long)((due - t) * 1e9) };
				nanosleep(&ts, NULL);
				continue;
			}
		}
		int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
		if (distinct > 1)
			for (int i = 0; i < n; i++) {
				unsigned int v = base + (unsigned int)((seq + i) % distinct);
				frames[i][offset] = v >> 24;
				frames[i][offset + 1] = v >> 16;
				frames[i][offset + 2] = v >> 8;
				frames[i][offset + 3] = v;
			}
		int r = sendmmsg(s, msgs, n, 0);
		if (r < 0) {
			if (errno != ENOBUFS && errno != EAGAIN && errno != EINTR) {
				perror("sendmmsg");
				return 3;
			}
			refused++;
		} else {
			sent += r;
			seq += r;
		}
		if (now() >= end)
			break;
	}
	printf("%lld %lld\n", sent, refused);
	return 0;
}
"""  # noqa: E101 - C source, kernel style: tabs, then spaces to align a continuation

# The fallback when there is no C compiler: same arguments, same output, slower.
SENDER_PY = r"""
import errno, signal, socket, sys, time
ifname, count, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rate = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
tmpl, offset, distinct = bytes.fromhex(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
base = int.from_bytes(tmpl[offset:offset + 4], "big")
frames = [tmpl] if distinct <= 1 else [
    tmpl[:offset] + ((base + i) & 0xffffffff).to_bytes(4, "big") + tmpl[offset + 4:]
    for i in range(min(distinct, 65536))]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 0))
send, n, sent, refused, start = s.send, len(frames), 0, 0, time.monotonic()
end = start + seconds
while sent < count and not stop:
    if rate > 0 and time.monotonic() < start + sent / rate:
        time.sleep(0.001)
        continue
    for _ in range(256):
        try:
            send(frames[sent % n])
            sent += 1
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            refused += 1
    if time.monotonic() >= end:
        break
print(sent, refused)
"""


class Senders:
    """Builds (once) and starts the bounded senders; tracks their PIDs."""

    def __init__(self, workdir: Path, prefer_c: bool = True):
        self.workdir = workdir
        self.kind = "python"
        self.binary: Optional[Path] = None
        self.note = ""
        gcc = shutil.which("gcc") or shutil.which("cc")
        if prefer_c and gcc:
            src = workdir / "brtb-sender.c"
            src.write_text(SENDER_C)
            out = workdir / "brtb-sender"
            proc = subprocess.run([gcc, "-O2", "-o", str(out), str(src)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=120)
            if proc.returncode == 0:
                self.kind, self.binary = "c-sendmmsg", out
            else:
                self.note = "gcc failed (%s); Python senders instead" % proc.stderr.decode()[:200]
        elif prefer_c:
            self.note = "no C compiler: Python senders (slower: unicast may be sender-bound; install gcc)"

    def argv(self, netns: str, ifname: str, frames: Frames, count: int, seconds: float,
             rate: int = 0) -> List[str]:
        args = [ifname, str(count), "%.3f" % seconds, frames.template.hex(), str(frames.offset),
                str(frames.distinct)] + ([str(rate)] if rate else [])
        cmd = [str(self.binary)] + args if self.binary else [labmod.CHILD_PYTHON, "-c", SENDER_PY] + args
        return labmod.ns_argv(netns, cmd)

    def start(self, netns: str, ifname: str, frames: Frames, count: int,
              seconds: float, cpu: Optional[int] = None, rate: int = 0) -> subprocess.Popen:
        def child_setup():
            labmod._set_pdeathsig()
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
        return subprocess.Popen(self.argv(netns, ifname, frames, count, seconds, rate),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=child_setup)


def parse_sender_output(out: bytes) -> tuple:
    """'SENT REFUSED' -> (sent, refused); (None, None) if unreadable."""
    fields = out.decode(errors="replace").split()
    try:
        return int(fields[0]), int(fields[1])
    except (IndexError, ValueError):
        return None, None


# --------------------------------------------------------------------------
# tracers: brtrace views and the floor, as children
# --------------------------------------------------------------------------

def last_summary(text: str) -> Optional[dict]:
    """The last {"kind": "summary"} JSON line of a view's output."""
    found = None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") in ("summary", "floor"):
            found = rec
    return found


def parse_metrics(text: str) -> Dict[str, float]:
    """Prometheus text exposition -> {metric name: sum over its label sets}."""
    out: Dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0].strip()
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def scrape(url: str, timeout: float = 5.0) -> Optional[Dict[str, float]]:
    """GET a metrics page we serve ourselves on loopback; None if it fails."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode(errors="replace"))
    except OSError:
        return None


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def summary_tracepoints(summary: Optional[dict]) -> Optional[tuple]:
    """Hooks a view attached, from its summary's `probes`: the raw tracepoints
    ("raw_tracepoint:a+b"), plus "tcx" when its port programs were linked with
    tcx. None if it used anything else (kprobes) or did not say. A
    "reconstructed" hook attaches nothing of its own."""
    if not summary or not summary.get("probes"):
        return None
    out = []
    for probe in summary["probes"].values():
        if probe is None:
            continue
        mechanism, _, target = probe.partition(":")
        if mechanism == "reconstructed":
            continue
        if mechanism == "tcx":
            if "tcx" not in out:
                out.append("tcx")
            continue
        if mechanism != "raw_tracepoint":
            return None
        out.extend(t for t in target.split("+") if t not in out)
    return tuple(out) or None


def with_port_hooks(tracepoints: tuple, ports_mechanism: Optional[str]) -> tuple:
    """A view's default floor hooks, with the two port tracepoints replaced by
    "tcx" where brtrace links its port programs with tcx (`brtrace doctor`)."""
    if ports_mechanism != "tcx":
        return tuple(tracepoints)
    out = [t for t in tracepoints if t not in ("netif_receive_skb", "net_dev_queue")]
    return tuple(out + ["tcx"]) if len(out) < len(tracepoints) else tuple(out)


def doctor_ports_mechanism() -> Optional[str]:
    """How this brtrace hooks ports here (tcx, raw_tracepoint), from its doctor."""
    try:
        proc = subprocess.run([str(BRTRACE), "doctor", "-o", "json"], capture_output=True, text=True,
                              timeout=60, cwd=REPO)
        return json.loads(proc.stdout)["hooks"]["ports"]["mechanism"]
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None


def pin_threads(pid: int, cpus: set) -> None:
    """sched_setaffinity() for every thread of PID (affinity is per thread)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass   # a thread that just ended


class Tracer:
    """One tracer child (a brtrace view, or the floor): started, waited for, stopped."""

    def __init__(self, argv: List[str], workdir: Path, tag: str, cpus: Optional[set] = None):
        self.cpus = cpus
        self.ready = workdir / f"{tag}.ready"
        self.out_path = workdir / f"{tag}.out"
        self.err_path = workdir / f"{tag}.err"
        for p in (self.ready, self.out_path, self.err_path):
            if p.exists():
                p.unlink()
        self.argv = argv + ["--ready-file", str(self.ready)]
        self.proc: Optional[subprocess.Popen] = None
        self.ready_s: Optional[float] = None
        self.start_cpu_s: Optional[float] = None
        self.output = ""
        self.stderr = ""

    def start(self) -> None:
        t0 = time.monotonic()
        # Output to files, not pipes: a JSON view streams samples, and a full
        # pipe nobody reads would block it mid-measurement.
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=out, stderr=err,
                                         preexec_fn=labmod._set_pdeathsig)
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise LabError("tracer exited before attaching (rc=%s): %s"
                               % (self.proc.returncode, self._tail(self.err_path)))
            if time.monotonic() - t0 > READY_TIMEOUT:
                raise LabError("tracer did not attach within %.0f s" % READY_TIMEOUT)
            time.sleep(0.02)
        self.ready_s = time.monotonic() - t0
        self.start_cpu_s = cpu_seconds(self.proc.pid)
        if self.cpus:
            # After start-up (which may use every CPU, as it would on a host),
            # every thread it has; threads made later inherit it.
            pin_threads(self.proc.pid, self.cpus)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 30.0) -> Optional[dict]:
        """SIGTERM by PID, wait, return the last summary (None if none)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self.output = self.out_path.read_text(errors="replace") if self.out_path.exists() else ""
        self.stderr = self._tail(self.err_path)
        return last_summary(self.output)

    @staticmethod
    def _tail(path: Path, n: int = 400) -> str:
        try:
            return path.read_text(errors="replace").strip()[-n:]
        except OSError:
            return ""


def view_available(view: str) -> bool:
    """Does this brtrace have the subcommand? (`brtrace VIEW --help` exits 0)."""
    try:
        proc = subprocess.run([str(BRTRACE), view, "--help"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=60, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

class Interrupted(Exception):
    pass


class Bench:
    def __init__(self, args):
        self.args = args
        self.windows: List[dict] = []
        self.blocks: List[dict] = []
        self.notes: List[str] = []
        self.children: List[subprocess.Popen] = []   # live senders
        self.tracer: Optional[Tracer] = None
        self.lab: Optional[Lab] = None
        self.workdir = Path(tempfile.mkdtemp(prefix="brtb-"))
        self.bpf_stats_fd: Optional[int] = None
        self.seq = 0
        self.port = 0                # loopback port of a metrics-serving view

    # ---- set-up ------------------------------------------------------------
    def build(self) -> None:
        stale = [f"{PREFIX}-br"] + [f"{PREFIX}-h{i}" for i in (1, 2)]
        for ns in stale:
            if labmod.netns_exists(ns):
                pids = labmod.run(["ip", "netns", "pids", ns], check=False).stdout.decode().split()
                if pids:
                    raise LabError(f"namespace {ns} exists with processes in it ({' '.join(pids)}): "
                                   "is another bench running?")
                labmod.run(["ip", "netns", "del", ns], check=False)
                self.notes.append(f"deleted stale empty namespace {ns} (from an interrupted run)")
        self.lab = Lab(prefix=PREFIX, hosts=2, bridge="br-int")
        self.lab.build()
        h1, h2 = self.lab.host(1), self.lab.host(2)
        # h2 never sends: a static entry keeps unicast to it forwarded, not flooded.
        self.lab.add_fdb(h2.mac, h2.port)
        self.senders = Senders(self.workdir, prefer_c=not self.args.python_senders)
        if self.senders.note:
            self.notes.append(self.senders.note)
        self.frames = {wl: workload_frames(wl, h1.mac, h1.ip, h2.mac, self.args.distinct)
                       for wl in self.args.workloads}

    def rx_packets(self) -> tuple:
        """(host 2 eth0 rx_packets, the time it was read)."""
        h2 = self.lab.host(2)
        t0 = time.monotonic()
        stats = self.lab.link_stats(h2.netns, h2.ifname)
        return stats["rx_packets"], (t0 + time.monotonic()) / 2

    # ---- one window --------------------------------------------------------
    def window(self, rnd: int, workload: str, config: Optional[str], rate: int = 0) -> dict:
        h1 = self.lab.host(1)
        window = self.args.window
        run_s = WARMUP + window + TAIL
        count = int(MAX_PPS * run_s)
        tracer = self.tracer if config else None
        waited = self.wait_quiet(tracer)
        cpus = sorted(os.sched_getaffinity(0))
        per_sender = rate // self.args.senders if rate else 0
        procs = [self.senders.start(h1.netns, h1.ifname, self.frames[workload], count, run_s,
                                    cpus[i % len(cpus)] if self.args.pin else None, per_sender)
                 for i in range(self.args.senders)]
        self.children.extend(procs)
        ours = {os.getpid()} | {p.pid for p in procs} | ({tracer.pid} if tracer else set())
        own_progs = {p["id"] for p in bpf_objects(tracer.pid)["progs"]} if tracer else set()
        foreign = foreign_tracing_progs(bpftool_json("prog", "show"), own_progs)
        try:
            time.sleep(WARMUP)
            rx0, t0 = self.rx_packets()
            cpu0 = cpu_seconds(tracer.pid) if tracer else None
            progs0 = bpf_objects(tracer.pid)["progs"] if tracer and self.bpf_stats_fd is not None else None
            other0 = cpu_ticks_by_pid(ours)
            time.sleep(max(0.0, t0 + window - time.monotonic()))
            rx1, t1 = self.rx_packets()
            cpu1 = cpu_seconds(tracer.pid) if tracer else None
            progs1 = bpf_objects(tracer.pid)["progs"] if progs0 is not None else None
            other1 = cpu_ticks_by_pid(ours)
            after = foreign_tracing_progs(bpftool_json("prog", "show"), own_progs)
            if foreign is not None and after is not None:
                foreign = sorted(set(foreign) | set(after))
            sent = refused = 0
            for p in procs:
                try:
                    out, err = p.communicate(timeout=run_s + 10)
                except subprocess.TimeoutExpired:
                    labmod._kill_pid(p)
                    out, err = p.communicate()
                    self.notes.append(f"sender {p.pid} overran its bound and was killed")
                s, r = parse_sender_output(out)
                if s is None:
                    raise LabError("sender failed: %s" % err.decode(errors="replace").strip()[:300])
                sent += s
                refused += r
        finally:
            for p in procs:
                labmod._kill_pid(p)
                if p in self.children:
                    self.children.remove(p)
        seconds = t1 - t0
        rec = {"seq": self.seq, "round": rnd, "workload": workload, "config": config, "rate": rate,
               "seconds": round(seconds, 4), "rx": rx1 - rx0, "pps": (rx1 - rx0) / seconds,
               "sent": sent, "refused_batches": refused,
               "tracer_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None,
               "other_cpu_pct": round(100.0 * other_cpu_seconds(other0, other1) / seconds, 1),
               "foreign_progs": foreign, "waited_s": waited}
        if progs0 is not None and progs1 is not None:
            before = {p["id"]: p for p in progs0}
            rec["bpf_ns"] = sum(p["run_time_ns"] - before.get(p["id"], {}).get("run_time_ns", 0) for p in progs1)
            rec["bpf_runs"] = sum(p["run_cnt"] - before.get(p["id"], {}).get("run_cnt", 0) for p in progs1)
        self.seq += 1
        self.windows.append(rec)
        self._progress(rec)
        return rec

    def wait_quiet(self, tracer: Optional[Tracer]) -> float:
        """Wait (at most --wait-quiet seconds) until no one else's tracing BPF
        program is attached: on a shared machine they tax every frame."""
        if self.args.wait_quiet <= 0:
            return 0.0
        own = {p["id"] for p in bpf_objects(tracer.pid)["progs"]} if tracer else set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.args.wait_quiet:
            foreign = foreign_tracing_progs(bpftool_json("prog", "show"), own)
            if not foreign:
                break
            time.sleep(0.5)
        return round(time.monotonic() - t0, 2)

    def _progress(self, rec: dict) -> None:
        what = rec["config"] or "untraced"
        cpu = "" if rec["tracer_cpu_s"] is None else "  tracer cpu %.1f%%" % (
            100 * rec["tracer_cpu_s"] / rec["seconds"])
        foreign = (f"  +{len(rec['foreign_progs'])} foreign tracing BPF progs"
                   if rec.get("foreign_progs") else "")
        print(f"bench: r{rec['round'] + 1} {rec['workload']:<9} {what:<13} {rec['pps'] / 1e3:8.0f} kpps"
              f"{cpu}  (other procs {rec['other_cpu_pct']:.0f}% cpu){foreign}", file=sys.stderr, flush=True)

    # ---- one traced block ----------------------------------------------------
    def tracer_argv(self, config: str, floor_tps: Optional[tuple]) -> List[str]:
        hold = str(self.args.window + WARMUP + TAIL + SETTLE + 120)
        if config.startswith("floor:"):
            argv = [sys.executable, "-m", "tracer.bench", "--floor-child",
                    ",".join(t for t in floor_tps if t != "tcx"), "--hold", hold]
            if "tcx" in floor_tps:
                # the same devices brtrace links its port programs to
                argv += ["--floor-tcx", "%s:%s" % (labmod.netns_path(self.lab.bridge_ns),
                                                   ",".join(map(str, self.lab.bridge_ifindexes())))]
            return argv
        spec = VIEWS[config]
        argv = [str(BRTRACE), spec.name, "--bridge", self.lab.bridge, "--netns", self.lab.bridge_ns,
                "--interval", str(self.args.interval), "--duration", hold]
        if spec.json:
            argv += ["-o", "json"]
        self.port = free_loopback_port()
        return argv + [a.replace("{port}", str(self.port)) for a in spec.extra_args]

    def tracer_cpus(self) -> Optional[set]:
        """With pinned senders, the CPUs they leave free: once attached, the
        tracer (and the floor) run there, so the delivered rate measures the
        kernel-side cost and brtrace's own CPU shows in cpu%, not in the rate
        as well. None: no such CPU."""
        if not self.args.pin:
            return None
        cpus = sorted(os.sched_getaffinity(0))
        free = set(cpus) - {cpus[i % len(cpus)] for i in range(self.args.senders)}
        return free or None

    def traced(self, rnd: int, workload: str, config: str, floor_tps: Optional[tuple] = None) -> Optional[dict]:
        block = {"round": rnd, "workload": workload, "config": config}
        self.tracer = Tracer(self.tracer_argv(config, floor_tps), self.workdir,
                             f"{config.replace(':', '-')}-{rnd}-{workload}", self.tracer_cpus())
        summary = None
        try:
            self.tracer.start()
            block["ready_s"] = round(self.tracer.ready_s, 3)
            time.sleep(SETTLE)
            objs = bpf_objects(self.tracer.pid)
            block["map_bytes"] = sum(m["memlock"] for m in objs["maps"]) if objs["maps"] else None
            block["maps"] = len(objs["maps"])
            block["progs"] = len(objs["progs"])
            if rnd == 0:
                block["map_bytes_bpftool"] = map_bytes_bpftool([p["id"] for p in objs["progs"]])
            self.window(rnd, workload, config)
            block["vmhwm_kb"] = vmhwm_kb(self.tracer.pid)
            spec = VIEWS.get(config)
            if spec is not None and spec.metrics:
                time.sleep(self.args.interval)   # let one refresh carry the window's stats
                metrics = scrape(f"http://127.0.0.1:{self.port}/metrics")
                if metrics is not None:
                    block["events_lost"] = int(metrics.get("brtrace_events_lost_total", 0))
                    block["events_rate_limited"] = int(metrics.get("brtrace_events_rate_limited_total", 0))
            if self.tracer.start_cpu_s is not None:
                block["start_cpu_s"] = round(self.tracer.start_cpu_s, 2)
        except LabError as exc:
            block["error"] = str(exc)
            self.notes.append(f"{config} ({workload}, round {rnd + 1}): {exc}")
        finally:
            summary = self.tracer.stop()
            self.tracer = None
        stats = (summary or {}).get("stats") or {}
        for key in ("events_lost", "events_rate_limited", "events_sent"):
            if stats.get(key) is not None or key not in block:
                block[key] = stats.get(key)
        if summary and summary.get("kind") == "floor":
            hits = summary.get("hits", {})
            block["floor_hits"] = hits
            # the floor's hits are all in its one window (idle otherwise): per packet there
            win = self.windows[-1] if self.windows and self.windows[-1]["config"] == config else None
            if win is not None:
                win["floor_hits"] = sum(hits.values())
                win["floor_hits_by_tp"] = hits
        elif summary:
            block["probes"] = summary.get("probes")
        elif "error" not in block and (config.startswith("floor:") or VIEWS[config].json):
            block["error"] = "no JSON summary on exit"
        self.blocks.append(block)
        return summary

    # ---- the whole run ----------------------------------------------------
    def run(self) -> dict:
        self.build()
        views = []
        for v in self.args.views:
            if v not in ("drops", "loops") and not view_available(v):
                self.notes.append(f"view {v}: `brtrace {v}` does not exist yet; skipped")
                continue
            views.append(v)
        if self.args.bpf_stats:
            try:
                self.bpf_stats_fd = enable_bpf_stats()
                self.notes.append("BPF run-time statistics on (they add two clock reads per program run)")
            except OSError as exc:
                self.notes.append(f"could not enable BPF statistics: {exc}")
        floors: Dict[str, tuple] = {}
        # For views without a JSON summary (export): the port hooks doctor picks.
        ports_mechanism = doctor_ports_mechanism()
        for rnd in range(self.args.rounds):
            for wl in self.args.workloads:
                for v in views:
                    self.window(rnd, wl, None)
                    summary = self.traced(rnd, wl, v)
                    tps = (summary_tracepoints(summary) or floors.get(v)
                           or with_port_hooks(VIEWS[v].floor_tracepoints, ports_mechanism))
                    floors[v] = tps
                    self.window(rnd, wl, None)
                    self.traced(rnd, wl, floor_name(v), tps)
                self.window(rnd, wl, None)
        results = summarize(self.windows, self.blocks, views, self.args.workloads)
        if self.args.rates:
            self.cpu_sweep(views, self.args.rates)
        other = mean([w["other_cpu_pct"] for w in self.windows])
        if other is not None and other > 10:
            self.notes.append(f"other processes used {other:.0f}% of a core on average during the "
                              "windows: the machine was not quiet, expect noise")
        foreign = sorted({n for w in self.windows for n in (w.get("foreign_progs") or [])})
        busy = sum(1 for w in self.windows if w.get("foreign_progs"))
        if foreign:
            self.notes.append(f"{busy} of {len(self.windows)} windows ran while someone else's tracing "
                              f"BPF programs were attached ({', '.join(foreign)}): they tax every "
                              "frame, untraced windows included")
        return {"kind": "bench", "version": 1,
                "config": {"window": self.args.window, "rounds": self.args.rounds, "views": views,
                           "workloads": list(self.args.workloads), "senders": self.args.senders,
                           "sender": self.senders.kind, "distinct": self.args.distinct,
                           "interval": self.args.interval, "cpus": os.cpu_count(),
                           "rates": list(self.args.rates),
                           "pin": self.args.pin, "tracer_cpus": sorted(self.tracer_cpus() or []),
                           "wait_quiet": self.args.wait_quiet,
                           "kernel": platform.release(), "bpf_stats": self.bpf_stats_fd is not None},
                "floor_tracepoints": {v: list(t) for v, t in floors.items()},
                "results": results, "cpu_sweep": sweep_rows(self.windows),
                "blocks": self.blocks, "windows": self.windows,
                "notes": self.notes}

    def cpu_sweep(self, views: Sequence[str], rates: Sequence[int]) -> None:
        """brtrace's CPU as the frame rate grows: one tracer per view, one
        unicast window per rate (0: as fast as the senders go). The windows
        are recorded with config "sweep:VIEW" and summarised by sweep_rows()."""
        for v in views:
            self.tracer = Tracer(self.tracer_argv(v, None), self.workdir, f"sweep-{v}")
            try:
                self.tracer.start()
                time.sleep(SETTLE)
                for rate in rates:
                    self.window(-1, "unicast", f"sweep:{v}", rate=rate)
            except LabError as exc:
                self.notes.append(f"cpu sweep of {v}: {exc}")
            finally:
                self.tracer.stop()
                self.tracer = None

    def cleanup(self) -> None:
        """Our children by PID, then our namespaces, then our files. Idempotent."""
        if self.tracer is not None:
            try:
                self.tracer.stop(timeout=10)
            except Exception:  # noqa: BLE001 - best effort: clean-up goes on to the next resource
                pass
            self.tracer = None
        for p in list(self.children):
            try:
                labmod._kill_pid(p)
            except Exception:  # noqa: BLE001 - best effort: clean-up goes on to the next child
                pass
        self.children.clear()
        if self.lab is not None:
            self.lab.cleanup()
            self.lab = None
        if self.bpf_stats_fd is not None:
            os.close(self.bpf_stats_fd)
            self.bpf_stats_fd = None
        shutil.rmtree(self.workdir, ignore_errors=True)


def _csv(choices: Sequence[str]):
    def parse(text: str) -> List[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)} (got {text!r})")
        return list(dict.fromkeys(items))
    return parse


def _rates(text: str) -> List[int]:
    try:
        rates = [int(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"frames per second, comma-separated (got {text!r})") from None
    if not rates or any(r < 0 or r > MAX_PPS for r in rates):
        raise argparse.ArgumentTypeError(f"each rate between 0 and {MAX_PPS} (got {text!r})")
    return rates


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=float, default=3.0, help="seconds per measured window (default 3)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of alternating windows (default 2)")
    ap.add_argument("--views", type=_csv(tuple(VIEWS)), default=["drops", "loops"],
                    help="comma-separated views (default drops,loops; also: %s)"
                         % ",".join(v for v in VIEWS if v not in ("drops", "loops")))
    ap.add_argument("--workloads", type=_csv(WORKLOADS), default=list(WORKLOADS),
                    help="comma-separated workloads (default unicast,broadcast)")
    ap.add_argument("--senders", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                    help="parallel senders on host 1 (default: CPUs - 1, leaving one for the tracer)")
    ap.add_argument("--distinct", type=int, default=65536,
                    help="distinct broadcast frames (default 65536, above the loops view's 16384 "
                         "flood fingerprints)")
    ap.add_argument("--interval", type=float, default=1.0, help="brtrace --interval (default 1)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="before each window, wait up to SECONDS for other tracing BPF programs "
                         "(other users' tracers) to go away (default 0: do not wait)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin sender i to CPU i (pinning keeps each sender's softirq work "
                         "on its CPU), nor the tracer, once attached, to the CPUs they leave")
    ap.add_argument("--rates", type=_rates, default=[],
                    help="after the rounds, brtrace's CPU per view at these unicast rates "
                         "(frames/s, comma-separated, 0 = unlimited), e.g. 1000,10000,100000,0")
    ap.add_argument("--bpf-stats", action="store_true",
                    help="also measure ns per BPF program run (kernel BPF stats; adds overhead)")
    ap.add_argument("--python-senders", action="store_true", help="use the slow Python senders")
    ap.add_argument("--json-only", action="store_true", help="print only the JSON summary line")
    # internal: the floor program, run as a child
    ap.add_argument("--floor-child", metavar="TP,TP", help=argparse.SUPPRESS)
    ap.add_argument("--floor-tcx", metavar="NETNS:IFINDEX,IFINDEX", help=argparse.SUPPRESS)
    ap.add_argument("--ready-file", help=argparse.SUPPRESS)
    ap.add_argument("--hold", type=float, default=300.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not 0.2 <= args.window <= 600:
        ap.error("--window must be between 0.2 and 600 seconds")
    if not 1 <= args.rounds <= 100:
        ap.error("--rounds must be between 1 and 100")
    if not 1 <= args.senders <= 64:
        ap.error("--senders must be between 1 and 64")
    if not 0 <= args.wait_quiet <= 600:
        ap.error("--wait-quiet must be between 0 and 600 seconds")
    if not 1 <= args.distinct <= 2 ** 24:
        ap.error("--distinct must be between 1 and 16777216")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.floor_child:
        return floor_child(args.floor_child.split(","), args.ready_file, args.hold, args.floor_tcx)
    if os.geteuid() != 0:
        print("bench: needs root (run scripts/bench, which re-runs under sudo)", file=sys.stderr)
        return 1
    if not BRTRACE.exists():
        print(f"bench: {BRTRACE} missing: run scripts/setup", file=sys.stderr)
        return 1

    def _interrupt(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    # SIGINT too, explicitly: started in the background, Python would inherit it ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    bench = Bench(args)
    t0 = time.monotonic()
    try:
        report = bench.run()
    except (Interrupted, KeyboardInterrupt) as exc:
        print(f"bench: interrupted ({exc or 'SIGINT'}); cleaning up", file=sys.stderr)
        return 130
    except LabError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        # Cleanup must finish even if a second Ctrl-C arrives.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.cleanup()
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    if not args.json_only:
        print()
        print(f"brtrace bench: {report['config']['senders']} {report['config']['sender']} sender(s), "
              f"{args.window:g} s windows, {args.rounds} round(s), kernel {platform.release()}, "
              f"{os.cpu_count()} CPUs, {report['elapsed_s']:.0f} s")
        print("\n".join(render_table(report["results"], bpf_stats=report["config"]["bpf_stats"])))
        print("\n".join(legend(report["results"])))
        sweep = sweep_rows(report["windows"])
        if sweep:
            print("\n".join(render_sweep(sweep)))
        for note in report["notes"]:
            print(f"note: {note}")
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
