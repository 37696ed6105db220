"""`brtrace doctor`: the kernel features found and the probe each hook uses,
with the reason for every fallback."""

from __future__ import annotations

import os
from pathlib import Path

from tracer.errors import BrtraceError
from tracer.kernel.btf import Btf
from tracer.kernel.features import Features, btf_path, tracefs_root
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.reasons import load_reason_table
from tracer.output import jsonl
from tracer.probes import choose


def facts() -> dict:
    """Everything doctor reports, as plain data (also the JSON record)."""
    if not Path(btf_path()).exists():
        return _facts(Features.probe(), None)
    with Btf(btf_path()) as btf:
        return _facts(Features.probe(btf), btf)


def _facts(f: Features, btf) -> dict:
    out = {"kind": "doctor", "kernel": f.kernel, "root": os.geteuid() == 0,
           "btf": btf_path() if f.btf else None, "tracefs": f.tracefs,
           "kprobes": f.kprobes, "fentry": f.fentry, "tcx": f.tcx,
           "kernel_reads": {"direct": f.direct_reads, "why": f.direct_reads_why}}
    try:
        _headers, out["headers"] = bcc_kernel_source()
    except BrtraceError as exc:
        out["headers"] = f"missing: {exc.oneline()}"
    try:
        import bcc  # noqa: PLC0415 - presence check only, in doctor's short-lived process
        out["bcc"] = getattr(bcc, "__version__", "present")
    except ImportError:
        out["bcc"] = None
    hooks = {}
    if btf is not None:
        try:
            table = load_reason_table(tracefs_root() or "/nonexistent",
                                      btf_enum=lambda: btf.enum("skb_drop_reason"))
            out["drop_reasons"] = f"{len(table)} from {table.source}"
        except BrtraceError as exc:
            out["drop_reasons"] = f"unavailable: {exc.oneline()}"
        for c in choose(f, btf.has_tracepoint):
            hooks[c.hook.name] = {
                "mechanism": c.picked.mechanism if c.picked else None,
                "target": c.picked.target if c.picked else None,
                "required": c.hook.required, "why": c.why}
    out["hooks"] = hooks
    return out


def run_doctor(output: str = "table") -> int:
    data = facts()
    if output == "json":
        jsonl.emit(data)
        return 0
    yes = lambda v: "yes" if v else "no"  # noqa: E731
    print(f"kernel        {data['kernel']}")
    print(f"running as    {'root' if data['root'] else 'non-root (brtrace needs root to trace)'}")
    print(f"BTF           {data['btf'] or 'missing: brtrace cannot run on this kernel'}")
    print(f"tracefs       {data['tracefs'] or 'not mounted (mount -t tracefs tracefs /sys/kernel/tracing)'}")
    print(f"kprobes       {yes(data['kprobes'])}")
    print(f"fentry        {yes(data['fentry'])}")
    print(f"tcx           {yes(data['tcx'])}")
    reads = data["kernel_reads"]
    print("kernel reads  " + ("plain loads through kfunc bpf_rdonly_cast" if reads["direct"] else
                              f"bpf_probe_read_kernel per field (plain loads: {reads['why']})"))
    print(f"bcc           {data['bcc'] or 'missing: run scripts/setup'}")
    print(f"headers       {data['headers']}")
    print(f"drop reasons  {data.get('drop_reasons', 'unavailable (no BTF)')}")
    print("hooks:")
    for name, h in data["hooks"].items():
        how = f"{h['mechanism']} {h['target']}" if h["mechanism"] else "NOT ATTACHABLE"
        tag = "required" if h["required"] else "optional"
        print(f"  {name:<9} {how:<48} ({tag}) {h['why']}")
    return 0
