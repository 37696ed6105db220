"""`brtrace top` driven for real: the full-screen program in a tmux pane of a
fixed size (on its own tmux server socket), keys sent with send-keys, the
screen read with capture-pane. A reflecting tap makes echo and loop
findings; `q` must end the program and detach every BPF program."""

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import BROADCAST, ETH_P_LAB, ether, send_frames
from harness import held_prog_ids, our_kind_of_progs

REPO = Path(__file__).resolve().parents[2]
# The program under test. Until `brtrace top` is registered in tracer/cli.py
# it runs through the module's stand-in main(); then: [..., "-m", "tracer.cli", "top"].
TOP_CMD = [sys.executable, "-m", "tracer.cli", "top"]
WIDTH, HEIGHT = 100, 30
# What bpftool calls brtrace's programs (bcc names a raw-tracepoint program
# after the tracepoint; a longer name shows as the BTF function name; the tcx
# port programs by their function names).
OUR_PROGRAMS = {"kfree_skb", "net_dev_queue", "br_fdb_update", "raw_tracepoint__netif_receive_skb",
                "port_ingress", "port_egress"}
_ids = itertools.count(1)

pytestmark = pytest.mark.integration


def attached(top) -> set:
    """Our programs, checked by name; at least kfree_skb."""
    progs = our_kind_of_progs()
    ours = {i for i in held_prog_ids(top.pid) if i in progs}
    names = {progs[i] for i in ours}
    assert "kfree_skb" in names and names <= OUR_PROGRAMS, names
    return ours


def detached(ids: set) -> bool:
    return not (ids & set(our_kind_of_progs()))


