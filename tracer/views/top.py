"""`brtrace top`: the live full-screen view of one bridge. One row per port
(rx/tx, broadcast, ARP, MAC moves, echoes, drops and their top reason), the
current findings highlighted, a drill-down into one port.

On a terminal it is a small curses loop over the same kernel maps as
`brtrace loops`; without one (a pipe, a file, `-o json`) it prints a plain
table per interval through the shared view lifecycle (tracer/views/base.py).
Either way it ends with a summary and detaches, on q, Ctrl-C, SIGTERM, the
end of --duration or a vanished bridge (the one-line error comes after
curses has given the terminal back).
"""

from __future__ import annotations

import curses
import os
import shutil
import sys
import time

from tracer.config import Config
from tracer.monitor import Monitor
from tracer.output.top import TopState, apply_key, build_state, cut, line_style, plain, render, with_data
from tracer.runloop import Follow, Life, attached, last_pass
from tracer.session import BridgeRun, Stopped
from tracer.views.base import View, run_view
from tracer.views.loops import port_records

GROUPS = ("drops", "ports", "fdb")
MODES = {"kprobe": "kprobe", "reconstructed": "reconstructed"}
KEY_POLL_MS = 100          # longest wait for the kernel before looking at the keyboard


def top_state(monitor: Monitor, sort_key: str = "rx", paused: bool = False,
              drill_port: str | None = None, selected: str | None = None,
              rows=None, findings=None) -> TopState:
    """A TopState from what the monitor has folded so far."""
    run = monitor.run
    rows = monitor.rows() if rows is None else rows
    findings = monitor.findings(rows) if findings is None else findings
    ports = {run.bridge.name: "the bridge device itself"}
    iface = run.iface_drops()
    for p in sorted(run.bridge.ports.values(), key=lambda p: p.name):
        who = f"{run.labels[p.name]}, " if run.labels.get(p.name) else ""
        # The interface's own drop counters since start, beside brtrace's:
        # drops that never pass kfree_skb show as a difference.
        rx, tx = iface.get(p.name, (0, 0))
        ports[p.name] = (f"{who}{p.kind or 'device'}, {p.stp_state}, {p.operstate.lower()}, "
                         f"mtu {p.mtu}, iface dropped rx {rx} tx {tx}")
    fdb_ports = {(e.mac, e.vlan): monitor.port_name(e.ifindex) for e in run.fdb() if not e.local}
    missing = [c.hook.name for c in run.kernel.choices if c.hook.name in run.hooks and c.picked is None]
    return build_state(bridge=run.bridge.name, netns=run.netns.name or "", mode=MODES.get(run.mode, ""),
                       elapsed=run.elapsed(), events_lost=monitor.stats().get("events_lost", 0),
                       probes_missing=missing, ports=ports, bridge_state=monitor.bridge_state,
                       drop_rows=rows, findings=findings, fdb_ports=fdb_ports, sort_key=sort_key,
                       paused=paused, selected=selected, drill_port=drill_port)


# -- without a terminal: a plain table per interval --------------------------------

def _plain_interval(cfg, run, monitor, out):
    lines = plain(top_state(monitor), cfg.width)
    print("\n" + cut(f"{time.strftime('%H:%M:%S')}  {lines[0]}", cfg.width), file=out)
    print("\n".join(lines[1:]), file=out, flush=True)


def _plain_summary(cfg, run, monitor, rows, findings, out):
    print(f"\nsummary: {run.elapsed():.1f} s on {run.bridge.name}", file=out)
    print("\n".join(plain(top_state(monitor, rows=rows, findings=findings), cfg.width)[1:]), file=out)


TOP = View(name="top", groups=GROUPS, on_interval=_plain_interval,
           final_records=port_records, final_table=_plain_summary)


# -- on a terminal: curses -------------------------------------------------------

_KEYS = {ord("q"): "q", ord("Q"): "q", ord("s"): "s", ord("p"): "p", ord(" "): "p",
         ord("d"): "d", ord("\n"): "enter", ord("\r"): "enter", curses.KEY_ENTER: "enter",
         ord("j"): "down", curses.KEY_DOWN: "down", ord("k"): "up", curses.KEY_UP: "up"}


