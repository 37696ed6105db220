"""The ctypes mirror in tracer/abi.py must agree with bpf/brtrace.h byte for byte."""

import shutil
import subprocess

import pytest

from tracer import abi, trace_abi


# Each C header of the ABI with its ctypes mirror.
MIRRORS = [(abi.HEADER, abi.STRUCTS), (trace_abi.HEADER, trace_abi.STRUCTS)]   # one header, two mirrors


def _c_layout(tmp_path, header, structs):
    """Compile a probe against the real header and print sizeof/offsetof."""
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include <linux/types.h>',
             f'#include "{header}"', "int main(void) {"]
    for cname, cls in structs.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for field, _t in cls._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof(struct {cname}, {field}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-o", str(exe), str(src)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}


@pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler")
@pytest.mark.parametrize("header, structs", MIRRORS, ids=["brtrace", "trace"])
def test_struct_layouts_match_header(tmp_path, header, structs):
    c = _c_layout(tmp_path, header, structs)
    for cname, cls in structs.items():
        assert c[(cname, "size")] == abi.ctypes.sizeof(cls), cname
        for field, _t in cls._fields_:
            assert c[(cname, field)] == getattr(cls, field).offset, (cname, field)


def test_constants_come_from_header():
    assert abi.CONST["EVENT_DROP"] == 1
    assert abi.FRAME_BYTES == abi.CONST["FRAME_BYTES"] >= 64
    # Stat slots must fit the array the BPF side declares.
    stats = [v for k, v in abi.CONST.items() if k.startswith("STAT_") and k != "STAT_SLOTS"]
    assert max(stats) < abi.CONST["STAT_SLOTS"]


def test_bytes_counters_follow_their_packet_counters():
    """ports.bpf.c's hit_count() counts bytes at `packets + 1`."""
    c = abi.CONST
    assert c["PC_RX_BYTES"] == c["PC_RX_PACKETS"] + 1
    assert c["PC_TX_BYTES"] == c["PC_TX_PACKETS"] + 1
    assert max(v for k, v in c.items() if k.startswith("PC_")) < c["PORT_COUNTERS"]
    assert max(v for k, v in c.items() if k.startswith("DEC_")) < c["DECISIONS"]


def test_ndp_counts_are_the_ndp_target_counters():
    """maps.ndp_targets() adds these up over the ways of one address."""
    u64 = [name for name, t in abi.NdpTarget._fields_ if t is abi.ctypes.c_uint64]
    assert list(abi.NDP_COUNTS) == u64