class TmuxTop:
    """`brtrace top` alone on a private tmux server; everything it starts is
    killed by socket name and PID, never by process name."""

    def __init__(self, tmp_path: Path, *args: str):
        n = next(_ids)
        self.socket = tmp_path / f"tmux-{n}.sock"   # our own server, gone with tmp_path
        self.conf = tmp_path / f"tmux-{n}.conf"
        # A terminal type every ncurses install knows (tmux-256color may be missing).
        self.conf.write_text("set -g default-terminal screen\nset -g status off\n")
        self.ready, self.rc = tmp_path / f"ready-{n}", tmp_path / f"rc-{n}"
        argv = [*TOP_CMD, *args, "--ready-file", str(self.ready)]
        # stdout and stderr stay on the terminal: what the program prints after
        # leaving the full screen (summary, error) must be readable there. The
        # shell then records the exit code and keeps the pane open (the server
        # is killed at the end anyway).
        script = (f"cd {shlex.quote(str(REPO))} && {shlex.join(argv)}; "
                  f"echo $? > {shlex.quote(str(self.rc))}; sleep 60")
        self.tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT), script)
        self.pid = self._wait_ready()

    def tmux(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["tmux", "-S", str(self.socket), "-f", str(self.conf), *args], check=check,
                              capture_output=True, text=True, timeout=15).stdout

    def _wait_ready(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.exists() and self.ready.read_text().strip():
                return int(self.ready.read_text())
            if self.rc.exists():
                raise AssertionError(f"brtrace top exited early:\n{self.screen()}")
            time.sleep(0.05)
        raise AssertionError("brtrace top did not attach in time")

    def screen(self, escapes: bool = False, join: bool = False) -> str:
        """The pane's text (-e: with display attributes; -J: wrapped lines joined)."""
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), *(["-J"] if join else []),
                         "-t", "top")

    def wait_for(self, predicate, timeout: float = 15.0) -> str:
        """The screen once predicate(screen) holds; fails with the last screen."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError("screen never matched:\n" + text)
            time.sleep(0.2)

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def wait_exit(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while not (self.rc.exists() and self.rc.read_text().strip()):
            if time.monotonic() > deadline:
                raise AssertionError("brtrace top did not exit:\n" + self.screen())
            time.sleep(0.1)
        return int(self.rc.read_text())

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # a PID reused by another program is not ours
        try:
            return Path(f"/proc/{self.pid}/cmdline").read_text().split("\0")[:len(TOP_CMD)] == TOP_CMD
        except OSError:
            return False

    def close(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.tmux("kill-server", check=False)
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def top_factory(tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (Debian package tmux; scripts/setup installs it)")
    started = []

    def start(*args: str) -> TmuxTop:
        t = TmuxTop(tmp_path, *args)
        started.append(t)
        return t

    yield start
    for t in started:
        t.close()


def test_top_shows_a_reflecting_tap_and_quits_cleanly(lab, top_factory):
    vm = lab.host(1)
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=10000)
    top = top_factory("--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.5")
    progs = attached(top)
    assert len(progs) == 4, progs      # drops, fdb and the two tcx port programs
    assert top.alive()
    first = top.wait_for(lambda s: s.startswith("brtrace top: "))
    assert first.splitlines()[0].startswith(f"brtrace top: {lab.bridge} (netns {lab.bridge_ns})  reconstructed  up ")

    # The bridge's own broadcasts come back on the tap (echo); the VM's are
    # reflected too (loop through one port, the VM's MAC flaps).
    send_frames(lab.bridge_ns, lab.bridge, ether(BROADCAST, lab.bridge_mac, ETH_P_LAB, b"own"), 12,
                interval=0.02)
    send_frames(vm.netns, vm.ifname, ether(BROADCAST, vm.mac, ETH_P_LAB, b"vm"), 15, interval=0.05)
    screen = top.wait_for(lambda s: f"!! echo {tap.name}:" in s and f"!! loop {tap.name}:" in s)
    lines = screen.splitlines()
    assert len(lines) <= HEIGHT and all(len(line) <= WIDTH for line in lines)
    assert lines[-1].startswith("q quit  s sort (rx pps)"), screen
    assert any(re.match(rf"^[ >]!{re.escape(tap.name)} ", line) for line in lines), screen
    assert not any(re.match(rf"^[ >]!{re.escape(lab.host(2).port)} ", line) for line in lines)
    # highlighted: the finding lines carry a display attribute (bold/colour)
    styled = top.screen(escapes=True)
    assert re.search(r"\x1b\[[0-9;]*m!! echo " + re.escape(tap.name), styled), styled
    # s cycles the sort column
    top.keys("s")
    top.wait_for(lambda s: "sort (drops/s)" in s and "DROP/s*" in s)
    top.keys("s")
    top.wait_for(lambda s: "sort (broadcast/s)" in s and "BCAST/s*" in s)
    top.keys("s")                                  # by name: the bridge first, then the tap
    by_name = top.wait_for(lambda s: "sort (name)" in s and "PORT*" in s)
    assert [line[2:].split()[0] for line in by_name.splitlines()[2:4]] == [lab.bridge, tap.name]
    # p pauses the numbers and resumes them
    top.keys("p")
    top.wait_for(lambda s: s.splitlines()[0].endswith("  PAUSED") and "p resume" in s)
    top.keys("p")
    top.wait_for(lambda s: not s.splitlines()[0].endswith("  PAUSED") and "p pause" in s)
    # the tap's drill-down: its echoes and returns
    top.keys("j", "d")
    # who holds the tap (its process), then the port's state and the
    # interface's own drop counters beside brtrace's
    drill = top.wait_for(lambda s: re.search(rf"  {tap.name}: python3 pid \d+, tun, forwarding, up, "
                                             r"mtu \d+, iface dropped rx 0 tx 0", s) is not None)
    counters = {m.group(1): int(m.group(2)) for m in re.finditer(r"(echoes|returns)\s+(\d+)", drill)}
    assert counters["echoes"] == 12 and counters["returns"] >= 12 + 15, drill
    top.keys("Enter")
    top.wait_for(lambda s: "d/Enter drill" in s)
    # a resize is handled: the screen is redrawn within the new size
    top.tmux("resize-window", "-t", "top", "-x", "60", "-y", "12")
    small = top.wait_for(lambda s: len(s.splitlines()) <= 12 and s.startswith("brtrace top: "))
    assert all(len(line) <= 60 for line in small.splitlines())
    top.tmux("resize-window", "-t", "top", "-x", str(WIDTH), "-y", str(HEIGHT))

    top.keys("q")
    assert top.wait_exit() == 0
    assert not top.alive()
    after = top.screen(join=True)   # the normal screen again: the summary, no traceback
    assert re.search(rf"brtrace top: [0-9.]+ s on {lab.bridge}", after), after
    assert f"!! echo {tap.name}:" in after and "Traceback" not in after
    assert not any(line.startswith("q quit") for line in after.splitlines())
    assert detached(progs), "BPF programs left behind"


def test_top_ctrl_c_sigterm_and_vanishing_bridge(lab, top_factory):
    """Ctrl-C and SIGTERM detach like q; a vanished bridge ends curses first,
    then the one-line error every view gives."""
    for stop in (lambda t: t.keys("C-c"), lambda t: os.kill(t.pid, signal.SIGTERM)):
        top = top_factory("--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.3")
        progs = attached(top)
        top.wait_for(lambda s: s.startswith("brtrace top: "))
        stop(top)
        assert top.wait_exit() == 0 and not top.alive()
        assert detached(progs)
        assert re.search(rf"brtrace top: [0-9.]+ s on {lab.bridge}", top.screen(join=True))
        top.close()

    top2 = top_factory("--bridge", lab.bridge, "--netns", lab.bridge_ns, "--interval", "0.3")
    progs = attached(top2)
    top2.wait_for(lambda s: s.startswith("brtrace top: "))
    lab.ip(lab.bridge_ns, "link", "del", lab.bridge)
    assert top2.wait_exit() == 1
    # curses has given the terminal back: the error is the last line of the
    # normal screen, after the summary
    after = [line for line in top2.screen(join=True).splitlines() if line.strip()]
    assert after[-1].startswith(f"brtrace: error: bridge {lab.bridge} disappeared during the run"), after
    assert any(line.startswith("brtrace top: ") and f"s on {lab.bridge}" in line for line in after)
    assert not any("Traceback" in line or line.startswith("q quit") for line in after)
    assert detached(progs)


def test_top_without_a_terminal_prints_a_table_per_interval(lab, tmp_path):
    """stdout a pipe: no curses, no escape sequences; a table each interval
    and the summary, the tap's findings marked with !!."""
    tap = lab.add_tap(lab.prefix + "t3o", reader="reflect", max_frames=1000)
    ready = tmp_path / "ready"
    proc = subprocess.Popen([*TOP_CMD, "--bridge", lab.bridge,
                             "--netns", lab.bridge_ns, "--interval", "0.5", "--duration", "4",
                             "--ready-file", str(ready)],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "brtrace top did not attach"
            time.sleep(0.05)
        time.sleep(0.6)
        send_frames(lab.bridge_ns, lab.bridge, ether(BROADCAST, lab.bridge_mac, ETH_P_LAB, b"own"), 5,
                    interval=0.02)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "\x1b" not in out and "q quit" not in out
    lines = out.splitlines()
    heads = [line for line in lines if re.match(r"^\d\d:\d\d:\d\d  brtrace top: ", line)]
    assert lines[0].startswith(f"brtrace top: bridge {lab.bridge} (netns {lab.bridge_ns})")  # as every view
    assert len(heads) >= 4 and all(len(line) <= 80 for line in lines[1:])
    summary = out[out.index("\nsummary: "):]
    assert re.search(rf"^ !{re.escape(tap.name)} ", summary, re.M), summary
    assert f"!! echo {tap.name}: 5 frames entered {lab.bridge} on {tap.name}" in summary
