"""Bad input, signals and a vanishing bridge: one-line errors, clean detach."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lab import ETH_P_LAB, ether, send_frames

from pathlib import Path

from harness import held_prog_ids, wait_unloaded

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def our_progs() -> set:
    """IDs of loaded raw-tracepoint programs on kfree_skb (bcc names a
    RAW_TRACEPOINT_PROBE program after its tracepoint)."""
    out = subprocess.run(["bpftool", "-j", "prog", "list"], check=True, capture_output=True, text=True).stdout
    return {p["id"] for p in json.loads(out)
            if p.get("type") == "raw_tracepoint" and p.get("name") == "kfree_skb"}


def brtrace(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tracer.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, needle", [
    (("--bridge", "nosuchbr0"), "no device 'nosuchbr0'"),
    (("--bridge", "vnet0"), "is a veth device, not a bridge; it is a port of br-int: use --bridge br-int"),
    (("--bridge", "br-int", "--netns", "brti-no-such-ns"), "network namespace 'brti-no-such-ns' not found"),
    (("--bridge", "br-int", "--netns", "/etc/hostname"), "is not a network namespace"),
    (("--bridge", "x" * 40), "is not a valid interface name"),
])
def test_bad_bridge_or_netns_is_one_line(lab, args, needle):
    args = list(args)
    if "--netns" not in args:
        args += ["--netns", lab.bridge_ns]
    r = brtrace("drops", *args, "--duration", "1")
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_sigterm_prints_summary_and_detaches(lab, tracer_factory):
    t = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "120")
    held = held_prog_ids(t.proc.pid)
    assert held & our_progs(), "brtrace attached no kfree_skb program"
    h1, h2 = lab.host(1), lab.host(2)
    send_frames(h1.netns, h1.ifname, ether(h2.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"x"), 5)
    t.stop(sig=signal.SIGINT)
    assert t.proc.returncode == 0
    assert t.count(reason="MAC_INVALID_SOURCE") == 5
    assert len(t.kind("summary")) == 1
    assert not wait_unloaded(held), "BPF programs left behind"


def test_bridge_vanishing_mid_run(lab, tracer_factory):
    t = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns,
                       "--interval", "0.3", "--duration", "120")
    held = held_prog_ids(t.proc.pid)
    h1, h2 = lab.host(1), lab.host(2)
    send_frames(h1.netns, h1.ifname, ether(h2.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"x"), 4)
    time.sleep(0.5)
    lab.ip(lab.bridge_ns, "link", "del", lab.bridge)
    out, err = t.proc.communicate(timeout=30)
    records = [json.loads(line) for line in out.splitlines()]
    assert t.proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith(f"brtrace: error: bridge {lab.bridge} disappeared")
    assert "Traceback" not in err
    drops = [r for r in records if r["kind"] == "drop"]
    assert [(d["port"], d["reason"], d["count"]) for d in drops] == [(h1.port, "MAC_INVALID_SOURCE", 4)]
    assert records[-1]["kind"] == "summary"
    assert held and not wait_unloaded(held)


def _fake_missing_bcc(tmp_path):
    """A `bcc` package that fails to import, first on the path: what a Python
    without python3-bpfcc looks like to brtrace."""
    pkg = tmp_path / "nobcc" / "bcc"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('No module named bcc')\n")
    return str(tmp_path / "nobcc")


@pytest.mark.parametrize("env_name, needle", [
    ("BRTRACE_BTF", "no BTF at /nonexistent/vmlinux"),
    ("PYTHONPATH", "bcc is not importable from this Python; run scripts/setup"),
])
def test_missing_kernel_pieces_are_one_line(lab, tmp_path, env_name, needle):
    value = "/nonexistent/vmlinux" if env_name == "BRTRACE_BTF" else _fake_missing_bcc(tmp_path)
    r = subprocess.run([sys.executable, "-m", "tracer.cli", "drops", "--bridge", lab.bridge,
                        "--netns", lab.bridge_ns, "--duration", "1"], cwd=REPO, capture_output=True,
                       text=True, timeout=60, env={**os.environ, env_name: value})
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


def test_without_tracefs_reason_names_come_from_btf(lab, tracer_factory, monkeypatch):
    monkeypatch.setenv("BRTRACE_TRACEFS", "/nonexistent")
    t = tracer_factory("drops", "--bridge", lab.bridge, "--netns", lab.bridge_ns, "--duration", "60")
    h1, h2 = lab.host(1), lab.host(2)
    send_frames(h1.netns, h1.ifname, ether(h2.mac, "01:00:5e:00:00:01", ETH_P_LAB, b"x"), 6)
    t.stop()
    assert t.count(reason="MAC_INVALID_SOURCE") == 6
    assert "tracefs is not mounted: drop-reason names come from BTF" in t.stderr


def _kallsyms_mounts() -> list:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if " /proc/kallsyms " in line]


def test_loader_child_answers_kallsyms_in_its_own_mount_namespace_only():
    """The loader child spares bcc its read of /proc/kallsyms with a two-line
    file mounted over it (tracer/loader_child.py). That mount must stay inside
    the child's own namespace: the host (here, the test) still sees the real file."""
    code = ("from tracer.loader_child import answer_kallsyms; ok = answer_kallsyms(); "
            "print(ok, len(open('/proc/kallsyms').read().splitlines()))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "2"]
    with open("/proc/kallsyms") as f:
        assert sum(1 for _ in f) > 1000          # the real table
    assert _kallsyms_mounts() == []
    assert not list(Path("/tmp").glob("brtrace-kallsyms-*"))