class _Screen:
    """Draws rendered lines with attributes; knows nothing about the bridge."""

    def __init__(self, scr):
        self.scr = scr
        self.attrs = {"header": curses.A_BOLD, "footer": curses.A_REVERSE, "finding": curses.A_BOLD,
                      "selected": curses.A_REVERSE, "flagged": curses.A_BOLD}
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        if curses.has_colors():
            try:
                curses.start_color()
                curses.use_default_colors()
                curses.init_pair(1, curses.COLOR_RED, -1)
                self.attrs["finding"] |= curses.color_pair(1)
                self.attrs["flagged"] |= curses.color_pair(1)
            except curses.error:
                pass
        scr.nodelay(True)
        scr.keypad(True)

    def draw(self, state: TopState) -> None:
        h, w = self.scr.getmaxyx()
        lines = render(state, w, h)
        self.scr.erase()
        for i, line in enumerate(lines):
            attr = 0
            for style in line_style(lines, i).split():
                attr |= self.attrs.get(style, 0)
            try:
                self.scr.addstr(i, 0, line, attr)
            except curses.error:
                pass    # the bottom-right cell: curses cannot move the cursor past it
        self.scr.noutrefresh()
        curses.doupdate()

    def keys(self):
        """Keys typed since the last call, as apply_key() names them."""
        while True:
            ch = self.scr.getch()
            if ch == -1:
                return
            if ch == curses.KEY_RESIZE:
                yield "resize"
            elif ch in _KEYS:
                yield _KEYS[ch]


def _loop(scr, cfg: Config, life: Life, follow: Follow, monitor: Monitor) -> None:
    """Until q, the duration, a signal or a vanished bridge: the run loop
    (tracer/runloop.py) runs it; this only reads the keyboard after each poll
    and redraws."""
    screen = _Screen(scr)
    live = {"view": top_state(monitor)}
    screen.draw(live["view"])

    def on_poll():
        dirty = False
        for key in screen.keys():
            if key == "resize":
                scr.clear()
                dirty = True
                continue
            live["view"] = apply_key(live["view"], key)
            if live["view"] is None:
                return False
            dirty = True
        if dirty:
            screen.draw(live["view"])
        return True

    def on_interval():
        # The kernel maps are folded every interval, paused or not, so rates
        # stay per interval; a paused screen just keeps its numbers.
        if not live["view"].paused:
            live["view"] = with_data(live["view"], top_state(monitor))
            screen.draw(live["view"])

    life.loop([follow], cfg, on_interval=on_interval, on_poll=on_poll, poll_cap=KEY_POLL_MS / 1000)


def _run_curses(cfg: Config, out) -> int:
    # The screen size comes from the terminal, not from LINES/COLUMNS: those
    # are often stale exports (from a shell or tmux) that ncurses would prefer,
    # fixing the screen at a wrong size.
    for name in ("LINES", "COLUMNS"):
        os.environ.pop(name, None)
    run = BridgeRun(cfg, GROUPS)
    with attached([run]) as life:
        monitor = Monitor(run)
        follow = monitor.follow()        # port events: the screen shows the ports as they are
        try:
            curses.wrapper(_loop, cfg, life, follow, monitor)   # endwin() however it ends
        except Stopped:
            pass
        _summary(cfg, follow, monitor, out)
    return 0


def _summary(cfg, follow, monitor, out) -> None:
    """After the full screen: the final numbers, as `brtrace loops` ends."""
    last_pass([follow])
    run = follow.run
    state = top_state(monitor)
    width = min(200, max(40, shutil.get_terminal_size((cfg.width, 24)).columns))
    print(f"brtrace top: {run.elapsed():.1f} s on {run.bridge.name}", file=out)
    print("\n".join(plain(state, width)[1:]), file=out, flush=True)


def _is_terminal(out) -> bool:
    """A terminal curses can drive (its TERM has a terminfo entry)."""
    try:
        if not (out.isatty() and sys.stdin.isatty()):
            return False
        curses.setupterm(fd=out.fileno())
        return True
    except (AttributeError, ValueError, OSError, curses.error):
        return False


def run_top(cfg: Config, out=None) -> int:
    """`brtrace top`: curses on a terminal, a plain table per interval otherwise."""
    out = out or sys.stdout
    if cfg.json or not _is_terminal(out):
        return run_view(TOP, cfg, out)
    return _run_curses(cfg, out)
