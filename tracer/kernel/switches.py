"""Every BRTRACE_* environment switch brtrace reads, and the only place that
reads them.

Each is read when asked, never at import: a test sets one for the brtrace
process it starts, or with monkeypatch for the call it makes. A leaf: it
imports nothing from brtrace.

| switch              | what it does                                                   | who sets it     |
| ------------------- | -------------------------------------------------------------- | --------------- |
| BRTRACE_AVOID       | comma-separated mechanisms not to use: tcx, kprobe, kfunc      | operator, tests |
|                     | (tracer/probes.py, tracer/kernel/kfunc.py; doctor shows each)  |                 |
| BRTRACE_FAULT       | `kfunc-refused`: the loader child aims its kfunc calls at no   | tests only      |
|                     | kernel function, so the rebuild with helper reads runs         |                 |
| BRTRACE_TRACEFS     | the tracefs mount to use instead of looking for one            | tests           |
| BRTRACE_BTF         | the kernel BTF file instead of /sys/kernel/btf/vmlinux         | tests           |
| BRTRACE_CACHE       | the cache directory (merged kernel headers for bcc) instead of | operator        |
|                     | /var/cache/brtrace                                             |                 |
| BRTRACE_LIBVIRT_RUN | libvirt's runtime state directory instead of /run/libvirt/qemu | operator, tests |

Read by the tests and scripts, not by brtrace: BRTRACE_STORM_SECONDS
(tests/integration/test_storm.py), BRTRACE_SKIP_VM (scripts/test),
BRTRACE_VM_RUN (scripts/vm-test).
"""

from __future__ import annotations

import os
from pathlib import Path

AVOID = "BRTRACE_AVOID"
FAULT = "BRTRACE_FAULT"
TRACEFS = "BRTRACE_TRACEFS"
BTF = "BRTRACE_BTF"
CACHE = "BRTRACE_CACHE"
LIBVIRT_RUN = "BRTRACE_LIBVIRT_RUN"

DEFAULT_CACHE = "/var/cache/brtrace"
DEFAULT_LIBVIRT_RUN = "/run/libvirt/qemu"


def avoided() -> set:
    """Mechanisms the operator told brtrace not to use (BRTRACE_AVOID=tcx,kprobe):
    to work around a kernel that misbehaves with one, and to test fallbacks."""
    return {m.strip() for m in os.environ.get(AVOID, "").split(",") if m.strip()}


def skipped_why() -> str:
    """The reason a probe gives for a mechanism BRTRACE_AVOID names."""
    return f"skipped ({AVOID}={os.environ.get(AVOID)})"


def fault(name: str) -> bool:
    """Is the test-only fault `name` (BRTRACE_FAULT=name) asked for?"""
    return os.environ.get(FAULT) == name


def tracefs() -> str | None:
    """The tracefs mount BRTRACE_TRACEFS names (None: look for one)."""
    return os.environ.get(TRACEFS) or None


def btf(default: str) -> str:
    """The kernel BTF file: BRTRACE_BTF, else `default`."""
    return os.environ.get(BTF, default)


def cache_dir() -> Path:
    """Where brtrace keeps what it prepares once (merged kernel headers)."""
    return Path(os.environ.get(CACHE, DEFAULT_CACHE))


def libvirt_run() -> Path:
    """libvirt's runtime state: one <domain>.xml per running VM."""
    return Path(os.environ.get(LIBVIRT_RUN, DEFAULT_LIBVIRT_RUN))
