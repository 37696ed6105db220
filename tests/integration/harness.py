"""brtrace as a child process of a test, and the BPF programs it holds.

Shared by tests/integration and tests/vm (tests/integration is on pytest's
pythonpath, see pyproject.toml), so every test drives the real CLI the same
way: `-o json --ready-file`, wait until attached, stop by PID, read records.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import run
from tracer.kernel.btf import Btf
from tracer.kernel.features import Features

REPO = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)


def lab_prefix(default: str) -> str:
    """The namespace prefix of a test's lab: BRTRACE_LAB_PREFIX when set
    (engineers sharing one machine keep their labs and cleanups apart), else
    the test's own `default`."""
    return os.environ.get("BRTRACE_LAB_PREFIX", default)


class Tracer:
    """The real brtrace CLI as a child process; records are its JSON lines."""

    def __init__(self, tmp_path: Path, *args: str, start_timeout: float = 60.0,
                 env: dict | None = None):
        self.ready = tmp_path / f"ready-{next(_ids)}"
        self.argv = [sys.executable, "-m", "tracer.cli", *args, "-o", "json",
                     "--ready-file", str(self.ready)]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **env} if env else None)
        deadline = t0 + start_timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"brtrace exited early: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("brtrace did not attach in time")
            time.sleep(0.05)
        self.startup = time.monotonic() - t0      # start to attached
        self.records: list = []
        self.stderr = ""

    def stop(self, sig=signal.SIGTERM, settle: float = 0.3, timeout: float = 30.0) -> list:
        """Let in-flight frames land, signal our child by PID, collect its output."""
        time.sleep(settle)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            out, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, self.stderr = self.proc.communicate()
            raise AssertionError("brtrace did not exit after the signal") from None
        self.records = [json.loads(line) for line in out.splitlines() if line.strip()]
        return self.records

    def kind(self, kind: str) -> list:
        return [r for r in self.records if r.get("kind") == kind]

    def drops(self, **match) -> list:
        return [r for r in self.kind("drop") if all(r.get(k) == v for k, v in match.items())]

    def count(self, **match) -> int:
        return sum(r["count"] for r in self.drops(**match))

    def findings(self, type_: str | None = None) -> list:
        return [f for f in self.kind("finding") if type_ is None or f["type"] == type_]

    def ports(self) -> dict:
        """port -> counters, from `loops`-style `port` records."""
        return {p["port"]: p["counters"] for p in self.kind("port")}

    def kill(self) -> None:
        """For cleanup after a failure: SIGKILL our child by PID, reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def loaded_prog_ids() -> set:
    """IDs of every BPF program loaded on the machine right now."""
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {p["id"] for p in json.loads(out)}


def held_prog_ids(pid: int) -> set:
    """IDs of the BPF programs process `pid` holds open (from its fdinfo).
    Other runs may load and unload programs meanwhile, so tests follow these
    IDs rather than diff the machine-wide list."""
    ids = set()
    for f in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in f.read_text().splitlines():
                if line.startswith("prog_id:"):
                    ids.add(int(line.split()[1]))
        except OSError:
            pass            # an fd closed while we read
    return ids


# Program types brtrace loads: raw tracepoints, tcx port programs (sched_cls),
# kprobes where the kernel has them.
OUR_PROG_TYPES = {"raw_tracepoint", "sched_cls", "kprobe"}


def our_kind_of_progs() -> dict:
    """id -> name of every loaded program of a type brtrace uses."""
    out = subprocess.run(["bpftool", "-j", "prog", "list"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p.get("name") for p in json.loads(out) if p.get("type") in OUR_PROG_TYPES}


def tcx_links(prog_ids: set) -> list:
    """prog_id of every tcx link of these programs, one entry per link
    (`bpftool link`; older bpftools print the type as its number, taken here
    from the kernel's enum bpf_link_type)."""
    with Btf() as btf:
        tcx = {"tcx", btf.enum("bpf_link_type").get("BPF_LINK_TYPE_TCX")}
    out = subprocess.run(["bpftool", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(link["prog_id"] for link in json.loads(out)
                  if link.get("type") in tcx and link.get("prog_id") in prog_ids)


def wait_unloaded(ids: set, timeout: float = 10.0) -> set:
    """Wait (bounded) until none of `ids` is loaded; returns those still loaded."""
    deadline = time.monotonic() + timeout
    while True:
        left = ids & loaded_prog_ids()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def direct_reads() -> tuple[bool, str]:
    """Does this kernel take bpf_rdonly_cast() (what `brtrace doctor` reports)?"""
    with Btf() as btf:
        f = Features.probe(btf)
    return f.direct_reads, f.direct_reads_why


# The two ways the raw tracepoint programs read kernel memory: plain loads
# through the kfunc where the kernel has it, and bpf_probe_read_kernel(), the
# fallback older kernels get (forced with BRTRACE_AVOID). name -> (env, summary's
# kernel_reads).
READS = {"kfunc": ({}, "kfunc:bpf_rdonly_cast"),
         "helper": ({"BRTRACE_AVOID": "kfunc"}, "helper:bpf_probe_read_kernel")}


def reads_env(reads: str) -> dict:
    """The environment for one of READS; skips the kfunc way where the kernel lacks it."""
    if reads == "kfunc":
        ok, why = direct_reads()
        if not ok:
            pytest.skip(f"no direct kernel reads here: {why}")
    return READS[reads][0]


# -- long-running views (export, watch): a child serving /metrics --------------------

def pdeathsig():
    """In the child: SIGTERM when the test process dies, so nothing outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort, in the child before it runs
        pass


def stop_pid(proc: subprocess.Popen, grace: float = 20.0, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def parse_metrics(text: str) -> dict:
    """Exposition text -> {(sample name, frozenset(labels)): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric_value(scrape: dict, name: str, **labels) -> float:
    """Sum of the samples of NAME whose labels include LABELS."""
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= ls)


def wait_for(check, timeout: float, every: float = 0.02):
    """Poll CHECK until it returns something true; (result, seconds taken)."""
    t0 = time.monotonic()
    while True:
        got = check()
        if got or time.monotonic() - t0 > timeout:
            return got, time.monotonic() - t0
        time.sleep(every)


class Served:
    """`brtrace export` or `brtrace watch` as a child process on a free
    loopback port; its stdout and stderr in a log file."""

    def __init__(self, workdir: Path, view: str, netns: str, *bridges: str, args=(),
                 duration: float = 150.0, start_timeout: float = 60.0, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        ready = workdir / f"{view}-ready-{self.port}"
        self.log_path = workdir / f"{view}-{self.port}.log"
        self.log = open(self.log_path, "w+")
        argv = [sys.executable, "-m", "tracer.cli", view, "--netns", netns,
                "--listen", f"127.0.0.1:{self.port}", "--duration", str(duration),
                "--ready-file", str(ready), *args]
        for b in bridges:
            argv += ["--bridge", b]
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=pdeathsig, env={**os.environ, **env} if env else None)
        deadline = time.monotonic() + start_timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"brtrace {view} exited early: {self.output()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"brtrace {view} did not become ready in time")
            time.sleep(0.05)
        self.startup = time.monotonic() - t0

    def output(self) -> str:
        """What it wrote (stdout and stderr), also after stop()."""
        return self.log_path.read_text()

    def scrape_text(self) -> str:
        return http_get(self.url)

    def scrape(self) -> dict:
        return parse_metrics(self.scrape_text())

    def stop(self, sig=signal.SIGTERM) -> int:
        stop_pid(self.proc, sig=sig)
        self.log.close()
        return self.proc.returncode


# -- the tinc incident (a mesh of the `mesh` fixture) ---------------------------

def storm_between_1_and_2(m):
    """The incident: a second path between nodes 1 and 2 closes a loop
    through tinc; one ARP from node 1's VM starts the storm; node 3's VM keeps
    asking for its gateway (on node 1) and node 3's bridge has an address, so
    node 3's own frames go into the VPN and come back."""
    m.add_direct_link(1, 2, hold=40)
    m.set_bridge_ip(3, "10.88.0.203/24")
    m.seed_storm(node=1)
    vm3 = m.vm(3)
    return run(["ip", "netns", "exec", vm3.netns, "ping", "-c", "1", "-W", "1", "10.88.0.1"], check=False)


def keep_asking(netns, ip, seconds):
    """Bounded: one ping a second for `seconds` (each ARPs while unanswered)."""
    return subprocess.Popen(["ip", "netns", "exec", netns, "ping", "-c", str(int(seconds)),
                             "-i", "1", "-W", "1", ip], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
