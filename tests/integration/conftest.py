"""Integration tier: root, the real kernel, namespaces built by the tests.

Every test builds its own lab (tracer.lab, prefix `brti<N>`), runs the real
`brtrace` CLI in a child process with `-o json --ready-file`, sends a bounded
number of frames, stops brtrace with SIGTERM (by PID) and asserts on its JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracer.lab import Lab

REPO = Path(__file__).resolve().parents[2]
_ids = itertools.count(1)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (scripts/test re-runs under sudo)")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


class Tracer:
    """The real brtrace CLI as a child process; records are its JSON lines."""

    def __init__(self, tmp_path: Path, *args: str, start_timeout: float = 60.0):
        self.ready = tmp_path / f"ready-{next(_ids)}"
        self.argv = [sys.executable, "-m", "tracer.cli", *args, "-o", "json",
                     "--ready-file", str(self.ready)]
        self.proc = subprocess.Popen(self.argv, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + start_timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"brtrace exited early: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("brtrace did not attach in time")
            time.sleep(0.05)
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
            raise AssertionError("brtrace did not exit after the signal")
        self.records = [json.loads(line) for line in out.splitlines() if line.strip()]
        return self.records

    def kind(self, kind: str) -> list:
        return [r for r in self.records if r.get("kind") == kind]

    def drops(self, **match) -> list:
        return [r for r in self.kind("drop") if all(r.get(k) == v for k, v in match.items())]

    def count(self, **match) -> int:
        return sum(r["count"] for r in self.drops(**match))


@pytest.fixture
def lab():
    """A fresh lab (bridge br-int in <prefix>-br, hosts <prefix>-h1/h2)."""
    with Lab(prefix=f"brti{os.getpid() % 1000}x{next(_ids)}", hosts=2) as built:
        yield built


@pytest.fixture
def tracer_factory(tmp_path):
    started = []

    def start(*args: str) -> Tracer:
        t = Tracer(tmp_path, *args)
        started.append(t)
        return t

    yield start
    for t in started:  # a failed test must not leave a brtrace (and its BPF) behind
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.communicate()

