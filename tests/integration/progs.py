"""Which BPF programs a brtrace process holds, and waiting for them to go.
Shared by the integration tests (tests/integration is on pytest's pythonpath)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


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


def wait_unloaded(ids: set, timeout: float = 10.0) -> set:
    """Wait (bounded) until none of `ids` is loaded; returns those still loaded."""
    deadline = time.monotonic() + timeout
    while True:
        left = ids & loaded_prog_ids()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
