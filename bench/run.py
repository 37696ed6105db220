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

Workloads (sent from host 1 by the lab's sender, lab/children/sender.c in its
fast mode, or sender.py if there is no C compiler; each bounded in frames and in seconds):

* unicast: frames to host 2's MAC (an ethertype nothing handles, so host 2's
  stack frees each one: a kfree_skb per frame, outside the traced namespace);
* broadcast: ARP who-has requests nobody answers, distinct in their padding
  (--distinct) so that the loops view's flood fingerprints see new frames.

Delivered pps is the delta of host 2's eth0 rx_packets over the window.

Run as root: python -m bench [--window S] [--rounds N] [--views drops,loops]
"""

from __future__ import annotations

import argparse
import json
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
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import lab as labmod
from bench.floor import floor_child
from bench.procfs import (bpf_objects, bpftool_json, cpu_seconds, cpu_ticks_by_pid, foreign_tracing_progs,
                          map_bytes_bpftool, other_cpu_seconds, vmhwm_kb)
from bench.stats import (VIEWS, WORKLOADS, Frames, floor_name, last_summary, legend, mean, parse_metrics,
                         parse_sender_output, render_sweep, render_table, summarize, summary_tracepoints,
                         sweep_rows, with_port_hooks, workload_frames)
from lab import Lab, LabError
from lab.traffic import compile_sender, sender_args, sender_command
from tracer.kernel.bpfsys import enable_stats

PREFIX = "brtb"
REPO = Path(__file__).resolve().parents[1]
BRTRACE = REPO / ".venv" / "bin" / "brtrace"


def brtrace_argv() -> List[str]:
    """The brtrace under test: the venv's (scripts/setup), else the tracer
    package this interpreter imports (a checkout run with another venv)."""
    return [str(BRTRACE)] if BRTRACE.exists() else [sys.executable, "-m", "tracer.cli"]


# Sampling: senders run WARMUP + window + TAIL seconds; the window is measured
# in their middle, so start-up and wind-down of the senders are not in it.
WARMUP = 0.3
TAIL = 0.3
SETTLE = 0.3           # after the tracer says ready, before traffic starts
READY_TIMEOUT = 90.0
MAX_PPS = 20_000_000   # frame bound per sender: far above what veths reach


# --------------------------------------------------------------------------
# BPF run-time statistics (opt-in: they cost two clock reads per program run)
# --------------------------------------------------------------------------

def enable_bpf_stats() -> int:
    """Hold the kernel's BPF run-time statistics on (run_time_ns/run_cnt in
    fdinfo) until the returned fd is closed: scoped, unlike the sysctl."""
    return enable_stats()



# --------------------------------------------------------------------------
# senders: the lab's one sender, in its fast mode
# --------------------------------------------------------------------------

class Senders:
    """Starts the bounded senders: lab/children/sender.c (compiled once per
    process) with -f (sendmmsg batches, qdisc bypass), or sender.py -f where
    there is no C compiler or --python-senders asks for it."""

    def __init__(self, prefer_c: bool = True):
        self.binary: Optional[Path] = None
        self.note = ""
        if prefer_c:
            self.binary, self.note = compile_sender()
        self.kind = "c-sendmmsg" if self.binary else "python"

    def argv(self, netns: str, ifname: str, frames: Frames, count: int, seconds: float,
             rate: int = 0) -> List[str]:
        cmd = [str(self.binary), "-f"] if self.binary else sender_command(fast=True, prefer_c=False)
        return labmod.ns_argv(netns, cmd + sender_args(ifname, frames, count, seconds, rate))

    def start(self, netns: str, ifname: str, frames: Frames, count: int,
              seconds: float, cpu: Optional[int] = None, rate: int = 0) -> subprocess.Popen:
        def child_setup():
            labmod._set_pdeathsig()
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})
        return subprocess.Popen(self.argv(netns, ifname, frames, count, seconds, rate),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=child_setup)


# --------------------------------------------------------------------------
# tracers: brtrace views and the floor, as children
# --------------------------------------------------------------------------

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



def doctor_ports_mechanism() -> Optional[str]:
    """How this brtrace hooks ports here (tcx, raw_tracepoint), from its doctor."""
    try:
        proc = subprocess.run(brtrace_argv() + ["doctor", "-o", "json"], capture_output=True, text=True,
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
        proc = subprocess.run(brtrace_argv() + [view, "--help"], stdout=subprocess.DEVNULL,
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
        self.senders = Senders(prefer_c=not self.args.python_senders)
        if self.senders.note:
            self.notes.append(self.senders.note)
        self.frames = {wl: workload_frames(wl, h1.mac, h1.ip, h2.mac, self.args.distinct)
                       for wl in dict.fromkeys([*self.args.workloads, self.args.sweep_workload])}

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
            argv = [sys.executable, "-m", "bench", "--floor-child",
                    ",".join(t for t in floor_tps if t != "tcx"), "--hold", hold]
            if "tcx" in floor_tps:
                # the same devices brtrace links its port programs to
                argv += ["--floor-tcx", "%s:%s" % (labmod.netns_path(self.lab.bridge_ns),
                                                   ",".join(map(str, self.lab.bridge_ifindexes())))]
            return argv
        spec = VIEWS[config]
        argv = brtrace_argv() + [spec.name, "--bridge", self.lab.bridge, "--netns", self.lab.bridge_ns,
                                 "--duration", hold]
        if spec.interval:
            argv += ["--interval", str(self.args.interval)]
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
            if v not in ("drops", "loops") and not view_available(VIEWS[v].name):
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
        window of --sweep-workload per rate (0: as fast as the senders go),
        in the order given (a rate repeated shows start-up against steady
        state). The windows are recorded with config "sweep:VIEW" and
        summarised by sweep_rows()."""
        for v in views:
            self.tracer = Tracer(self.tracer_argv(v, None), self.workdir, f"sweep-{v}")
            try:
                self.tracer.start()
                time.sleep(SETTLE)
                for rate in rates:
                    self.window(-1, self.args.sweep_workload, f"sweep:{v}", rate=rate)
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
    ap.add_argument("--sweep-workload", choices=WORKLOADS, default="unicast",
                    help="the workload of the --rates windows (default unicast)")
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
