"""The rewrite of fake-helper calls into kfunc calls, and the probe program
(tracer/kernel/kfunc.py): pure byte work, no kernel."""

from tracer import abi
from tracer.kernel import kfunc
from tracer.kernel.features import jiffy_ns

MARK = abi.CONST["KFUNC_MARK_RDONLY_CAST"]


def insn(code, dst=0, src=0, off=0, imm=0) -> bytes:
    return kfunc._insn(code, dst, src, off, imm)


def fields(raw: bytes, at: int) -> tuple:
    """(code, dst, src, off, imm) of the instruction at byte `at`."""
    return (raw[at], raw[at + 1] & 0xF, raw[at + 1] >> 4,
            int.from_bytes(raw[at + 2:at + 4], "little", signed=True),
            int.from_bytes(raw[at + 4:at + 8], "little", signed=True))


def test_marked_helper_calls_become_kfunc_calls_and_nothing_else_changes():
    prog = b"".join((
        insn(0xB7, dst=2, imm=873),                 # r2 = BTF id
        insn(kfunc.CALL, imm=MARK),                 # call MARK -> kfunc
        insn(kfunc.CALL, imm=1),                    # a real helper (map lookup)
        insn(kfunc.CALL, src=1, imm=MARK),          # a BPF-to-BPF call: not ours
        insn(0x18, dst=1, imm=MARK), insn(0, imm=0),  # ld_imm64 of the number
        insn(kfunc.CALL, imm=MARK),
        insn(0x95),
    ))
    buf = bytearray(prog)
    assert kfunc.rewrite_kfunc_calls(buf, {MARK: 65425}) == 2
    for at in (8, 48):
        assert fields(buf, at) == (kfunc.CALL, 0, kfunc.BPF_PSEUDO_KFUNC_CALL, 0, 65425)
    changed = {at for at in range(0, len(buf), 8) if buf[at:at + 8] != prog[at:at + 8]}
    assert changed == {8, 48}


def test_unknown_marks_and_trailing_bytes_are_left_alone():
    buf = bytearray(insn(kfunc.CALL, imm=MARK + 1) + b"\x85\x00\x00")
    before = bytes(buf)
    assert kfunc.rewrite_kfunc_calls(buf, {MARK: 7}) == 0
    assert bytes(buf) == before


IDS = {"KFUNC_RDONLY_CAST_ID": 65425, "BTF_ID_SK_BUFF": 873, "BTF_ID_NET_DEVICE": 3094,
       "BTF_ID_NET": 4000}
OFFSETS = {"SKB_DEV_OFF": 16, "DEV_IFINDEX_OFF": 224, "DEV_ND_NET_OFF": 280, "NET_NS_INUM_OFF": 172}


def test_probe_program_makes_the_reads_watched_makes_cast_by_cast():
    raw = kfunc.probe_program(IDS, OFFSETS)
    insns = [fields(raw, at) for at in range(0, len(raw), 8)]
    calls = [i for i, f in enumerate(insns) if f[0] == kfunc.CALL]
    assert all(insns[i] == (kfunc.CALL, 0, kfunc.BPF_PSEUDO_KFUNC_CALL, 0, 65425) for i in calls)
    # before each cast, r2 holds the type it casts to; after it, a load through r0 (or r6 = r0)
    assert [insns[i - 1] for i in calls] == [(0xB7, 2, 0, 0, t) for t in (873, 3094, 4000)]
    loads = [(f[0], f[3]) for f in insns if f[0] in (0x61, 0x79)]
    assert loads == [(0x79, 16), (0x61, 224), (0x79, 280), (0x61, 172)]
    assert insns[-1][0] == 0x95 and insns[-2] == (0xB7, 0, 0, 0, 0)


def test_marks_name_the_define_that_carries_the_kfunc_id():
    assert kfunc.marks() == {MARK: "KFUNC_RDONLY_CAST_ID"}
    assert MARK > 1000          # far above every real helper number


def test_jiffy_is_one_of_the_kernels_tick_lengths():
    # HZ is 100, 250, 300 or 1000 (kernel/Kconfig.hz): the tick is 1e9 / HZ ns.
    assert jiffy_ns() in {10_000_000, 4_000_000, 3_333_333, 1_000_000}
