"""What this kernel lets brtrace do, probed once and reported by `brtrace doctor`.

Nothing here loads a BPF program through bcc: kprobe support is read from the
perf PMU list and tracefs, fentry support from libbpf's program-type probe,
direct kernel reads from a small program loaded and closed at once
(tracer/kernel/kfunc.py).
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from tracer.kernel import switches
from tracer.kernel.btf import VMLINUX_BTF
from tracer.kernel.kfunc import rdonly_cast_usable
from tracer.kernel.tcx import attach_types

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BPF_PROG_TYPE_TRACING = 26  # include/uapi/linux/bpf.h, stable ABI


def tracefs_root() -> str | None:
    """Where tracefs is mounted (BRTRACE_TRACEFS overrides, for tests)."""
    override = switches.tracefs()
    candidates = (override,) if override else TRACEFS_CANDIDATES
    for root in candidates:
        if os.path.isdir(os.path.join(root, "events")):
            return root
    return None


def btf_path() -> str:
    """The running kernel's BTF (BRTRACE_BTF overrides, for tests)."""
    return switches.btf(VMLINUX_BTF)


CLOCK_MONOTONIC_COARSE = 6   # include/uapi/linux/time.h, stable ABI


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def jiffy_ns() -> int:
    """The kernel's tick (1/HZ) in ns: the coarse clocks' resolution is one
    tick (TICK_NSEC, kernel/time/posix-timers.c). The BPF flood table ages
    entries in jiffies (ports.bpf.c)."""
    ts = _Timespec()
    if ctypes.CDLL(None).clock_getres(CLOCK_MONOTONIC_COARSE, ctypes.byref(ts)) != 0 \
            or not 0 < ts.tv_nsec <= 10_000_000 or ts.tv_sec:
        return 4_000_000      # not seen on Linux; HZ 250, the most common setting
    return ts.tv_nsec


def kprobes_available() -> bool:
    """kprobes need CONFIG_KPROBES: the perf `kprobe` PMU or tracefs kprobe_events."""
    if os.path.isdir("/sys/bus/event_source/devices/kprobe"):
        return True
    root = tracefs_root()
    return bool(root) and os.path.exists(os.path.join(root, "kprobe_events"))


def fentry_available() -> bool:
    """Can BPF programs of type `tracing` (fentry/fexit) load here? libbpf's probe
    loads a trivial one; kernels without a BPF trampoline refuse it."""
    try:
        lib = ctypes.CDLL("libbpf.so.1")
        return lib.libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACING, None) == 1
    except (OSError, AttributeError):
        return False


def kernel_symbol_modules(symbols, kallsyms: str = "/proc/kallsyms") -> dict:
    """symbol -> '' if built into vmlinux, the module name if it lives in one,
    None if absent; one pass over kallsyms. bcc 0.26 cannot attach fentry to
    module functions (its KFUNC_PROBE looks only in vmlinux BTF), so this
    decides fentry vs kprobe."""
    out = {s: None for s in symbols}
    left = set(out)
    try:
        with open(kallsyms) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] in left and parts[1] in "tT":
                    out[parts[2]] = parts[3].strip("[]") if len(parts) > 3 else ""
                    left.discard(parts[2])
                    if not left:
                        break
    except OSError:
        pass
    return out


@dataclass(frozen=True)
class Features:
    kernel: str
    btf: bool
    tracefs: str | None
    kprobes: bool
    fentry: bool
    raw_tracepoints: bool
    tcx: bool = False
    direct_reads: bool = False      # bpf_rdonly_cast() (tracer/kernel/kfunc.py)
    direct_reads_why: str = "no BTF"

    @classmethod
    def probe(cls, btf=None) -> "Features":
        """`btf`: an open Btf of the running kernel, to tell whether it has tcx
        (its enum bpf_attach_type names BPF_TCX_INGRESS) and whether the
        verifier takes bpf_rdonly_cast(); without one, neither."""
        kprobes = kprobes_available()
        direct, why = rdonly_cast_usable(btf, kprobes) if btf is not None else (False, "no BTF")
        return cls(kernel=platform.release(), btf=Path(btf_path()).exists(),
                   tracefs=tracefs_root(), kprobes=kprobes,
                   fentry=fentry_available(),
                   # raw tracepoints arrived in 4.17; BTF-typed ones are what we use
                   raw_tracepoints=Path(btf_path()).exists(),
                   tcx=btf is not None and attach_types(btf) is not None,
                   direct_reads=direct, direct_reads_why=why)
