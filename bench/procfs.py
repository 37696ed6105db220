"""/proc readers for the bench (pure parsers + thin readers), and bpftool."""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, List, Optional, Sequence

from lab.proc import LabError, run

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
        return json.loads(run(["bpftool", "-j", *args], timeout=20).stdout)
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
