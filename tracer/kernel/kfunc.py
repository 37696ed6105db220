"""Direct kernel reads for raw-tracepoint programs, through the kfunc
bpf_rdonly_cast() (kernel/bpf/helpers.c, 6.2+).

Why: a raw tracepoint program reads kernel memory with bpf_probe_read_kernel(),
a helper call per field. On CPUs whose kernel returns go through a mitigation
thunk (AMD's "Safe RET" for SRSO, retbleed) one such call costs 30-35 ns
(measured here: kfree_skb's program 108 -> 73 ns per run without its one
read of skb->dev), and kfree_skb runs for every freed packet of the host. A
pointer cast by bpf_rdonly_cast() to a BTF type is "untrusted": the verifier
checks each load against the type and turns it into a plain load with an
exception-table fix-up (BPF_PROBE_MEM), so a faulting read yields 0 as
bpf_probe_read_kernel() would, without the call.

bcc 0.26 cannot emit a kfunc call, so the C code calls a fake helper
(KFUNC_MARK_RDONLY_CAST in brtrace.h) and rewrite_kfunc_calls() turns each
such call into a kfunc call (src_reg BPF_PSEUDO_KFUNC_CALL, imm the kfunc's
vmlinux BTF id) before bcc loads the program. Where the kernel refuses the
kfunc (older than 6.2, or it is not offered to raw tracepoints) the programs
are built with bpf_probe_read_kernel(): rdonly_cast_usable() tries a
six-instruction program first, and `brtrace doctor` says which.
"""

from __future__ import annotations

import ctypes
import os

from tracer import abi

KFUNC = "bpf_rdonly_cast"
BPF_PROG_TYPE_RAW_TRACEPOINT = 17   # include/uapi/linux/bpf.h, stable ABI
BPF_PSEUDO_KFUNC_CALL = 2
CALL = 0x85                         # BPF_JMP | BPF_CALL
# The structs the C code reads through casts (common.bpf.h: skb_dev(), watched()).
CAST_TYPES = {"BTF_ID_SK_BUFF": "sk_buff", "BTF_ID_NET_DEVICE": "net_device", "BTF_ID_NET": "net"}


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return (bytes([code, (src << 4) | dst]) + off.to_bytes(2, "little", signed=True)
            + imm.to_bytes(4, "little", signed=True))


def rewrite_kfunc_calls(insns, marks: dict) -> int:
    """Turn helper calls `call MARK` into kfunc calls `call kfunc id`, in place.

    insns: a writable buffer of 8-byte BPF instructions; marks: {mark: BTF id}.
    Returns how many calls were rewritten. An instruction is only a call if it
    starts on an 8-byte boundary (a 16-byte ld_imm64 never has CALL as its
    second half's opcode: that half's opcode byte is 0)."""
    n = 0
    for at in range(0, len(insns) - 7, 8):
        if insns[at] != CALL or insns[at + 1] >> 4 != 0:
            continue
        imm = int.from_bytes(bytes(insns[at + 4:at + 8]), "little", signed=True)
        if imm not in marks:
            continue
        insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_KFUNC_CALL << 4)
        insns[at + 2:at + 4] = b"\x00\x00"          # off 0: the kfunc is in vmlinux BTF
        insns[at + 4:at + 8] = marks[imm].to_bytes(4, "little", signed=True)
        n += 1
    return n


def probe_program(kfunc_id: int, struct_id: int, load_off: int) -> bytes:
    """r0 = bpf_rdonly_cast(NULL, struct_id); r1 = *(u64 *)(r0 + load_off); return 0."""
    return b"".join((
        _insn(0xB7, dst=1, imm=0),                      # r1 = 0
        _insn(0xB7, dst=2, imm=struct_id),              # r2 = BTF id (a known constant)
        _insn(CALL, src=BPF_PSEUDO_KFUNC_CALL, imm=kfunc_id),
        _insn(0x79, dst=1, src=0, off=load_off),        # r1 = *(u64 *)(r0 + off): BPF_PROBE_MEM
        _insn(0xB7, dst=0, imm=0),                      # r0 = 0
        _insn(0x95),                                    # exit
    ))


def cast_ids(btf) -> dict | None:
    """{define: BTF id} for the kfunc and the cast types, or None if BTF lacks one."""
    from tracer.errors import KernelFeatureError  # noqa: PLC0415
    from tracer.kernel.btf import KIND_FUNC, KIND_STRUCT  # noqa: PLC0415
    try:
        out = {"KFUNC_RDONLY_CAST_ID": btf.find(KFUNC, KIND_FUNC)}
        for define, struct in CAST_TYPES.items():
            out[define] = btf.find(struct, KIND_STRUCT)
    except KernelFeatureError:
        return None
    return out


BPF_PROG_TYPE_KPROBE = 2


def rdonly_cast_usable(btf, kprobes: bool = False) -> tuple[bool, str]:
    """Will the verifier take bpf_rdonly_cast() in a raw tracepoint program
    (and, where the kernel has kprobes, in a kprobe program: decide.bpf.c
    shares watched())? (yes/no, and why), by loading a six-instruction
    program that casts and reads sk_buff.dev; closed at once, never attached."""
    if "kfunc" in _avoided():
        return False, f"skipped (BRTRACE_AVOID={os.environ.get('BRTRACE_AVOID')})"
    ids = cast_ids(btf)
    if ids is None:
        return False, f"kernel BTF has no {KFUNC} (kernel older than 6.2)"
    prog = probe_program(ids["KFUNC_RDONLY_CAST_ID"], ids["BTF_ID_SK_BUFF"],
                         btf.field("sk_buff", "dev").offset)
    try:
        lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    except OSError:
        return False, "libbpf.so.1 not found"
    lib.bpf_prog_load.restype = ctypes.c_int
    lib.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                  ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    types = {"raw tracepoint": BPF_PROG_TYPE_RAW_TRACEPOINT}
    if kprobes:
        types["kprobe"] = BPF_PROG_TYPE_KPROBE
    for what, prog_type in types.items():
        fd = lib.bpf_prog_load(prog_type, b"brt_kfunc_probe", b"GPL", prog, len(prog) // 8, None)
        if fd < 0:
            return False, f"the verifier refused {KFUNC} in a {what} program ({os.strerror(-fd)})"
        os.close(fd)
    return True, "available"


def _avoided() -> set:
    from tracer.probes import avoided  # noqa: PLC0415 - probes imports features, which imports us
    return avoided()


def marks() -> dict:
    """{fake helper number: define naming the kfunc's BTF id} as brtrace.h declares them."""
    return {abi.CONST["KFUNC_MARK_RDONLY_CAST"]: "KFUNC_RDONLY_CAST_ID"}
