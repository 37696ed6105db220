"""Declared hooks (by the hook groups, tracer/hooks/), each with an ordered
list of ways to attach it.

A hook says what it wants to see; its candidates say how, best first. The
choice is made once from the probed Features and shown by `brtrace doctor`, in
the output header and as brtrace_probe_attached{probe=...}. A missing optional
hook is a warning; a missing required one is an error that says why.
"""

from __future__ import annotations

import os

from tracer.hooks import all_probes
from tracer.hooks.base import Candidate, Choice, Hook  # noqa: F401 - re-exported: the probe vocabulary
from tracer.kernel import switches
from tracer.kernel.features import Features, kernel_symbol_modules


# Every hook any group declares (tracer/hooks/), in the registry's order.
HOOKS = all_probes()


def usable(c: Candidate, f: Features, has_tracepoint) -> tuple[bool, str]:
    """Can candidate `c` attach on this kernel? (yes/no, and the reason)."""
    if c.mechanism in switches.avoided():
        return False, switches.skipped_why()
    if c.mechanism == "reconstructed":
        return True, "available"
    if c.mechanism == "tcx":
        return (f.tcx, "available" if f.tcx else "kernel has no tcx (BPF_TCX_INGRESS, 6.6+)")
    if not c.implemented:
        # bcc 0.26 cannot attach fentry to module functions (the bridge is a
        # module on Debian-like kernels), and no kernel we test on offers
        # fentry with the bridge built in: an untested path is not shipped.
        return False, "not implemented (kprobes serve the same purpose)"
    if c.mechanism == "raw_tracepoint":
        missing = [tp for tp in c.target.split("+") if not has_tracepoint(tp)]
        return (not missing, "available" if not missing else f"no tracepoint {missing[0]}")
    # The cheap capability checks before a pass over /proc/kallsyms (~0.1 s).
    if c.mechanism == "kprobe" and not f.kprobes:
        return False, "kernel has no kprobes"
    if c.mechanism == "fentry" and not f.fentry:
        return False, "kernel refuses BPF tracing programs (no fentry)"
    modules = kernel_symbol_modules(c.target.split("+"))
    missing = [t for t, m in modules.items() if m is None]
    if missing:
        if missing[0].startswith("br_") and not os.path.isdir("/sys/module/bridge"):
            return False, "bridge module not loaded yet (no bridge exists); rerun once one does"
        return False, f"{missing[0]} not in /proc/kallsyms"
    module = next((m for m in modules.values() if m), "")
    if c.mechanism == "fentry":
        if module:
            return False, f"{c.target} is in module {module}; bcc cannot fentry module functions"
        return True, "available"
    if c.mechanism == "kprobe":
        return True, "available"
    return False, f"unknown mechanism {c.mechanism}"


def choose(features: Features, has_tracepoint) -> list[Choice]:
    """Pick the first usable candidate of every hook."""
    out = []
    for hook in HOOKS:
        reasons = []
        for cand in hook.candidates:
            ok, why = usable(cand, features, has_tracepoint)
            if ok:
                fallback = f" (fallback: {'; '.join(reasons)})" if reasons else ""
                out.append(Choice(hook, cand, why + fallback))
                break
            reasons.append(f"{cand.mechanism} {cand.target}: {why}")
        else:
            out.append(Choice(hook, None, "; ".join(reasons)))
    return out
