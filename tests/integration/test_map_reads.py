"""Map.used(): the sparse batched read of the set-associative target tables,
on real kernel array maps made here (no program, no lab)."""

from __future__ import annotations

import ctypes
import os

import pytest

from tracer import abi
from tracer.kernel.bpfmaps import Map, lib

pytestmark = pytest.mark.integration

BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6


def make_map(value, entries: int, kind: int = BPF_MAP_TYPE_ARRAY) -> Map:
    create = lib().bpf_map_create
    create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                       ctypes.c_uint32, ctypes.c_void_p]
    create.restype = ctypes.c_int
    fd = create(kind, b"brt_test", 4, ctypes.sizeof(value), entries, None)
    if fd < 0:
        pytest.fail(f"bpf_map_create: {os.strerror(ctypes.get_errno())}")
    return Map("test", fd, ctypes.c_uint32, value)


def test_used_returns_exactly_the_slots_whose_field_is_set():
    m = make_map(abi.ArpTarget, abi.CONST.get("ARP_TARGETS_MAX", 4096))
    try:
        # the first slot, one in the middle, the last; one with a zero ip but counts
        set_slots = {0: 0x0100000A, 1234: 0x0200000A, m.max_entries - 1: 0xC8C8A8C0}
        for slot, ip in set_slots.items():
            m.set(slot, abi.ArpTarget(ip=ip, requests=slot + 1, replies=7))
        m.set(77, abi.ArpTarget(ip=0, requests=5))
        got = {k.value: (v.ip, v.requests, v.replies) for k, v in m.used("ip")}
        assert got == {slot: (ip, slot + 1, 7) for slot, ip in set_slots.items()}
        # the same as the full read, filtered
        full = {k.value: (v.ip, v.requests, v.replies) for k, v in m.items() if v.ip}
        assert got == full
    finally:
        os.close(m.fd)


def test_used_on_an_array_field_and_on_a_per_cpu_map():
    m = make_map(abi.NdpTarget, 64)
    try:
        addr = (ctypes.c_uint8 * 16)(*([0] * 15 + [1]))      # ::1, one non-zero byte at the end
        m.set(63, abi.NdpTarget(addr=addr, solicits=3))
        assert [(k.value, v.solicits, bytes(v.addr)[-1]) for k, v in m.used("addr")] == [(63, 3, 1)]
    finally:
        os.close(m.fd)
    # per-CPU values are lists: used() falls back to items() and keeps only set entries
    pc = make_map(abi.ArpTarget, 8, BPF_MAP_TYPE_PERCPU_ARRAY)
    try:
        assert pc.used("ip") == []
    finally:
        os.close(pc.fd)
