"""What to compile: brtrace's hook-group C files (bpf/<group>.bpf.c), put
together into the one text bcc compiles, and the -D defines that specialise it
for the running kernel (tracer/kernel/defines.py) and the run.

Built in brtrace, compiled in the loader child (tracer/loader_child.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracer import abi


@dataclass(frozen=True)
class Program:
    """What to compile: hook-group files from bpf/ and the defines for them."""

    sources: tuple          # e.g. ("drops.bpf.c",)
    defines: dict           # name -> int


_LOCAL_INCLUDE = re.compile(r'^#include "([a-z_]+\.bpf\.[ch])"\s*$', re.M)


def assemble(sources, bpf_dir=abi.BPF_DIR) -> str:
    """One C text from hook-group files, with our own `*.bpf.h` includes
    expanded in place (each once). bcc rewrites map calls such as
    `watch.lookup(&k)` only in the main text, not in #included files, so the
    shared helpers must be part of it. brtrace.h (plain types) stays an include.
    """
    seen: set = set()

    def expand(name: str) -> str:
        if name in seen:
            return ""
        seen.add(name)
        body = (bpf_dir / name).read_text()
        return _LOCAL_INCLUDE.sub(lambda m: expand(m.group(1)), body)

    return "\n".join(expand(src) for src in sources)
