"""Integration tier: root, the real kernel, namespaces built by the tests.

Every test builds its own lab (lab, prefix `brti<N>`, or BRTRACE_LAB_PREFIX's), runs the real
`brtrace` CLI in a child process with `-o json --ready-file`, sends a bounded
number of frames, stops brtrace with SIGTERM (by PID) and asserts on its JSON.
"""

from __future__ import annotations

import itertools
import os

import pytest

from harness import Tracer, lab_prefix
from lab import Lab
from lab.tinc import TincMesh

_ids = itertools.count(1)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="integration tests need root (scripts/test re-runs under sudo)")
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture
def lab():
    """A fresh lab (bridge br-int in <prefix>-br, hosts <prefix>-h1/h2)."""
    with Lab(prefix=f"{lab_prefix('brti')}{os.getpid() % 1000}x{next(_ids)}", hosts=2) as built:
        yield built


@pytest.fixture
def tracer_factory(tmp_path):
    started = []

    def start(*args: str, env: dict | None = None) -> Tracer:
        t = Tracer(tmp_path, *args, env=env)
        started.append(t)
        return t

    yield start
    for t in started:  # a failed test must not leave a brtrace (and its BPF) behind
        if t.proc.poll() is None:
            t.proc.kill()
            t.proc.communicate()



@pytest.fixture
def mesh():
    """mesh(tag) builds a three-node mesh of real tinc daemons (prefix
    <brtv><pid><tag>: a distinct tag per mesh of a test); all go at the end."""
    built = []

    def make(tag, **kw):
        m = TincMesh(prefix="%s%d%s" % (lab_prefix("brtv"), os.getpid() % 1000, tag), nodes=3, hold=60.0, **kw)
        built.append(m)
        return m.__enter__()

    yield make
    for m in built:
        m.cleanup()
