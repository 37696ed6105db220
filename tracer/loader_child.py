"""The short-lived helper that compiles and loads brtrace's BPF through bcc.

Why a separate process: bcc and the LLVM it compiles with stay resident in any
process that imports them (~100 MB), and brtrace runs for hours after one
compile. This child does the compile, the load and bcc's attachments, sends
every file descriptor that keeps them alive (maps, programs, tracepoint and
kprobe attachments) to its parent over a Unix socket (SCM_RIGHTS), and exits
without bcc's clean-up: the attachments live on as long as the parent holds
the descriptors, and go with the parent however it ends.

Run by tracer/loader.py (LoaderChild) as `python -m tracer.loader_child FD`; FD is its end of
a SOCK_SEQPACKET socket pair. Request (JSON): sources, defines, maps (names to
send), tcx_programs (sched_cls functions to load, unattached). Reply (JSON +
fds): {"maps": {name: i}, "progs": {name: i}, "links": [i, ...]} or {"error": ...}.
With the define KERNEL_READS_DIRECT set, each function's calls to a fake helper
are rewritten into kfunc calls just before bcc loads it (tracer/kernel/kfunc.py).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
import tempfile

from tracer import abi
from tracer.kernel import switches
from tracer.kernel.kfunc import marks, rewrite_kfunc_calls
from tracer.program import assemble

MAX_REQUEST = 1 << 20


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def import_bcc():
    try:
        import bcc  # noqa: PLC0415 - this process exists to import bcc
    except ImportError:
        return None
    return bcc


CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 0x1000, 0x4000, 0x40000  # uapi
# What bcc looks up in /proc/kallsyms while compiling: whether these helpers
# exist (they do on every kernel brtrace runs on, >= 5.17).
KALLSYMS_ANSWER = b"ffffffff81000000 T bpf_probe_read_kernel\nffffffff81000000 T bpf_probe_read_user\n"


def answer_kallsyms() -> bool:
    """Spare bcc its read of /proc/kallsyms: on every compile its frontend
    (BFrontendAction::DoMiscWorkAround) loads all ~120,000 kernel symbols,
    0.13-0.2 s here, only to learn whether bpf_probe_read_kernel exists. In a
    mount namespace of this process's own (private, so nothing propagates to
    the host, and gone when the process exits), a two-line file is
    bind-mounted over /proc/kallsyms. Any step that fails leaves bcc the real
    file. Nothing else in this process reads kallsyms: brtrace symbolizes
    drop locations in the parent."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return False
    try:
        fd, path = tempfile.mkstemp(prefix="brtrace-kallsyms-")
    except OSError:
        return False
    try:
        os.write(fd, KALLSYMS_ANSWER)
        return libc.mount(path.encode(), b"/proc/kallsyms", None, MS_BIND, None) == 0
    finally:
        os.close(fd)
        os.unlink(path)       # the mount keeps the file while this process lives


def rewrite_before_load(bcc, marks: dict) -> None:
    """Have bcc rewrite fake-helper calls into kfunc calls in each function's
    instructions, in its own buffer, just before it loads the function
    (bcc.BPF() loads tracepoint programs itself, from its constructor)."""
    lib, original = bcc.lib, bcc.BPF.load_func

    def load_func(self, func_name, prog_type, device=None, attach_type=-1):
        name = func_name.encode() if isinstance(func_name, str) else func_name
        if name not in self.funcs:
            start = lib.bpf_function_start(self.module, name)
            size = lib.bpf_function_size(self.module, name)
            if start and size:
                rewrite_kfunc_calls((ctypes.c_uint8 * size).from_address(start), marks)
        return original(self, func_name, prog_type, device, attach_type)

    bcc.BPF.load_func = load_func


def build(req: dict, bcc) -> tuple[dict, list]:
    if bcc is None:
        return {"error": "bcc is not importable from this Python", "no_bcc": True}, []

    if req["defines"].get("KERNEL_READS_DIRECT"):
        # BRTRACE_FAULT=kfunc-refused (tests): aim the calls at a struct's BTF id,
        # which the verifier refuses as no kernel function.
        faulty = switches.fault("kfunc-refused")
        rewrite_before_load(bcc, {mark: req["defines"]["BTF_ID_SK_BUFF" if faulty else name]
                                  for mark, name in marks().items()})
    answer_kallsyms()
    text = assemble(req["sources"])
    cflags = [f"-I{abi.BPF_DIR}", "-Wno-macro-redefined"]
    cflags += [f"-D{k}={v}" for k, v in sorted(req["defines"].items())]
    try:
        b = bcc.BPF(text=text, cflags=cflags)
        for name in req.get("tcx_programs", []):
            b.load_func(name, bcc.BPF.SCHED_CLS)
    except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception on compile/load/attach
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {"error": first}, []
    fds: list = []
    reply: dict = {"maps": {}, "progs": {}, "links": [], "raw_tp": {}}
    for name in req["maps"]:
        try:
            table = b.get_table(name)
        except KeyError:
            continue          # not in these sources
        reply["maps"][name] = len(fds)
        fds.append(table.map_fd)
    for name, fn in b.funcs.items():
        reply["progs"][name.decode() if isinstance(name, bytes) else name] = len(fds)
        fds.append(fn.fd)
    for tp, fd in b.raw_tracepoint_fds.items():
        # by tracepoint, so the parent can detach and attach one again
        # (KernelMaps.set_detail())
        reply["raw_tp"][tp.decode() if isinstance(tp, bytes) else tp] = len(fds)
        reply["links"].append(len(fds))
        fds.append(fd)
    for per_fn in b.kprobe_fds.values():
        for fd in per_fn.values():
            reply["links"].append(len(fds))
            fds.append(fd)
    return reply, fds


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    sock = socket.socket(fileno=int(argv[0]))
    # Imported before the request arrives: the parent works out the kernel's
    # offsets meanwhile, and an empty request means "not needed after all".
    bcc = import_bcc()
    raw = sock.recv(MAX_REQUEST)
    if not raw:
        os._exit(0)
    reply, fds = build(json.loads(raw), bcc)
    socket.send_fds(sock, [json.dumps(reply).encode()], fds)
    sock.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit(): bcc's atexit clean-up would detach what the parent now holds.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
