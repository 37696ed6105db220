"""The hook-group registry (tracer/hooks/) against the C it describes: what
each bpf/<group>.bpf.c reads, attaches, keeps and sends must be declared by
its group, so no offset, argument position, map or record kind is wired by
hand somewhere else. No root, no compiler: the C is read as text (with our
own headers expanded, as the loader assembles it)."""

import re

import pytest

from tracer import abi
from tracer.hooks import REGISTRY, all_maps, all_probes, btf_needs, parse_event, sources
from tracer.kernel.defines import COMMON_FIELDS
from tracer.program import assemble
from tracer.trace_abi import CONST as TRACE_CONST

GROUPS = sorted(REGISTRY)


def c_text(group) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", assemble([group.source]), flags=re.S)


def defined_in_c(text: str) -> set:
    return set(re.findall(r"^\s*#\s*(?:define|ifndef)\s+([A-Z][A-Z0-9_]*)", text, re.M))


@pytest.mark.parametrize("name", GROUPS)
def test_every_offset_and_argument_the_c_uses_is_declared(name):
    g = REGISTRY[name]
    text = c_text(g)
    used = set(re.findall(r"\b([A-Z][A-Z0-9_]*_OFF|ARG_[A-Z0-9_]+)\b", text)) - defined_in_c(text)
    declared = {d for d, _s, _p in COMMON_FIELDS + g.fields} | {d for d, _tp, _t in g.args}
    assert used <= declared, f"{g.source} uses {sorted(used - declared)} that tracer/hooks/{name}.py does not declare"
    # and nothing declared that the C never reads (a stale declaration costs a BTF lookup and misleads)
    own = {d for d, _s, _p in g.fields} | {d for d, _tp, _t in g.args}
    assert own <= used, f"tracer/hooks/{name}.py declares {sorted(own - used)} that {g.source} never uses"


@pytest.mark.parametrize("name", GROUPS)
def test_every_declared_map_is_one_of_the_c(name):
    g = REGISTRY[name]
    text = c_text(g)
    in_c = set(re.findall(r"\bBPF_[A-Z_]+\(\s*([a-z_][a-z0-9_]*)\s*,", text))
    in_c |= set(re.findall(r"\bBPF_TABLE\(\s*\"[a-z_]+\"\s*,[^,]+,[^,]+,\s*([a-z_][a-z0-9_]*)\s*,", text))
    assert set(g.maps) <= in_c, f"{g.source} defines no {sorted(set(g.maps) - in_c)}"
    assert abi.EVENTS_MAP in in_c or name == "forward", f"{g.source} has no events ring buffer"


@pytest.mark.parametrize("name", GROUPS)
def test_tracepoints_and_record_kinds_match_the_c(name):
    g = REGISTRY[name]
    text = c_text(g)
    attached = set(re.findall(r"RAW_TRACEPOINT_PROBE\((\w+)\)", text))
    assert attached == set(g.tracepoints), (sorted(attached), g.tracepoints)
    kinds = {**abi.CONST, **TRACE_CONST}
    sent = {kinds[k] for k in re.findall(r"\b(EVENT_[A-Z]+)\b", text) if k in kinds and k != "EVENT_KINDS"}
    assert sent == set(g.events), f"{g.source} sends kinds {sorted(sent)}, decoders for {sorted(g.events)}"


def test_maps_are_declared_once_with_one_type():
    seen: dict = {}
    for g in REGISTRY.values():
        for m, types in g.maps.items():
            assert seen.setdefault(m, types) == types, m
    assert set(all_maps()) == set(seen)


def test_hooks_are_declared_once_and_every_group_names_one():
    names = [h.name for h in all_probes()]
    assert len(names) == len(set(names)) and names[0] == "drops"
    for g in REGISTRY.values():
        assert g.hook in names, g.name
    assert sources(["drops", "ports"]) == ("drops.bpf.c", "ports.bpf.c")
    fields, args = btf_needs(["fdb", "forward"])
    assert [d for d, _s, _p in fields].count("BRPORT_DEV_OFF") == 1


def test_unknown_record_kinds_are_refused():
    with pytest.raises(ValueError):
        parse_event(b"")
    with pytest.raises(ValueError, match="unknown record kind 200"):
        parse_event(bytes([200]) + bytes(64))
