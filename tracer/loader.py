"""Compile and attach brtrace's BPF programs through bcc, specialised for the
running kernel by -D defines resolved from BTF (tracer/kernel/defines.py).

bcc runs in a helper process (tracer/loader_child.py) that hands back file
descriptors; this module reads the maps and the ring buffer through libbpf
(tracer/kernel/bpfmaps.py), so the long-running process never loads LLVM.
What the rest of brtrace gets back is plain Python: counter snapshots and
decoded-ready records.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass

from tracer import abi
from tracer.errors import BrtraceError, KernelFeatureError
from tracer.kernel import bpfmaps
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.tcx import DIRECTIONS, TcxLinks

@dataclass(frozen=True)
class Program:
    """What to compile: hook-group files from bpf/ and the defines for them."""

    sources: tuple          # e.g. ("drops.bpf.c",)
    defines: dict           # name -> int


_LOCAL_INCLUDE = re.compile(r'^#include "([a-z_]+\.bpf\.[ch])"\s*$', re.M)


def assemble(sources, bpf_dir=abi.BPF_DIR) -> str:
    """One C text from hook-group files, with our own `*.bpf.h` includes
    expanded in place (each once). bcc rewrites map calls such as
    `watch.lookup(&k)` only in the main text, not in #included files, so the
    shared helpers must be part of it. brtrace.h (plain types) stays an include.
    """
    seen: set = set()

    def expand(name: str) -> str:
        if name in seen:
            return ""
        seen.add(name)
        body = (bpf_dir / name).read_text()
        return _LOCAL_INCLUDE.sub(lambda m: expand(m.group(1)), body)

    return "\n".join(expand(src) for src in sources)


def _mac(raw) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def _mac_key(mac: str) -> int:
    """A MAC as the BPF side keys it: its 6 bytes copied into a little-endian u64."""
    return int.from_bytes(bytes.fromhex(mac.replace(":", "")), "little")


U32, U64 = ctypes.c_uint32, ctypes.c_uint64
# Every map userspace reads or writes: name -> (key, value) ctypes types (for
# per-CPU maps, the value of one CPU). bpfmaps.Map checks them against the
# kernel's bpf_map_info when the map arrives.
MAPS = {
    "watch": (U32, abi.WatchEntry), "watch_gen": (U32, U32), "stats": (U32, U64),
    "port_counters": (U32, abi.PortCtrs), "own_macs": (U64, U32), "own_mac_lo": (U32, U32),
    "decisions": (U32, U64), "fdb_port_counters": (U32, U64), "drop_counts": (abi.DropKey, U64),
    "arp_targets": (U32, abi.ArpTarget), "neigh_entries": (abi.NeighKey, abi.NeighStats),
    "neigh_drops": (abi.NeighDropKey, U64), "fdb_moves": (abi.FdbKey, abi.FdbMove),
}
EVENTS_MAP = "events"
CHILD_TIMEOUT = 300.0   # compile + load; ~30 s in the emulated VM of the test lane


def prepare_headers() -> None:
    """Point bcc at headers it can compile against (BCC_KERNEL_SOURCE, which
    the loader child inherits)."""
    headers, _note = bcc_kernel_source()
    if headers is not None:
        os.environ["BCC_KERNEL_SOURCE"] = str(headers)


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
                                         stdout=subprocess.DEVNULL)
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
                                           "maps": list(MAPS) + [EVENTS_MAP],
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


class Session:
    """One compiled, attached BPF object. close() detaches everything.

    The compile happens in a helper process (tracer/loader_child.py); this
    process keeps only file descriptors, read through libbpf (bpfmaps).
    tcx: (attach types, netns path or None) when forward.bpf.c was built with
    PORT_HOOK_TCX: its port programs are then linked to every watched device
    (set_watch) rather than attached to tracepoints."""

    def __init__(self, program: Program, tcx=None, child: LoaderChild | None = None):
        self.tcx_links = None
        self._fds: list = []
        self._ring = None
        if child is None:
            prepare_headers()
            child = LoaderChild()
        names = tcx_program_names(tcx is not None)
        reply, self._fds = child.build(program, names)
        try:
            self.maps = {name: bpfmaps.Map(name, self._fds[i], *MAPS[name])
                         for name, i in reply["maps"].items() if name in MAPS}
            self._events_fd = self._fds[reply["maps"][EVENTS_MAP]] if EVENTS_MAP in reply["maps"] else None
            if tcx is not None:
                types, netns_path = tcx
                missing = [n for n in names if n not in reply["progs"]]
                if missing:
                    raise KernelFeatureError(f"the tcx port program {missing[0]} did not load",
                                             "set BRTRACE_AVOID=tcx to use the tracepoint fallback")
                fds = {d: self._fds[reply["progs"][f"port_{d}"]] for d in DIRECTIONS}
                self.tcx_links = TcxLinks(fds, types, netns_path)
        except BaseException:
            self.close()
            raise

    # -- watch set ------------------------------------------------------------
    def has_map(self, name: str) -> bool:
        return name in self.maps

    def set_watch(self, values_by_ifindex: dict[int, int]) -> list[int]:
        """Make the kernel watch exactly these ifindexes (value: WATCH_* flags
        | slot << WATCH_SLOT_SHIFT). Returns those that cannot be watched
        (ifindex >= WATCH_SLOTS)."""
        table = self.maps["watch"]
        slots = abi.CONST["WATCH_SLOTS"]
        current = getattr(self, "_watched", {})
        changed = False
        for ifindex in set(current) - set(values_by_ifindex):
            table.set(ifindex, abi.WatchEntry(0, 0))
            changed = True
        too_big = []
        for ifindex, value in values_by_ifindex.items():
            if ifindex >= slots:
                too_big.append(ifindex)
            elif current.get(ifindex) != value:
                table.set(ifindex, abi.WatchEntry(value, 0))
                changed = True
        if changed:
            # After the array: every CPU's cached verdicts (common.bpf.h
            # watched()) are from an older generation now.
            self._gen = getattr(self, "_gen", 0) + 1
            self.maps["watch_gen"].set(0, self._gen & 0xFFFFFFFF)
        self._watched = {i: v for i, v in values_by_ifindex.items() if i < slots}
        if self.tcx_links is not None:
            # A port that vanished before its link is simply not linked: the
            # next refresh no longer lists it.
            self.tcx_links.sync(self._watched)
        return too_big

    def set_own_macs(self, macs) -> None:
        """The bridge's own addresses (local FDB entries), for echo detection."""
        if not self.has_map("own_macs"):
            return
        want = {_mac_key(m) for m in macs}
        if want == getattr(self, "_own", set()):
            return
        table, lo = self.maps["own_macs"], self.maps["own_mac_lo"]
        table.clear()
        for key in want:
            table.set(key, 1)
        last_bytes = {(key >> 40) & 0xFF for key in want}
        for b in range(256):
            lo.set(b, 1 if b in last_bytes else 0)
        self._own = want

    # -- counters -------------------------------------------------------------
    def drop_counts(self) -> dict[tuple, int]:
        """(ifindex, reason, location, ethertype) -> frames freed, since load."""
        out = {}
        for key, per_cpu in self.maps["drop_counts"].items():
            out[(key.ifindex, key.reason, key.location, key.ethertype)] = sum(v.value for v in per_cpu)
        return out

    def stats(self) -> dict[str, int]:
        """brtrace's own counters: events_sent/lost/rate_limited overall and
        per record kind (events_sent_drop, ...), keys full, drops seen."""
        slots = {k.value: sum(v.value for v in per_cpu) for k, per_cpu in self.maps["stats"].items()}
        c = abi.CONST
        out = {}
        for name, slot in c.items():
            if name.startswith("STAT_") and name not in ("STAT_SLOTS", "STAT_KIND_BASE"):
                out[name[5:].lower()] = slots.get(slot, 0)
        for name, kind in c.items():
            if name.startswith("EVENT_"):
                base = c["STAT_KIND_BASE"] + kind * 3
                for i, what in enumerate(("events_sent", "events_lost", "events_rate_limited")):
                    out[f"{what}_{name[6:].lower()}"] = slots.get(base + i, 0)
        return out

    def port_counters(self, slots) -> dict[int, list]:
        """slot -> the PORT_COUNTERS monotonic counters (summed over CPUs).
        Only the slots asked for are read: one lookup per port."""
        if not self.has_map("port_counters"):
            return {}
        table, n = self.maps["port_counters"], abi.CONST["PORT_COUNTERS"]
        out = {}
        for slot in slots:
            per_cpu = table.get(slot) or []      # one struct port_ctrs per CPU
            out[slot] = [sum(cpu.c[i] for cpu in per_cpu) for i in range(n)]
        return out

    def decisions(self, slots) -> dict[int, list]:
        """slot -> the DECISIONS counters (kprobe mode only; {} otherwise)."""
        if not self.has_map("decisions"):
            return {}
        table, n = self.maps["decisions"], abi.CONST["DECISIONS"]
        return {slot: [sum(v.value for v in table.get(slot * n + d) or []) for d in range(n)]
                for slot in slots}

    def fdb_learned(self, slots) -> dict[int, int]:
        """slot -> FDB entries created on or moved to that port (FDB hook)."""
        if not self.has_map("fdb_port_counters"):
            return {}
        table = self.maps["fdb_port_counters"]
        return {slot: sum(v.value for v in table.get(slot) or []) for slot in slots}

    def arp_targets(self) -> list[dict]:
        """Every IPv4 address ARP asked for or claimed on the ports (a bounded
        set-associative array: forward.bpf.c arp_entry()). One batched read;
        an address that two CPUs entered at once in two ways is added up."""
        if not self.has_map("arp_targets"):
            return []
        by_ip: dict = {}
        for _k, t in self.maps["arp_targets"].items():
            if not t.ip:
                continue
            rec = by_ip.get(t.ip)
            if rec is None:
                by_ip[t.ip] = {"ip": socket.inet_ntoa(int(t.ip).to_bytes(4, "little")),
                               "requests": t.requests, "replies": t.replies, "conflicts": t.conflicts,
                               "mac": _mac(t.mac), "other_mac": _mac(t.other_mac),
                               "asker_slot": t.asker_slot, "claimer_slot": t.claimer_slot,
                               "other_slot": t.other_slot}
            else:
                for key in ("requests", "replies", "conflicts"):
                    rec[key] += getattr(t, key)
        return list(by_ip.values())

    def neigh_entries(self) -> list[dict]:
        """Neighbour entries seen changing (bounded LRU), with transition counts."""
        if not self.has_map("neigh_entries"):
            return []
        from tracer.decode import neigh_addr, nud_name  # noqa: PLC0415 - pure helpers
        out = []
        for key, st in self.maps["neigh_entries"].items():
            out.append({"netns": key.netns, "ifindex": key.ifindex,
                        "ip": neigh_addr(key.family, bytes(key.addr)), "state": nud_name(st.state),
                        "failed": st.failed, "incomplete": st.incomplete, "reachable": st.reachable,
                        "stale": st.stale, "lladdr_changes": st.lladdr_changes,
                        "lladdr": _mac(st.lladdr), "prev_lladdr": _mac(st.prev_lladdr)})
        return out

    def neigh_drops(self) -> list[dict]:
        """Packets the neighbour layer dropped anywhere (neigh --all-netns)."""
        if not self.has_map("neigh_drops"):
            return []
        return [{"netns": k.netns, "ifindex": k.ifindex, "reason": k.reason, "count": v.value}
                for k, v in self.maps["neigh_drops"].items()]

    def fdb_moves(self) -> list[dict]:
        """Every MAC the FDB hook saw created or moved (bounded LRU)."""
        if not self.has_map("fdb_moves"):
            return []
        out = []
        for key, m in self.maps["fdb_moves"].items():
            out.append({"mac": _mac(key.mac), "vlan": key.vlan,
                        "count": m.count, "slot": m.slot, "prev_slot": m.prev_slot,
                        "last_ns": m.last_ns})
        return out

    # -- events ---------------------------------------------------------------
    def on_events(self, callback) -> None:
        """Call callback(bytes) for every ring-buffer record."""
        if self._events_fd is None:
            raise KernelFeatureError("these programs have no events ring buffer", "a brtrace bug")
        self._ring = bpfmaps.RingBuffer(self._events_fd, callback)

    def poll(self, timeout_ms: int) -> None:
        if self._ring is not None:
            self._ring.poll(timeout_ms)

    def close(self) -> None:
        links, self.tcx_links = getattr(self, "tcx_links", None), None
        if links is not None:
            links.close()
        ring, self._ring = getattr(self, "_ring", None), None
        if ring is not None:
            ring.close()
        fds, self._fds = getattr(self, "_fds", []), []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Session", "Program", "BrtraceError"]
