"""The Debian package (scripts/package): build it, check its metadata and files,
lintian, then install it into a clean Debian 12 made with debootstrap (~40 s
here, from the mirror this machine's apt uses) and run the installed brtrace
there against Debian 12's own click, pyroute2, prometheus-client and tabulate:
--version, doctor -o json, man pages, completion, `drops` on a lab bridge; then
remove it (only /var/cache/brtrace may stay) and purge it (nothing stays).

Needs root, dpkg-deb; the install part needs debootstrap and a reachable
Debian mirror and is skipped, saying why, without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tracer.version import from_pyproject

REPO = Path(__file__).resolve().parents[2]
VERSION = from_pyproject((REPO / "pyproject.toml").read_text())
DEPENDS = ["python3 (>= 3.9)", "python3-bpfcc", "python3-pyroute2 (>= 0.7)", "python3-click (>= 8.1)",
           "python3-prometheus-client (>= 0.16)", "python3-tabulate (>= 0.8)"]
VERBS = ["doctor", "drops", "export", "incidents", "loops", "neigh", "top", "trace", "watch"]
FILES = ["./usr/bin/brtrace", "./usr/share/brtrace/tracer/cli.py", "./usr/share/brtrace/bpf/brtrace.h",
         "./usr/share/brtrace/bpf/drops.bpf.c", f"./usr/share/brtrace/brtrace-{VERSION}.dist-info/METADATA",
         "./usr/share/brtrace/prometheus/brtrace-rules.yml", "./usr/share/brtrace/grafana/brtrace-dashboard.json",
         "./lib/systemd/system/brtrace-export@.service", "./lib/systemd/system/brtrace-watch@.service",
         "./usr/share/bash-completion/completions/brtrace",
         "./usr/share/man/man8/brtrace.8.gz", "./usr/share/doc/brtrace/copyright",
         "./usr/share/doc/brtrace/changelog.gz", "./var/cache/brtrace/",
         *(f"./usr/share/man/man8/brtrace-{v}.8.gz" for v in VERBS)]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is missing (apt-get install dpkg)"),
]


def sh(argv, timeout=120, check=True, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} exited {proc.returncode}\nstdout: {proc.stdout[-3000:]}\n"
                             f"stderr: {proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    t0 = time.monotonic()
    path = Path(sh([str(REPO / "scripts/package"), str(out)]).stdout.strip().splitlines()[-1])
    print(f"scripts/package: {time.monotonic() - t0:.1f} s, {path.stat().st_size} bytes")
    assert path.name == f"brtrace_{VERSION}_all.deb"
    return path


def test_metadata_and_files(deb):
    field = lambda name: sh(["dpkg-deb", "-f", str(deb), name]).stdout.strip()  # noqa: E731
    assert field("Package") == "brtrace" and field("Version") == VERSION and field("Architecture") == "all"
    assert [d.strip() for d in field("Depends").split(",")] == DEPENDS
    assert "linux-headers-amd64" in field("Recommends")
    info = sh(["dpkg-deb", "-I", str(deb)]).stdout
    for script in ("postinst", "prerm", "postrm", "md5sums"):
        assert script in info
    listing = sh(["dpkg-deb", "-c", str(deb)]).stdout.splitlines()
    paths = {line.split()[5]: line.split()[0] for line in listing}
    for f in FILES:
        assert f in paths, f
    assert paths["./usr/bin/brtrace"] == "-rwxr-xr-x"
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    assert all(line.split()[1] == "root/root" for line in listing)
    unit = sh(["sh", "-c", f"dpkg-deb --fsys-tarfile {deb} | tar -xO ./lib/systemd/system/brtrace-export@.service"])
    assert "\nExecStart=/usr/bin/brtrace export --bridge %i" in unit.stdout


def test_lintian(deb):
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (apt-get install lintian)")
    proc = sh(["lintian", "--fail-on", "error", "--pedantic", str(deb)], check=False)
    tags = [ln for ln in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", ln)]
    print("lintian:", *tags or ["clean"], sep="\n  ")
    assert proc.returncode == 0 and not [t for t in tags if t.startswith("E: ")], proc.stdout + proc.stderr


def _apt_mirror() -> str | None:
    """The Debian mirror this machine's apt uses (None: debootstrap's default)."""
    sources = Path("/etc/apt/sources.list.d")
    for f in [*sorted(sources.glob("*.sources")), Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.M) and not re.search(r"^Enabled:\s*no", stanza, re.M):
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if m and m.group(1).rstrip("/").endswith("/debian"):
                    return m.group(1)
        m = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+bookworm\s", text, re.M)
        if m:
            return m.group(1)
    return None


class Root:
    """A debootstrapped Debian 12; run() executes a shell command chrooted in it,
    in a private mount namespace with /proc, /sys, /dev and /run/netns of the host."""

    def __init__(self, path: Path):
        self.path = path

    def run(self, script: str, timeout=180, check=True):
        r = str(self.path)
        setup = (f"set -e; for d in proc sys dev; do mount --rbind /$d {r}/$d; done; "
                 f"mkdir -p /run/netns {r}/run/netns; mount --rbind /run/netns {r}/run/netns; ")
        inner = "export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive; " + script
        return sh(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   setup + f'exec chroot {r} sh -c "$1"', "sh", inner], timeout=timeout, check=check)

    def exists(self, path: str) -> bool:
        return os.path.lexists(str(self.path) + path)


@pytest.fixture(scope="module")
def bookworm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("installing into a debootstrap root needs root")
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed (apt-get install debootstrap)")
    path = tmp_path_factory.mktemp("bookworm") / "root"
    mirror = _apt_mirror()
    t0 = time.monotonic()
    proc = sh(["debootstrap", "--variant=minbase", "--include=man-db", "bookworm", str(path),
               *([mirror] if mirror else [])], timeout=600, check=False)
    if proc.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        pytest.skip(f"debootstrap bookworm failed (no usable Debian mirror?): {proc.stdout[-500:]}{proc.stderr[-500:]}")
    print(f"debootstrap bookworm: {time.monotonic() - t0:.0f} s")
    try:
        yield Root(path)
    finally:
        subprocess.run(["sh", "-c", f"grep -q ' {path}/' /proc/mounts || rm -rf --one-file-system {path}"],
                       check=False)


def test_install_run_remove_in_clean_bookworm(deb, bookworm, lab):
    shutil.copy(deb, bookworm.path / "tmp" / deb.name)
    t0 = time.monotonic()
    # As the README says: apt install ./brtrace_*.deb (Recommends: the headers bcc needs).
    bookworm.run(f"apt-get update -qq && apt-get install -y -qq /tmp/{deb.name} >/dev/null", timeout=600)
    print(f"apt install in the chroot: {time.monotonic() - t0:.0f} s")
    versions = bookworm.run("dpkg-query -W python3-click python3-pyroute2 python3-prometheus-client "
                            "python3-tabulate python3-bpfcc").stdout
    print(versions)
    owned = bookworm.run("dpkg -L brtrace").stdout.split()

    assert bookworm.run("brtrace --version").stdout == f"brtrace {VERSION}\n"
    doctor = json.loads(bookworm.run("brtrace doctor -o json").stdout)
    assert doctor and "headers" in doctor and not doctor["headers"].startswith("missing"), doctor
    # The merged headers went to the cache (the chroot has no headers of the running kernel).
    assert bookworm.exists("/var/cache/brtrace/headers")

    for page in ["brtrace", *(f"brtrace-{v}" for v in VERBS)]:
        text = bookworm.run(f"MANWIDTH=80 man -P cat -l /usr/share/man/man8/{page}.8.gz 2>&1").stdout
        assert "SYNOPSIS" in text and "warning" not in text.lower(), text
    assert "--bridge" in bookworm.run("man -P cat brtrace-drops 2>&1").stdout
    assert "drops" in bookworm.run("COMP_WORDS=\"brtrace dr\" COMP_CWORD=1 _BRTRACE_COMPLETE=bash_complete "
                                   "brtrace").stdout

    # The installed code traces: BPF from /usr/share/brtrace/bpf, Debian 12's pyroute2 and tabulate.
    run = bookworm.run(f"brtrace drops --bridge {lab.bridge} --netns {lab.bridge_ns} --duration 2 2>&1",
                       timeout=120)
    assert "summary:" in run.stdout and "Traceback" not in run.stdout, run.stdout
    assert bookworm.exists("/usr/share/brtrace/tracer/__pycache__")  # py3compile ran

    bookworm.run("apt-get remove -y -qq brtrace >/dev/null")
    left = [p for p in owned if bookworm.exists(p) and not os.path.isdir(bookworm.path / p.lstrip("/"))]
    assert left == []
    assert not bookworm.exists("/usr/share/brtrace") and not bookworm.exists("/usr/bin/brtrace")
    assert bookworm.exists("/var/cache/brtrace")  # what was merged for bcc stays until purge
    bookworm.run("dpkg --purge brtrace >/dev/null")
    assert not bookworm.exists("/var/cache/brtrace")
    # Not ours: dpkg's and apt's records, and man-db's cache of formatted pages
    # (`man brtrace-drops` above; man-db's daily job expires it).
    leftovers = bookworm.run("find / -xdev -name '*brtrace*' -not -path '/tmp/*' "
                             "-not -path '/var/lib/dpkg/*' -not -path '/var/cache/apt/*' -not -path '/var/log/*' "
                             "-not -path '/var/lib/apt/*' -not -path '/var/cache/man/*'").stdout.split()
    assert leftovers == []
    print(f"install test: {time.monotonic() - t0:.0f} s after debootstrap")
