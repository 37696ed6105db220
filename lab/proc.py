"""The lab's process helpers: run a command bounded, in a namespace; start and
stop children of ours by PID; where the child programs live.

Only the standard library and the ``ip``/``bridge``/``nft`` tools: the lab must
not depend on the code it is testing (pyroute2, bcc).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence


# The interpreter used *inside* namespaces for child helpers.  The system
# python is used (not sys.executable) because child scripts need nothing but
# the standard library, and a venv interpreter may not be usable after
# `ip netns exec` remounts /sys.
CHILD_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

NETNS_RUN_DIR = "/run/netns"

# The lab's child programs (tap readers, relay, watchdog, sender, pinger):
# real files, run by path inside the namespaces.
CHILDREN = Path(__file__).resolve().parent / "children"


def child_argv(script: str, *args: str) -> List[str]:
    """argv running lab/children/SCRIPT with the system python."""
    return [CHILD_PYTHON, str(CHILDREN / script)] + list(args)


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


def run(argv: Sequence[str], check: bool = True, timeout: float = 30.0,
        input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    """Run one command with a timeout; raise LabError with its stderr on failure.

    Every lab action goes through here so a hung tool can never hang a test.
    """
    try:
        proc = subprocess.run(list(argv), input=input, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired:  # subprocess.run already killed the child
        raise LabError("%s timed out after %.0fs" % (" ".join(argv[:6]), timeout)) from None
    if check and proc.returncode != 0:
        raise LabError("%s failed (rc=%d): %s" % (
            " ".join(argv), proc.returncode, proc.stderr.decode(errors="replace").strip()))
    return proc


def ns_argv(netns: Optional[str], argv: Sequence[str]) -> List[str]:
    """Prefix argv with `ip netns exec NS` (or nothing for the root namespace)."""
    return (["ip", "netns", "exec", netns] if netns else []) + list(argv)


def netns_inode(name: str) -> int:
    """Inode of /run/netns/NAME: brtrace identifies namespaces by this number."""
    return os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def netns_exists(name: str) -> bool:
    """True if `ip netns` knows NAME (its bind mount exists)."""
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _set_pdeathsig() -> None:
    """In a child: ask for SIGTERM when the parent dies, so no helper outlives us."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: children also have their own time bound
        pass


def _kill_pid(proc: subprocess.Popen, grace: float = 2.0) -> None:
    """Stop one child we started, by its PID: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass

