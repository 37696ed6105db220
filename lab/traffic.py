"""Bounded traffic: the one frame sender (lab/children/sender.c, compiled on
demand; sender.py where there is no C compiler) and ping.

Every generator is bounded in frames *and* seconds, and is a child process:
the caller may be multi-threaded, and setns() would move the whole thread.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import List, Optional, Tuple

from lab.frames import Frames
from lab.proc import CHILDREN, LabError, _kill_pid, _set_pdeathsig, child_argv, ns_argv, run

SENDER_C = CHILDREN / "sender.c"
SENDER_PY = CHILDREN / "sender.py"

_compiled: dict = {}
_compile_lock = threading.Lock()


def compile_sender() -> Tuple[Optional[Path], str]:
    """(path of sender.c built for this process, "") or (None, why not).

    Built once per process into a private temporary directory that goes at
    exit: about a second of gcc, then senders start in a millisecond."""
    with _compile_lock:
        if "binary" not in _compiled:
            _compiled["binary"], _compiled["note"] = _compile()
        return _compiled["binary"], _compiled["note"]


def _compile() -> Tuple[Optional[Path], str]:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        return None, "no C compiler: Python senders (slower: unicast may be sender-bound; install gcc)"
    workdir = Path(tempfile.mkdtemp(prefix="brtlab-sender-"))
    atexit.register(shutil.rmtree, workdir, True)
    out = workdir / "sender"
    try:
        proc = subprocess.run([gcc, "-O2", "-o", str(out), str(SENDER_C)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        return None, "gcc timed out; Python senders instead"
    if proc.returncode != 0:
        return None, "gcc failed (%s); Python senders instead" % proc.stderr.decode(errors="replace")[:200]
    return out, ""


def sender_command(fast: bool = False, prefer_c: bool = True) -> List[str]:
    """argv of the sender, before its positional arguments (see sender.c):
    the compiled one, else the Python one.  fast: the bench's mode (batches,
    qdisc bypass; see sender.c for what it gives up)."""
    binary = compile_sender()[0] if prefer_c else None
    flags = ["-f"] if fast else []
    return [str(binary)] + flags if binary else child_argv("sender.py", *flags)


def sender_args(ifname: str, frames: Frames, count: int, seconds: float, rate: float = 0) -> List[str]:
    """The sender's positional arguments."""
    return [ifname, str(count), "%.3f" % seconds, frames.template.hex(), str(frames.offset),
            str(frames.distinct)] + ([repr(rate) if isinstance(rate, float) else str(rate)] if rate else [])


def _numbered(frame: bytes, count: int, seq_offset: Optional[int]) -> Frames:
    """Frame i carries i (u32, big-endian) at seq_offset; without it, all the same."""
    if seq_offset is None:
        return Frames(frame)
    if not 0 <= seq_offset <= len(frame) - 4:
        raise ValueError("seq_offset must leave 4 bytes inside the frame")
    zeroed = frame[:seq_offset] + b"\x00" * 4 + frame[seq_offset + 4:]
    return Frames(zeroed, seq_offset, max(1, count))


def _sender_argv(netns: str, ifname: str, frame: bytes, count: int, interval: float,
                 seconds: float, seq_offset: Optional[int] = None) -> List[str]:
    frames = _numbered(frame, count, seq_offset)
    rate = 1.0 / interval if interval > 0 else 0
    return ns_argv(netns, sender_command() + sender_args(ifname, frames, count, seconds, rate))


def send_frames(netns: str, ifname: str, frame: bytes, count: int,
                interval: float = 0.0, timeout: Optional[float] = None,
                seq_offset: Optional[int] = None) -> int:
    """Send exactly `count` copies of `frame` out of IFNAME inside NETNS, one
    every `interval` seconds (0: at once); with `seq_offset`, copy i carries i
    (4 bytes, big-endian) there, so every frame is a new one.

    Returns only after the child has sent them all (and says so); raises
    LabError otherwise.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    if timeout is None:
        timeout = 10.0 + count * (interval + 0.01)
    # The sender's own bound ends it first; run()'s is the backstop.
    proc = run(_sender_argv(netns, ifname, frame, count, interval, timeout, seq_offset),
               timeout=timeout + 5)
    sent = _parse_sent(proc.stdout)
    if sent != count:
        raise LabError("sender reported %d of %d frames" % (sent, count))
    return sent


def start_sender(netns: str, ifname: str, frame: bytes, count: int,
                 interval: float) -> subprocess.Popen:
    """Like send_frames() but returns at once; finish with wait_sender().

    Lets several bounded generators run side by side (the demo does this).
    """
    seconds = 10.0 + count * (interval + 0.01)
    return subprocess.Popen(_sender_argv(netns, ifname, frame, count, interval, seconds),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_set_pdeathsig)


def wait_sender(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for a start_sender() child; kill it (by PID) if it overruns."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_pid(proc)
        proc.communicate()
        raise LabError("sender %d overran %.0fs" % (proc.pid, timeout)) from None
    if proc.returncode != 0:
        raise LabError("sender failed: %s" % err.decode(errors="replace").strip())
    return _parse_sent(out)


def _parse_sent(out: bytes) -> int:
    """The sender prints 'SENT REFUSED'; REFUSED frames were dropped by the
    device's xmit path (ENOBUFS) and still count as sent."""
    fields = out.decode().split()
    return int(fields[0]) if fields else -1


def ping(netns: str, ip: str, count: int = 3, interval: float = 0.2,
         deadline: Optional[float] = None) -> bool:
    """Bounded ping (-c and -w) from NETNS; True if any reply came back.

    Uses iputils ping when installed, else an equivalent raw-socket child,
    because minimal images (like our CI VM) ship without ping.
    """
    if deadline is None:
        deadline = max(2.0, count * interval + 2.0)
    if shutil.which("ping"):
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval),
                "-w", str(int(deadline + 0.999)), ip]
    else:
        argv = child_argv("pinger.py", ip, str(count), repr(interval), repr(deadline))
    return run(ns_argv(netns, argv), check=False, timeout=deadline + 10).returncode == 0

