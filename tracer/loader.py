"""The client of the loader child: brtrace's side of the helper process that
compiles and loads its BPF through bcc (tracer/loader_child.py, see there why a
separate process).

LoaderChild starts the child early, sends it a Program (tracer/program.py) to
compile and load, and receives the file descriptors of its maps, programs and
attachments; tracer/maps.py reads the maps through them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tracer import abi
from tracer.errors import KernelFeatureError
from tracer.hooks import all_maps
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.tcx import DIRECTIONS
from tracer.program import Program

CHILD_TIMEOUT = 300.0   # compile + load; ~30 s in the emulated VM of the test lane


def prepare_headers() -> None:
    """Point bcc at headers it can compile against (BCC_KERNEL_SOURCE, which
    the loader child inherits)."""
    headers, _note = bcc_kernel_source()
    if headers is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)


def _child_env() -> dict:
    """The environment of the loader child: ours, with the directory that holds
    `tracer/` first on PYTHONPATH, so `-m tracer.loader_child` finds this very
    copy wherever it is installed (the Debian package keeps it in
    /usr/share/brtrace, which only its launcher puts on sys.path)."""
    root = str(abi.BPF_DIR.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


class LoaderChild:
    """tracer/loader_child.py, started early: it starts Python and imports
    bcc (~0.1 s) while this process works out the kernel's offsets, then compiles and loads on
    request and sends back the file descriptors (see there why). close()
    ends it if it was never asked."""

    def __init__(self):
        self._submitted = self._answered = False
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "tracer.loader_child", str(child.fileno())],
                                         pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, env=_child_env())
        except OSError as exc:
            self._sock.close()
            raise KernelFeatureError(f"cannot start the BPF loader ({exc})", "run scripts/setup") from exc
        finally:
            child.close()

    def submit(self, program: Program, tcx_programs: list) -> None:
        """Send the compile request: the child compiles (~0.5 s) while the
        caller goes on; build() then waits for the result."""
        try:
            self._sock.sendall(json.dumps({"sources": list(program.sources), "defines": program.defines,
                                           "maps": list(all_maps()) + [abi.EVENTS_MAP],
                                           "tcx_programs": tcx_programs}).encode())
        except OSError as exc:
            self.close()
            raise KernelFeatureError(f"the BPF loader exited before compiling ({exc.strerror})",
                                     "run scripts/setup, then `brtrace doctor`") from exc
        self._submitted = True

    def build(self, program: Program, tcx_programs: list) -> tuple[dict, list]:
        """Compile and load `program` (unless submit() sent it already). Returns (reply, fds)."""
        try:
            if not self._submitted:
                self.submit(program, tcx_programs)
            self._sock.settimeout(CHILD_TIMEOUT)
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self._sock, 1 << 20, 512)
            except socket.timeout as exc:
                raise KernelFeatureError("the BPF loader did not finish in time",
                                         "run `brtrace doctor`; check the machine's load") from exc
            if not msg:
                rc = self.proc.wait(timeout=30)
                raise KernelFeatureError(f"the BPF loader exited (status {rc}) without loading",
                                         "run `brtrace doctor` to see what this kernel lacks")
            self._answered = True
            reply = json.loads(msg)
            if "error" in reply:
                for fd in fds:
                    os.close(fd)
                if reply.get("no_bcc"):
                    raise KernelFeatureError(
                        reply["error"], "run scripts/setup (it installs python3-bpfcc and a venv that sees it)")
                raise LoadRefused(f"could not load BPF program ({reply['error']})",
                                  "run `brtrace doctor` to see what this kernel lacks")
            self.proc.wait(timeout=30)
            return reply, fds
        finally:
            self.close()

    def close(self) -> None:
        """End the child (by our own PID handle) unless it has exited: at once
        if it is compiling a request nobody will collect (bad input found
        meanwhile), else when it sees the closed socket."""
        self._sock.close()
        if self.proc.poll() is None and self._submitted and not self._answered:
            self.proc.kill()
            self.proc.wait()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=2)     # it exits on the closed socket
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class LoadRefused(KernelFeatureError):
    """The loader child could not compile or load the programs (a compile error, or the verifier refused one)."""


def tcx_program_names(tcx: bool) -> list:
    """The sched_cls functions the loader child loads, unattached, for tcx links."""
    return [f"port_{d}" for d in DIRECTIONS] if tcx else []
