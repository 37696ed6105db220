"""tracer.kernel.btf (libbpf via ctypes) against an independent reading of the
same kernel's BTF: `bpftool btf dump format raw`, parsed here by hand."""

import re
import shutil
import subprocess
from functools import lru_cache

import pytest

from tracer.errors import KernelFeatureError
from tracer.kernel.btf import VMLINUX_BTF, Btf
from tracer.hooks import REGISTRY, btf_needs
from tracer.hooks.drops import ARGS as ARG_DEFINES
from tracer.kernel.defines import COMMON_FIELDS, kernel_defines

# Every field any hook group reads, and common.bpf.h's.
FIELD_DEFINES = tuple(dict.fromkeys(COMMON_FIELDS + btf_needs(REGISTRY)[0]))

pytestmark = pytest.mark.skipif(not shutil.which("bpftool"), reason="bpftool missing (scripts/setup installs it)")

TYPE_RE = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
MEMBER_RE = re.compile(r"^\s+'([^']*)' type_id=(\d+)(?: bits_offset=(\d+))?")


@lru_cache(maxsize=1)
def bpftool_types():
    """id -> (kind, name, attrs, [(member, type_id, bits_offset)])."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX_BTF, "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    types, cur = {}, None
    for line in out.splitlines():
        m = TYPE_RE.match(line)
        if m:
            cur = types[int(m.group(1))] = (m.group(2), m.group(3), m.group(4), [])
            continue
        m = MEMBER_RE.match(line)
        if m and cur is not None:
            cur[3].append((m.group(1), int(m.group(2)), int(m.group(3) or 0)))
    return types


def bpftool_offset(struct, path):
    types = bpftool_types()
    tid = next(i for i, t in types.items() if t[0] == "STRUCT" and t[1] == struct)
    total = 0
    for part in path.split("."):
        found = _find(types, tid, part)
        assert found, (struct, path)
        tid, bits = found
        total += bits
    return total // 8


def _find(types, tid, name):
    while types[tid][0] in ("TYPEDEF", "CONST", "VOLATILE"):
        tid = int(re.search(r"type_id=(\d+)", types[tid][2]).group(1))
    for member, mtype, bits in types[tid][3]:
        if member == name:
            return mtype, bits
        if member == "(anon)":
            inner = _find(types, mtype, name)
            if inner:
                return inner[0], bits + inner[1]
    return None


@pytest.fixture(scope="module")
def btf():
    with Btf() as b:
        yield b


@pytest.mark.parametrize("define, struct, path", FIELD_DEFINES)
def test_field_offsets_agree_with_bpftool(btf, define, struct, path):
    assert btf.field(struct, path).offset == bpftool_offset(struct, path), define


def test_kfree_skb_argument_positions_agree_with_bpftool(btf):
    types = bpftool_types()
    td = next(i for i, t in types.items() if t[0] == "TYPEDEF" and t[1] == "btf_trace_kfree_skb")
    ptr = int(re.search(r"type_id=(\d+)", types[td][2]).group(1))
    proto = int(re.search(r"type_id=(\d+)", types[ptr][2]).group(1))
    params = [tid for _n, tid, _b in types[proto][3]][1:]   # drop `void *__data`
    kinds = [types[t][0] + ":" + (types[types_id_of(types, t)][1] if types[t][0] == "PTR" else types[t][1])
             for t in params]
    defines = kernel_defines(btf, args=ARG_DEFINES)
    assert kinds[defines["ARG_SKB"]] == "PTR:sk_buff"
    assert kinds[defines["ARG_REASON"]] in ("ENUM:skb_drop_reason", "ENUM64:skb_drop_reason")
    assert types[params[defines["ARG_LOCATION"]]][0] == "PTR"
    assert len({defines[n] for n, _tp, _t in ARG_DEFINES}) == len(ARG_DEFINES)


def types_id_of(types, ptr_id):
    tid = int(re.search(r"type_id=(\d+)", types[ptr_id][2]).group(1))
    return tid if tid else ptr_id


def test_drop_reason_enum_matches_bpftool(btf):
    types = bpftool_types()
    tid = next(i for i, t in types.items() if t[0] in ("ENUM", "ENUM64") and t[1] == "skb_drop_reason")
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX_BTF, "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    block = out.split(f"[{tid}] ", 1)[1].split("\n[", 1)[0]
    want = {m.group(1): int(m.group(2)) for m in re.finditer(r"'(SKB_DROP_REASON_\w+)' val=(-?\d+)", block)}
    got = {k: v for k, v in btf.enum("skb_drop_reason").items() if k in want}
    assert got == want and len(want) > 50


def test_missing_member_is_a_clear_error(btf):
    with pytest.raises(KernelFeatureError, match="no member 'no_such_field'"):
        btf.field("sk_buff", "no_such_field")


def test_missing_btf_file_is_a_clear_error(tmp_path):
    with pytest.raises(KernelFeatureError, match="no BTF"):
        Btf(str(tmp_path / "vmlinux"))
