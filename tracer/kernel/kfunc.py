"""Direct kernel reads for raw-tracepoint programs, through the kfunc
bpf_rdonly_cast() (kernel/bpf/helpers.c, 6.2+).

Why: a raw tracepoint program reads kernel memory with bpf_probe_read_kernel(),
a helper call per field. Where kernel returns go through a mitigation thunk
(AMD's "Safe RET" for SRSO, on this project's CI machine) one call costs 30-35 ns
(measured here: kfree_skb's program 108 -> 70 ns per run with its reads
made plain loads), and kfree_skb runs for every freed packet of the host. A
pointer cast by bpf_rdonly_cast() to a BTF type is "untrusted": the verifier
checks each load against the type and turns it into a plain load with an
exception-table fix-up (BPF_PROBE_MEM), so a faulting read yields 0 as
bpf_probe_read_kernel() would, without the call.

bcc 0.26 cannot emit a kfunc call, so the C code calls a fake helper
(KFUNC_MARK_RDONLY_CAST in brtrace.h) and rewrite_kfunc_calls() turns each
such call into a kfunc call (src_reg BPF_PSEUDO_KFUNC_CALL, imm the kfunc's
vmlinux BTF id) before bcc loads the program. Where the kernel refuses the
kfunc (older than 6.2, or it is not offered to raw tracepoints) the programs
are built with bpf_probe_read_kernel(): rdonly_cast_usable() tries a small
program with the same reads first, and `brtrace doctor` says which.
"""

from __future__ import annotations

import ctypes
import os

from tracer import abi
from tracer.kernel import switches
from tracer.kernel.defines import COMMON_FIELDS, KFUNC, cast_ids

BPF_PROG_TYPE_KPROBE = 2            # include/uapi/linux/bpf.h, stable ABI
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
BPF_PSEUDO_KFUNC_CALL = 2
CALL = 0x85                         # BPF_JMP | BPF_CALL


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return (bytes([code, (src << 4) | dst]) + off.to_bytes(2, "little", signed=True)
            + imm.to_bytes(4, "little", signed=True))


def rewrite_kfunc_calls(insns, marks: dict) -> int:
    """Turn helper calls `call MARK` into kfunc calls `call kfunc id`, in place.

    insns: a writable buffer of 8-byte BPF instructions; marks: {mark: BTF id}.
    Returns how many calls were rewritten. An instruction is only a call if it
    starts on an 8-byte boundary (a 16-byte ld_imm64 never has CALL as its
    second half's opcode: that half's opcode byte is 0)."""
    raw = bytes(insns)      # one copy to scan: indexing a ctypes buffer byte by byte is slow
    n = 0
    for at in range(0, len(raw) - 7, 8):
        if raw[at] != CALL or raw[at + 1] >> 4 != 0:
            continue
        imm = int.from_bytes(raw[at + 4:at + 8], "little", signed=True)
        if imm not in marks:
            continue
        insns[at + 1] = (raw[at + 1] & 0x0F) | (BPF_PSEUDO_KFUNC_CALL << 4)
        insns[at + 2:at + 4] = b"\x00\x00"          # off 0: the kfunc is in vmlinux BTF
        insns[at + 4:at + 8] = marks[imm].to_bytes(4, "little", signed=True)
        n += 1
    return n


def probe_program(ids: dict, offsets: dict) -> bytes:
    """The reads watched() makes (common.bpf.h), cast by cast: sk_buff.dev,
    then net_device.ifindex and .nd_net, then net.ns.inum; returns 0. `ids`
    as defines.cast_ids() gives them, `offsets` by COMMON_FIELDS define names. The
    casts start from NULL: every load then reads 0 (BPF_PROBE_MEM), as the
    verifier allows, and the program is never run anyway."""
    call = _insn(CALL, src=BPF_PSEUDO_KFUNC_CALL, imm=ids["KFUNC_RDONLY_CAST_ID"])
    return b"".join((
        _insn(0xB7, dst=1, imm=0),                                        # r1 = NULL
        _insn(0xB7, dst=2, imm=ids["BTF_ID_SK_BUFF"]),                    # a known constant
        call,                                                             # r0 = (struct sk_buff *)r1
        _insn(0x79, dst=1, src=0, off=offsets["SKB_DEV_OFF"]),            # r1 = skb->dev
        _insn(0xB7, dst=2, imm=ids["BTF_ID_NET_DEVICE"]),
        call,                                                             # r0 = (struct net_device *)r1
        _insn(0xBF, dst=6, src=0),                                        # r6 = r0 (kept across calls)
        _insn(0x61, dst=1, src=6, off=offsets["DEV_IFINDEX_OFF"]),        # r1 = dev->ifindex (u32)
        _insn(0x79, dst=1, src=6, off=offsets["DEV_ND_NET_OFF"]),         # r1 = dev->nd_net.net
        _insn(0xB7, dst=2, imm=ids["BTF_ID_NET"]),
        call,                                                             # r0 = (struct net *)r1
        _insn(0x61, dst=1, src=0, off=offsets["NET_NS_INUM_OFF"]),        # r1 = net->ns.inum (u32)
        _insn(0xB7, dst=0, imm=0),                                        # return 0
        _insn(0x95),
    ))


# The reads probe_program() makes: these COMMON_FIELDS (tracer/kernel/defines.py).
PROBE_FIELDS = ("SKB_DEV_OFF", "DEV_IFINDEX_OFF", "DEV_ND_NET_OFF", "NET_NS_INUM_OFF")


def rdonly_cast_usable(btf, kprobes: bool = False) -> tuple[bool, str]:
    """Will the verifier take bpf_rdonly_cast() in a raw tracepoint program
    (and, where the kernel has kprobes, in a kprobe program: forward.bpf.c
    shares watched())? (yes/no, and why), by loading a program that makes
    watched()'s reads (probe_program()); closed at once, never attached."""
    if "kfunc" in switches.avoided():
        return False, switches.skipped_why()
    ids = cast_ids(btf)
    if ids is None:
        return False, f"kernel BTF has no {KFUNC} (kernel older than 6.2)"
    prog = probe_program(ids, {name: btf.field(struct, path).offset
                               for name, struct, path in COMMON_FIELDS if name in PROBE_FIELDS})
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


def marks() -> dict:
    """{fake helper number: define naming the kfunc's BTF id} as brtrace.h declares them."""
    return {abi.CONST["KFUNC_MARK_RDONLY_CAST"]: "KFUNC_RDONLY_CAST_ID"}
