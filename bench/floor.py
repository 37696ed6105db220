"""The bench's floor: a counting-only BPF program (bench/floor.bpf.c) on the
hooks a view uses, run as a child (python -m bench --floor-child TP,TP ...)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time
from pathlib import Path
from typing import List, Optional, Sequence

from tracer.kernel.btf import Btf
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.tcx import DIRECTIONS, TcxLinks, attach_types

FLOOR_SRC = Path(__file__).resolve().parent / "floor.bpf.c"
FLOOR_MAX_TRACEPOINTS = 12    # floor_tp0 .. floor_tp11 in floor.bpf.c


def floor_cflags(tracepoints: Sequence[str], tcx: bool = False) -> List[str]:
    """The -D defines that specialise floor.bpf.c: each raw tracepoint counts in
    its own slot of a per-CPU array (program floor_tp<i>, slot i); with tcx, two
    sched_cls programs (floor_ingress, floor_egress) the next two."""
    for tp in tracepoints:
        if not tp.replace("_", "").isalnum():
            raise ValueError(f"bad tracepoint name {tp!r}")
    if len(tracepoints) > FLOOR_MAX_TRACEPOINTS:
        raise ValueError(f"at most {FLOOR_MAX_TRACEPOINTS} tracepoints (got {len(tracepoints)})")
    return [f"-DFLOOR_TRACEPOINTS={len(tracepoints)}", f"-DFLOOR_TCX={1 if tcx else 0}"]


def parse_tcx_spec(spec: Optional[str]) -> Optional[tuple]:
    """"NETNS_PATH:IFINDEX,IFINDEX" -> (path, [ifindex, ...]); None for none."""
    if not spec:
        return None
    path, _, ifindexes = spec.rpartition(":")
    return path, [int(i) for i in ifindexes.split(",") if i]



def floor_child(tracepoints: List[str], ready_file: str, hold: float, tcx_spec: Optional[str] = None) -> int:
    """Load the floor program, write READY_FILE, wait for SIGTERM (or `hold`
    seconds), print {"hits": {hook: n}} and detach. With tcx_spec, its two tc
    programs are linked to those devices like brtrace's port programs."""
    headers, _note = bcc_kernel_source()
    if headers is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)
    import bcc  # noqa: PLC0415 - only this child loads BPF

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    tcx = parse_tcx_spec(tcx_spec)
    tracepoints = [tp for tp in tracepoints if tp]
    b = bcc.BPF(src_file=str(FLOOR_SRC), cflags=floor_cflags(tracepoints, tcx=tcx is not None))
    links = None
    hooks = list(tracepoints)
    try:
        for i, tp in enumerate(tracepoints):
            b.attach_raw_tracepoint(tp=tp, fn_name=f"floor_tp{i}")
        if tcx is not None:
            with Btf() as btf:
                types = attach_types(btf)
            fds = {d: b.load_func(f"floor_{d}", bcc.BPF.SCHED_CLS).fd for d in DIRECTIONS}
            links = TcxLinks(fds, types, tcx[0])
            links.sync(tcx[1])
            hooks += [f"tcx_{d}" for d in DIRECTIONS]
        with open(ready_file, "w") as f:
            f.write(f"{os.getpid()}\n")
        end = time.monotonic() + hold
        while not stop and time.monotonic() < end:
            time.sleep(0.05)
        table = b["hits"]
        hits = {hook: sum(table[ctypes.c_int(i)]) for i, hook in enumerate(hooks)}
        print(json.dumps({"kind": "floor", "hits": hits}), flush=True)
    finally:
        if links is not None:
            links.close()
        b.cleanup()
    return 0

