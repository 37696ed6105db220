"""The bpf(2) system call for the few commands bcc 0.26 does not offer.

Command numbers are the stable uapi (include/uapi/linux/bpf.h); attach types
that arrived recently (tcx) are taken from the running kernel's BTF by the
caller. Only plain integers cross this boundary.
"""

from __future__ import annotations

import ctypes
import os
import platform

# __NR_bpf per architecture (arch/*/entry/syscalls, stable).
SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_ENABLE_STATS = 32
ATTR_SIZE = 64          # large enough for every command used here; the rest is zero

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def bpf(cmd: int, fields: dict) -> int:
    """bpf(cmd, attr) with attr's u32 fields set at the given byte offsets
    ({offset: value}); returns the result (a file descriptor), or raises OSError."""
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError(0, f"no bpf syscall number known for {platform.machine()}")
    attr = (ctypes.c_uint8 * ATTR_SIZE)()
    for offset, value in fields.items():
        ctypes.c_uint32.from_buffer(attr, offset).value = value
    lib = _lib()
    fd = lib.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(ATTR_SIZE))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def link_create(prog_fd: int, target_ifindex: int, attach_type: int) -> int:
    """A bpf_link of a program to a device (attr.link_create: prog_fd at 0,
    target_ifindex at 4, attach_type at 8, flags 0, tcx relative/revision 0:
    append after the programs already there)."""
    return bpf(BPF_LINK_CREATE, {0: prog_fd, 4: target_ifindex, 8: attach_type})


def raw_tracepoint_open(name: str, prog_fd: int) -> int:
    """Attach a loaded raw-tracepoint program (attr.raw_tracepoint: the
    name's address as a u64 at 0, prog_fd at 8); the returned fd holds the
    attachment until closed."""
    buf = ctypes.create_string_buffer(name.encode())
    addr = ctypes.addressof(buf)
    return bpf(BPF_RAW_TRACEPOINT_OPEN, {0: addr & 0xFFFFFFFF, 4: addr >> 32, 8: prog_fd})


def enable_stats(kind: int = 0) -> int:
    """Hold the kernel's BPF run-time statistics on (BPF_STATS_RUN_TIME = 0)
    until the returned fd is closed."""
    return bpf(BPF_ENABLE_STATS, {0: kind})


CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    if _lib().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
