"""Bad input, systematically: every invocation below must end with exactly one
line on stderr that starts "brtrace: error:", nothing on stdout, a non-zero
exit, no traceback, and no BPF program left behind."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from harness import our_kind_of_progs

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def busy_port():
    """A loopback port held by this test, for the 'port in use' case."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def cases(lab_ns, busy):
    B = ["--netns", lab_ns]
    return [
        (["drops"], "Missing option '--bridge'"),
        (["drops", "--bridge", "", *B], "not a valid interface name"),
        (["drops", "--bridge", "br 0", *B], "not a valid interface name"),
        (["drops", "--bridge", "b" * 16, *B], "not a valid interface name"),
        (["drops", "--bridge", "a/b", *B], "not a valid interface name"),
        (["drops", "--bridge", "nosuchbr", *B], "no device 'nosuchbr'"),
        (["drops", "--bridge", "vnet0", *B], "not a bridge; it is a port of br-int"),
        (["drops", "--bridge", "lo", *B], "'lo' in netns"),
        (["drops", "--bridge", "br-int", "--netns", "brti-absent-ns"], "not found"),
        (["drops", "--bridge", "br-int", "--netns", "/etc/hostname"], "is not a network namespace"),
        (["drops", "--bridge", "br-int", "--netns", "/no/such/path"], "not found"),
        (["drops", "--bridge", "br-int", "--netns", ""], "--netns is empty"),
        (["drops", "--bridge", "br-int", *B, "--interval", "0"], "--interval"),
        (["drops", "--bridge", "br-int", *B, "--interval", "-1"], "--interval"),
        (["drops", "--bridge", "br-int", *B, "--interval", "1e9"], "--interval"),
        (["drops", "--bridge", "br-int", *B, "--interval", "abc"], "--interval"),
        (["drops", "--bridge", "br-int", *B, "--duration", "0"], "--duration"),
        (["drops", "--bridge", "br-int", *B, "--duration", "-5"], "--duration"),
        (["drops", "--bridge", "br-int", *B, "-o", "xml"], "--output"),
        (["loops", "--bridge", "nosuchbr", *B], "no device 'nosuchbr'"),
        (["frobnicate"], "No such command"),
        (["export", "--bridge", "br-int", *B, "--listen", "nonsense"], "is not ADDRESS:PORT"),
        (["export", "--bridge", "br-int", *B, "--listen", "127.0.0.1:99999"], "is not ADDRESS:PORT"),
        (["export", "--bridge", "br-int", *B, "--listen", f"127.0.0.1:{busy}"], "cannot listen on"),
        (["export", "--bridge", "br-int", *B, "--listen", "192.0.2.1:9435"], "cannot listen on"),
        (["export", "--bridge", "nosuchbr", *B, "--listen", "127.0.0.1:19999"], "no device 'nosuchbr'"),
    ]


def test_bad_invocations(lab, busy_port):
    table = cases(lab.bridge_ns, busy_port)
    assert len(table) >= 20
    failures = []
    for argv, needle in table:
        r = subprocess.run([sys.executable, "-m", "tracer.cli", *argv, "--duration", "2"]
                           if argv[0] in ("drops", "loops", "export") and "--duration" not in argv else
                           [sys.executable, "-m", "tracer.cli", *argv],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        ok = (r.returncode != 0 and r.stdout == "" and r.stderr.count("\n") == 1
              and r.stderr.startswith("brtrace: error: ") and needle in r.stderr
              and "Traceback" not in r.stderr)
        if not ok:
            failures.append((argv, r.returncode, r.stdout[:200], r.stderr[-400:]))
    assert not failures, failures


def test_no_program_left_after_bad_export(lab, busy_port):
    """A bind failure happens after BPF is attached: it must still detach."""

    def ours():
        return set(our_kind_of_progs())
    before = ours()
    r = subprocess.run([sys.executable, "-m", "tracer.cli", "export", "--bridge", "br-int", "--netns",
                        lab.bridge_ns, "--listen", f"127.0.0.1:{busy_port}", "--duration", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot listen on" in r.stderr
    assert ours() - before == set()
