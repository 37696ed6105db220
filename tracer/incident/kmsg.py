"""The kernel log, kept as it comes, so an incident's kernel.log holds the
lines of its window (the bridge's "received packet on X with own address as
source address", a driver's complaint) including those from before the
trigger and before the daemon started.

/dev/kmsg gives one record per read(): `pri,seq,usec,flags[,...];message`,
then lines starting with a space (the record's dictionary: SUBSYSTEM=,
DEVICE=), not part of the text. usec is CLOCK_MONOTONIC, the clock of
time.monotonic(). A fresh open starts at the oldest record still in the
kernel's buffer. A read that fails with EPIPE means the kernel overwrote
records before we read them: the next read goes on after them.

Bounded: the last `max_lines` lines (default 5000, ~1 MB). A kernel log that
cannot be opened (no permission: kernel.dmesg_restrict and no CAP_SYSLOG;
no /dev/kmsg in a container) leaves it disabled, with `why`; nothing raises.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import Callable, Optional

DEV_KMSG = "/dev/kmsg"
MAX_LINES = 5000
# A record with its dictionary is at most 8 KiB (CONSOLE_EXT_LOG_MAX); a
# smaller buffer makes the read fail with EINVAL.
RECORD_MAX = 8192
OVERWRITTEN = "(brtrace: kernel log lines were overwritten before they could be read)"


def parse_record(raw: bytes) -> Optional[tuple]:
    """One /dev/kmsg record -> (usec, message), or None if it is not one.
    The message keeps the kernel's \\xNN escapes of unprintable bytes (so a
    line never carries control characters into a terminal)."""
    text = raw.decode("utf-8", "replace")
    head, sep, rest = text.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 4:
        return None
    try:
        usec = int(fields[2])
    except ValueError:
        return None
    return usec, rest.split("\n", 1)[0]


def format_line(usec: int, message: str) -> str:
    """As dmesg prints it: `[ 1234.567890] message`."""
    sec, frac = divmod(usec, 1_000_000)
    return f"[{sec:5d}.{frac:06d}] {message}"


class KernelLog:
    """A bounded ring of the kernel log's lines; poll() it (non-blocking)."""

    def __init__(self, path: str = DEV_KMSG, max_lines: int = MAX_LINES,
                 read: Callable[[int, int], bytes] = os.read):
        self.path = path
        self.lines: deque = deque(maxlen=max_lines)   # (usec, message)
        self.available = False
        self.why: Optional[str] = None
        self.overwritten = 0     # EPIPEs: times records were lost before being read
        self.bad_records = 0
        self._read = read
        self._gap = False
        self._fd: Optional[int] = None
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            hint = (": run brtrace watch as root (CAP_SYSLOG)" if exc.errno in (errno.EACCES, errno.EPERM)
                    else "")
            self.why = f"cannot open {path}: {exc.strerror or exc}{hint}"
            return
        self.available = True
        self.poll()              # what the buffer holds already: from before we started

    def poll(self) -> int:
        """Read what the kernel logged since the last poll (at most max_lines
        records, so a flood cannot hold the caller). Returns lines added."""
        added = 0
        while self.available and added < self.lines.maxlen:
            try:
                raw = self._read(self._fd, RECORD_MAX)
            except BlockingIOError:
                break
            except BrokenPipeError:
                self.overwritten += 1
                self._gap = True
                continue
            except OSError as exc:
                self.disable(f"reading {self.path} failed: {exc.strerror or exc}")
                break
            if not raw:          # end of a file that is not /dev/kmsg
                break
            rec = parse_record(raw)
            if rec is None:
                self.bad_records += 1
                continue
            if self._gap:
                self.lines.append((rec[0], OVERWRITTEN))
                self._gap = False
            self.lines.append(rec)
            added += 1
        return added

    def since(self, t0: float) -> list:
        """Lines logged at or after t0 (time.monotonic() seconds), formatted."""
        start = int(t0 * 1_000_000)
        return [format_line(usec, msg) for usec, msg in self.lines if usec >= start]

    def disable(self, why: str) -> None:
        self.available = False
        self.why = why
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
