"""The hook groups, registered once. A group is one C file in bpf/ and one
module here declaring what it reads from the kernel (BTF fields, tracepoint
arguments), its probes and their fallbacks, its maps, its record kinds and
their decoders, and how its maps are read into a snapshot. The loader,
probes, session, monitor and views loop over this registry; views name
groups, not files.

Adding a hook group: bpf/<group>.bpf.c, tracer/hooks/<group>.py (a GROUP),
its entry below, its structs in bpf/brtrace.h and tracer/abi.py, and tests
(tests/unit/test_hooks.py checks that every offset, argument and map the C
uses is declared here).
"""

from __future__ import annotations

from tracer.hooks import drops, fdb, forward, neigh, ports, trace
from tracer.hooks.base import HookGroup

# Order: how `brtrace doctor` lists the probes, and how a snapshot is read
# (ports before forward and fdb, which add to its per-port counters).
REGISTRY: dict[str, HookGroup] = {g.name: g for g in (drops.GROUP, ports.GROUP, forward.GROUP, fdb.GROUP,
                                                       neigh.GROUP, trace.GROUP)}


def groups(names) -> list[HookGroup]:
    return [REGISTRY[n] for n in names]


def sources(names) -> tuple:
    return tuple(REGISTRY[n].source for n in names)


def btf_needs(names) -> tuple:
    """(fields, args) the groups read, for tracer/kernel/defines.py."""
    fields, args = [], []
    for g in groups(names):
        fields += g.fields
        args += g.args
    return tuple(dict.fromkeys(fields)), tuple(dict.fromkeys(args))


def all_maps() -> dict:
    out: dict = {}
    for g in REGISTRY.values():
        out.update(g.maps)
    return out


def all_probes() -> tuple:
    return tuple(h for g in REGISTRY.values() for h in g.probes)


_DECODERS = {kind: dec for g in REGISTRY.values() for kind, dec in g.events.items()}


def parse_event(raw: bytes) -> dict:
    """Any ring-buffer record, by its first byte (bpf/brtrace.h EVENT_*)."""
    if not raw:
        raise ValueError("empty record")
    decoder = _DECODERS.get(raw[0])
    if decoder is None:
        raise ValueError(f"unknown record kind {raw[0]}")
    return decoder(raw)
