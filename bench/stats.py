"""The bench's pure parts: views and workloads as data, results from windows,
the table, and the parsers of what its children print.  No root, no kernel."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from lab.frames import ETH_P_LAB, Frames, arp_request, ether

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
    interval: bool = True       # takes --interval (watch runs at its own 1 s)


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
    # As deployed (symptoms decide): the unicast workload leaves it disarmed (no
    # port hooks); the broadcast workload is itself a symptom and arms it.
    "watch": ViewSpec("watch", ("kfree_skb", "br_fdb_update") + _NEIGH_TPS,
                      ("--listen", "127.0.0.1:{port}", "--dir", "/tmp/brtb-incidents-{port}"),
                      json=False, metrics=True, interval=False),
    # Armed from the start (hidden --detail armed): what watch costs during an incident.
    "watch-armed": ViewSpec("watch", _FORWARD_TPS + _NEIGH_TPS,
                            ("--listen", "127.0.0.1:{port}", "--dir", "/tmp/brtb-incidents-{port}",
                             "--detail", "armed"), json=False, metrics=True, interval=False),
    # Never armed (hidden --detail disarmed): the always-on tier alone, also on the
    # broadcast workload, whose 0.5+ Mpps of ARP arm `watch` as a storm would.
    "watch-disarmed": ViewSpec("watch", ("kfree_skb", "br_fdb_update") + _NEIGH_TPS,
                               ("--listen", "127.0.0.1:{port}", "--dir", "/tmp/brtb-incidents-{port}",
                                "--detail", "disarmed"), json=False, metrics=True, interval=False),
}

WORKLOADS = ("unicast", "broadcast")

# Bytes 42.. of a 60-byte ARP frame are padding: receivers ignore them, but the
# loops view's flood fingerprint (first 64 bytes) sees each value as a new frame.
ARP_PAD_OFFSET = 42
LAB_SEQ_OFFSET = 14   # first payload byte of an ETH_P_LAB frame

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
            rows.append({"view": cfg[6:], "workload": w.get("workload", "unicast"),
                         "rate": w.get("rate", 0), "pps": w["pps"],
                         "cpu_pct": 100.0 * w["tracer_cpu_s"] / w["seconds"]})
    return rows


def render_sweep(rows: Sequence[dict]) -> List[str]:
    """One line per view: CPU% at each delivered rate, and the spread (max - min
    in points): flat means the spread stays within the clock-tick resolution.
    By rate asked, unlimited last; windows of one rate in the order run."""
    lines = []
    for view in dict.fromkeys(r["view"] for r in rows):
        mine = sorted((r for r in rows if r["view"] == view), key=lambda r: (r["rate"] == 0, r["rate"]))
        cells = ", ".join("%.0f kpps %.1f%%" % (r["pps"] / 1e3, r["cpu_pct"]) for r in mine)
        spread = max(r["cpu_pct"] for r in mine) - min(r["cpu_pct"] for r in mine)
        workload = "" if mine[0]["workload"] == "unicast" else f" ({mine[0]['workload']})"
        lines.append(f"cpu sweep {view}{workload}: {cells} (spread {spread:.1f} points)")
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



def parse_sender_output(out: bytes) -> tuple:
    """'SENT REFUSED' -> (sent, refused); (None, None) if unreadable."""
    fields = out.decode(errors="replace").split()
    try:
        return int(fields[0]), int(fields[1])
    except (IndexError, ValueError):
        return None, None



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

