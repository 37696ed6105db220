"""One tracing run's lifecycle: kernel facts, the bridge, the attached BPF
programs, the watch set, and a clean exit whatever happens.

Checks that can fail on bad input (root, netns, bridge) run before any BPF is
loaded (the bridge is looked up while the loader child compiles, and a missing
one ends the child first); `close()` always detaches everything bcc attached.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import replace

from tracer import abi
from tracer.config import Config
from tracer.errors import BridgeGone, KernelFeatureError, UsageError
from tracer.hooks import REGISTRY, btf_needs, sources
from tracer.hooks import groups as hook_groups
from tracer.identity import NO_READER, identify
from tracer.kernel.defines import kernel_defines
from tracer.kernel.features import jiffy_ns
from tracer.kernel.tcx import attach_types as tcx_attach_types
from tracer.loader import LoaderChild, LoadRefused, prepare_headers, tcx_program_names
from tracer.maps import KernelMaps
from tracer.program import Program
from tracer.runtime import Kernel, require_root
from tracer.slots import SlotTable
from tracer.topology import Topology, port_changes, resolve_netns




FDB_DUMP_EVERY = 2.0     # seconds between FDB dumps
FDB_DUMP_MAX = 4096      # entries beyond which the FDB is no longer dumped


class Stopped(Exception):
    """SIGTERM (or SIGINT) asked the run to end; the summary is still printed."""


# Signals arriving inside a netlink exchange are deferred: pyroute2 runs its
# sockets on an asyncio loop, and an exception raised in the middle of it
# leaves that loop wedged (seen: SIGTERM during an FDB dump hung brtrace).
_signals = {"deferring": 0, "pending": None}


@contextmanager
def stop_on_signals():
    """Turn SIGTERM and SIGINT into `Stopped` for the duration of a run."""
    def _raise(signum, _frame):
        name = signal.Signals(signum).name
        if _signals["deferring"]:
            _signals["pending"] = name
            return
        raise Stopped(name)
    old = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextmanager
def signals_deferred():
    """Hold SIGTERM/SIGINT until the block ends, then raise Stopped."""
    _signals["deferring"] += 1
    try:
        yield
    finally:
        _signals["deferring"] -= 1
        pending, _signals["pending"] = _signals["pending"], None
        if pending and not _signals["deferring"]:
            raise Stopped(pending)
        if pending:
            _signals["pending"] = pending


def write_ready_file(path: str) -> None:
    """Tell a waiting test or script that every probe is attached."""
    try:
        with open(path, "w") as f:
            f.write(f"{os.getpid()}\n")
    except OSError as exc:
        raise UsageError(f"cannot write --ready-file {path}: {exc.strerror}",
                         "pass a writable path") from exc


class BridgeRun:
    """The kernel side of a view: open() attaches, close() detaches."""

    def __init__(self, cfg: Config, groups: tuple, defines: dict | None = None,
                 detail_on_demand: bool = False):
        self.cfg = cfg
        self.groups = tuple(groups)     # hook group names (tracer/hooks/)
        # watch: the port programs start detached (set_detail() arms them),
        # and the kprobes of exact decisions are not loaded at all (a kprobe
        # costs every frame however early it returns; the port programs
        # reconstruct the decisions while armed).
        self.detail_on_demand = detail_on_demand
        # hook names (tracer/probes.py) these groups implement, for headers
        self.hooks = {g.hook for g in hook_groups(self.groups)}
        if "ports" in self.groups:
            self.hooks.add("forward")      # decisions reconstructed from the port hooks, or kprobes
        self.mode = None               # forward hook's mechanism, once open
        self.port_hooks = None         # ports hook's mechanism (tcx, raw_tracepoint), once open
        self.extra_defines = {"ALL_NETNS": 0, "NEIGH_DROPS": 0, **(defines or {})}
        self.maps: KernelMaps | None = None      # once open
        self.topo: Topology | None = None
        self.names: dict = {}          # ifindex -> last known name (ports that left)
        self.slots = SlotTable(abi.CONST["MAX_PORTS"])
        self.own_macs: set = set()
        self.fdb_now: list = []
        self.fdb_skipped = False       # the FDB grew too large to dump
        self.labels: dict = {}         # port name -> "vm web01", "vpn tincd", ...
        self.onward: dict = {}         # veth port name -> its other end is a switch's port
        self._identity_shape: set = set()
        self._fdb_at: float | None = None
        self.started = time.monotonic()

    def open(self) -> "BridgeRun":
        require_root()
        self.netns = resolve_netns(self.cfg.netns)
        # The compiler process starts first and imports bcc while we read BTF,
        # then compiles while we look the bridge up (a missing one ends it).
        prepare_headers()
        self._loader = LoaderChild()
        self.kernel = Kernel.open()
        forward = self.kernel.choice("forward").picked
        if ("ports" in self.groups and forward and forward.mechanism == "kprobe"
                and not self.detail_on_demand):
            # The bridge's own functions are hookable: add exact decisions.
            self.groups = self.groups + ("forward",)
        self.mode = forward.mechanism if forward and "ports" in self.groups else None
        if self.mode == "kprobe" and self.detail_on_demand:
            self.mode = "reconstructed"
        ports = self.kernel.choice("ports").picked
        if "ports" in self.groups:
            if ports is None:
                raise KernelFeatureError("no way to hook the bridge's ports on this kernel",
                                         "run `brtrace doctor`")
            self.port_hooks = ports.mechanism
        tcx = self.port_hooks == "tcx"
        defines = kernel_defines(self.kernel.btf, *btf_needs(self.groups),
                                 direct_reads=self.kernel.features.direct_reads)
        defines.update(NETNS_INUM=self.netns.inode, EVENTS_PER_SEC=self.cfg.events_per_sec,
                       JIFFY_NS=jiffy_ns(),
                       RINGBUF_PAGES=64)
        defines.update(self.extra_defines, PORT_HOOK_TCX=int(tcx))
        for name in ("NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD"):
            value = self.kernel.reasons.value(name)
            defines[f"REASON_{name}"] = -1 if value is None else value
        program = Program(sources(self.groups), defines)
        self._loader.submit(program, tcx_program_names(tcx))
        with signals_deferred():
            self.topo = Topology(self.netns)
            self.bridge = self.topo.bridge(self.cfg.bridge)
        loader, self._loader = self._loader, None
        tcx_spec = (tcx_attach_types(self.kernel.btf), self.netns.path if self.netns.name
                    else None) if tcx else None
        try:
            self.maps = KernelMaps(program, tcx=tcx_spec, child=loader)
        except LoadRefused as exc:
            if not defines.get("KERNEL_READS_DIRECT"):
                raise
            # doctor's probe passed, yet a program was refused (a verifier
            # stricter with some read than with the probe's): build it again
            # with bpf_probe_read_kernel(), and say so.
            self.kernel.features = replace(self.kernel.features, direct_reads=False,
                                           direct_reads_why=f"refused at load: {exc.message}")
            self.kernel.warnings.append(
                f"direct kernel reads refused ({exc.message}); reading through "
                "bpf_probe_read_kernel instead (BRTRACE_AVOID=kfunc skips the attempt)")
            defines["KERNEL_READS_DIRECT"] = 0
            self.maps = KernelMaps(Program(sources(self.groups), defines), tcx=tcx_spec)
        with signals_deferred():
            self._apply_watch()
            if self.detail_on_demand:
                self.set_detail(False)
        # The interfaces' own drop counters at start, to reconcile at the end.
        self.iface_baseline = {i: (p.rx_dropped, p.tx_dropped) for i, p in self.bridge.ports.items()}
        self.started = time.monotonic()
        if self.cfg.ready_file:
            write_ready_file(self.cfg.ready_file)
        return self

    def _apply_watch(self) -> None:
        self.unslotted = self.slots.assign(self.bridge.ifindex, list(self.bridge.ports))
        shift = abi.CONST["WATCH_SLOT_SHIFT"]
        values = {self.bridge.ifindex: abi.CONST["WATCH_BRIDGE"]}
        for ifindex in self.bridge.ports:
            values[ifindex] = abi.CONST["WATCH_PORT"] | (self.slots.by_ifindex.get(ifindex, 0) << shift)
        self.unwatchable = self.maps.set_watch(values)
        self.names[self.bridge.ifindex] = self.bridge.name
        for i, p in self.bridge.ports.items():
            self.names[i] = p.name
        # Who is behind each port: looked up again only when the ports, or a
        # tap's state (a reader came or went), change.
        shape = {(p.ifindex, p.name, p.kind, p.operstate) for p in self.bridge.ports.values()}
        if shape != self._identity_shape:
            for port, label in identify(self.bridge.ports.values()).items():
                # A tap whose reader went away keeps naming who held it: the
                # evidence of what was behind a port outlives the process.
                before = self.labels.get(port, "")
                if label == NO_READER and before and NO_READER not in before:
                    label = f"{before.split('; ')[0]}; now {NO_READER}"
                self.labels[port] = label
            self.onward.update(self.topo.onward_veths(self.bridge))
            self._identity_shape = shape
        self._maybe_dump_fdb()
        # The bridge's own addresses: its MAC and its ports' (the kernel's local
        # FDB entries, br_fdb_add_local()), plus any other local entry dumped.
        self.own_macs = ({p.mac.lower() for p in self.bridge.ports.values() if p.mac}
                         | {self.bridge.mac.lower()} | {e.mac for e in self.fdb_now if e.local})
        self.maps.set_own_macs(self.own_macs)

    def set_detail(self, on: bool) -> None:
        """Attach (on) or detach the port programs; the other hooks stay."""
        if "ports" in self.groups and self.maps is not None:
            self.maps.set_detail(on, () if self.port_hooks == "tcx" else REGISTRY["ports"].tracepoints)

    @property
    def detail(self) -> bool:
        return self.maps is not None and self.maps.detail and "ports" in self.groups

    def iface_drops(self) -> dict:
        """port name -> (rx_dropped, tx_dropped) the interface itself counted
        during the run (netlink stats64), for ports present at start and now."""
        out = {}
        for ifindex, port in self.bridge.ports.items():
            if ifindex in self.iface_baseline:
                rx0, tx0 = self.iface_baseline[ifindex]
                out[port.name] = (port.rx_dropped - rx0, port.tx_dropped - tx0)
        return out

    def _maybe_dump_fdb(self) -> None:
        """Dump the FDB (for explanations and flush counts) at most every
        FDB_DUMP_EVERY seconds, and not at all once it has grown past
        FDB_DUMP_MAX entries: a random-MAC flood makes a netlink dump of the
        whole table cost seconds, and the per-packet counters do not need it."""
        now = time.monotonic()
        if self._fdb_at is not None and now - self._fdb_at < FDB_DUMP_EVERY:
            return
        # The FDB hook counts every entry learned or moved: a cheap upper bound
        # on the table's growth, read before paying for a dump.
        learned = sum(self.maps.fdb_learned(sorted(self.slots.owner)).values())
        if len(self.fdb_now) > FDB_DUMP_MAX or learned > FDB_DUMP_MAX:
            self.fdb_skipped = True
            return
        self.fdb_now = self.topo.fdb(self.bridge)
        self._fdb_at = now

    def shown(self, port: str) -> str:
        """`vnet3 (vm web01)`, or the bare name when nothing is known."""
        return f"{port} ({self.labels[port]})" if self.labels.get(port) else port

    def slot_name(self, slot: int) -> str:
        ifindex = self.slots.owner.get(slot)
        return self.names.get(ifindex, f"slot {slot}") if ifindex is not None else f"slot {slot}"

    def refresh(self) -> list:
        """Follow ports joining or leaving; BridgeGone if the bridge vanished.
        Returns the port events (topology.port_changes) since the last look."""
        before, fdb_before = self.bridge, self.fdb_now
        self._check_netns()
        with signals_deferred():
            try:
                self.bridge = self.topo.bridge(self.cfg.bridge)
            except UsageError as exc:
                raise BridgeGone(f"bridge {self.cfg.bridge} disappeared during the run ({exc.message})",
                                 "the summary above covers the run until then") from exc
            self._apply_watch()
        return port_changes(before, self.bridge, fdb_before, self.fdb_now)

    def _check_netns(self) -> None:
        """BridgeGone if the bridge's named namespace was deleted or replaced
        by a new one of the same name: our netlink socket keeps the old one
        alive, bridge and all, so looking the bridge up in it would still
        find it (a ghost nobody can reach)."""
        if not self.netns.name:
            return
        try:
            inode = os.stat(self.netns.path).st_ino
        except OSError:
            inode = None
        if inode != self.netns.inode:
            what = "deleted" if inode is None else "replaced by a new one of the same name"
            raise BridgeGone(f"network namespace {self.netns.name} of bridge {self.cfg.bridge} was {what}",
                             "the summary above covers the run until then")

    def fdb(self) -> list:
        """The FDB as of the last dump (see _maybe_dump_fdb)."""
        return self.fdb_now

    def fdb_read_at(self) -> float | None:
        """Seconds into the run when fdb() was dumped (None: never)."""
        return None if self._fdb_at is None else max(0.0, self._fdb_at - self.started)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def close(self) -> None:
        """Detach everything; a second Ctrl-C meanwhile waits until it is done
        (it is raised as Stopped afterwards, outside any netlink exchange)."""
        with signals_deferred():
            loader, self._loader = getattr(self, "_loader", None), None
            if loader is not None:
                loader.close()      # never asked to build: it exits
            if self.maps is not None:
                self.maps.close()
                self.maps = None
            if self.topo is not None:
                self.topo.close()
                self.topo = None

    def __enter__(self):
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
