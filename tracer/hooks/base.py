"""What a hook group declares (tracer/hooks/<group>.py), and the probe
declarations it carries: a Hook says what it wants to see, its Candidates how
to attach it, best first (tracer/probes.py picks one per kernel).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Candidate:
    mechanism: str   # "fentry", "kprobe", "tcx", "raw_tracepoint", "reconstructed"
    target: str      # kernel functions or tracepoints, joined by "+"
    note: str = ""
    implemented: bool = True


@dataclass(frozen=True)
class Hook:
    name: str
    purpose: str
    required: bool
    candidates: tuple


@dataclass(frozen=True)
class Choice:
    hook: Hook
    picked: Candidate | None
    why: str          # why this candidate (or why none)


@dataclass(frozen=True)
class HookGroup:
    """One bpf/<source> and everything userspace must know about it."""

    name: str
    source: str                      # its file in bpf/
    # The probe hook whose picked mechanism this group's programs implement
    # (tracer/probes.py); `probes` are the Hooks this group declares.
    hook: str
    probes: tuple = ()
    # What the C reads from the kernel, located through BTF (-D defines,
    # tracer/kernel/defines.py): (define, struct, member path) and
    # (define, raw tracepoint, argument type or its spellings).
    fields: tuple = ()
    args: tuple = ()
    # The maps userspace reads or writes: name -> (key, value) ctypes types
    # (per-CPU maps: one CPU's value); bpfmaps.Map checks them at load.
    maps: dict = field(default_factory=dict)
    # Ring-buffer record kinds (EVENT_* of bpf/brtrace.h) -> decoder(bytes) -> dict.
    events: dict = field(default_factory=dict)
    # Raw tracepoints its programs attach when not on tcx (BridgeRun.set_detail).
    tracepoints: tuple = ()
    # Its maps into a Monitor's snapshot: read(monitor, snap) fills `snap`.
    read: Optional[Callable] = None
