"""The kernel maps of one attached BPF object, as brtrace reads and writes
them: the watch set and own MACs in, counter snapshots and ring-buffer records
out, as plain Python.

The compile happens in the loader child (tracer/loader.py); this process keeps
only file descriptors and reads them through libbpf (tracer/kernel/bpfmaps.py),
so the long-running process never loads LLVM. Counters are never cleared:
views compute deltas.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from tracer import abi
from tracer.decode import mac_str, neigh_addr, nud_name
from tracer.errors import KernelFeatureError
from tracer.hooks import all_maps
from tracer.kernel import bpfmaps, bpfsys
from tracer.kernel.tcx import DIRECTIONS, TcxLinks
from tracer.loader import LoaderChild, prepare_headers, tcx_program_names
from tracer.program import Program
from tracer.trace_abi import mac_filter


class KernelMaps:
    """The maps and ring buffer of one compiled, attached BPF object.
    close() detaches everything.

    Built from what the loader child sends back (`child`, or one started
    here): this process keeps only file descriptors, read through libbpf.
    tcx: (attach types, netns path or None) when ports.bpf.c was built with
    PORT_HOOK_TCX: its port programs are then linked to every watched device
    (set_watch) rather than attached to tracepoints."""

    def __init__(self, program: Program, tcx=None, child: LoaderChild | None = None):
        self.tcx_links = None
        self.detail = True          # the port programs are attached (set_detail)
        self._detached_tps: dict = {}
        self._fds: list = []
        self._ring = None
        if child is None:
            prepare_headers()
            child = LoaderChild()
        names = tcx_program_names(tcx is not None)
        reply, self._fds = child.build(program, names)
        self._progs, self._raw_tp = reply.get("progs", {}), reply.get("raw_tp", {})
        try:
            types = all_maps()
            self._maps = {name: bpfmaps.Map(name, self._fds[i], *types[name])
                         for name, i in reply["maps"].items() if name in types}
            self._events_fd = self._fds[reply["maps"][abi.EVENTS_MAP]] if abi.EVENTS_MAP in reply["maps"] else None
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
        return name in self._maps

    def set_watch(self, values_by_ifindex: dict[int, int]) -> list[int]:
        """Make the kernel watch exactly these ifindexes (value: WATCH_* flags
        | slot << WATCH_SLOT_SHIFT). Returns those that cannot be watched
        (ifindex >= WATCH_SLOTS)."""
        table = self._maps["watch"]
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
            self._maps["watch_gen"].set(0, self._gen & 0xFFFFFFFF)
        self._watched = {i: v for i, v in values_by_ifindex.items() if i < slots}
        if self.tcx_links is not None and self.detail:
            # A port that vanished before its link is simply not linked: the
            # next refresh no longer lists it.
            self.tcx_links.sync(self._watched)
        return too_big

    def set_detail(self, on: bool, tracepoints=()) -> None:
        """Attach (on) or detach the port programs: with tcx, their links to
        the watched devices; else the raw tracepoints named (each attachment
        is the fd bcc opened, closed here, and opened again from the
        program's fd: bpf(BPF_RAW_TRACEPOINT_OPEN)). The maps stay: counters
        pause while detached and go on from there."""
        if on == self.detail:
            return
        if self.tcx_links is not None:
            self.tcx_links.sync(self._watched if on else ())
        for tp in tracepoints:
            if on:
                fn = self._fds[self._progs[f"raw_tracepoint__{tp}"]]
                self._fds[self._detached_tps.pop(tp)] = bpfsys.raw_tracepoint_open(tp, fn)
            elif tp in self._raw_tp:
                i = self._raw_tp[tp]
                os.close(self._fds[i])
                self._fds[i] = -1
                self._detached_tps[tp] = i
        self.detail = on

    def set_own_macs(self, macs) -> None:
        """The bridge's own addresses (local FDB entries), for echo detection."""
        if not self.has_map("own_macs"):
            return
        want = {mac_filter(m) for m in macs}
        if want == getattr(self, "_own", set()):
            return
        table, lo = self._maps["own_macs"], self._maps["own_mac_lo"]
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
        for key, per_cpu in self._maps["drop_counts"].items():
            out[(key.ifindex, key.reason, key.location, key.ethertype)] = sum(v.value for v in per_cpu)
        return out

    def stats(self) -> dict[str, int]:
        """brtrace's own counters: events_sent/lost/rate_limited overall and
        per record kind (events_sent_drop, ...), keys full, drops seen."""
        slots = {k.value: sum(v.value for v in per_cpu) for k, per_cpu in self._maps["stats"].items()}
        c = abi.CONST
        out = {}
        for name, slot in c.items():
            if name.startswith("STAT_") and name not in ("STAT_SLOTS", "STAT_KIND_BASE", "STAT_PER_KIND"):
                out[name[5:].lower()] = slots.get(slot, 0)
        for kind, name in abi.EVENT_KIND_NAMES.items():
            for what, counter in (("events_sent", "KIND_SENT"), ("events_lost", "KIND_LOST"),
                                  ("events_rate_limited", "KIND_LIMITED")):
                out[f"{what}_{name}"] = slots.get(abi.stat_kind_slot(kind, c[counter]), 0)
        return out

    def port_counters(self, slots) -> dict[int, list]:
        """slot -> the PORT_COUNTERS monotonic counters (summed over CPUs).
        Only the slots asked for are read: one lookup per port."""
        if not self.has_map("port_counters"):
            return {}
        table, n = self._maps["port_counters"], abi.CONST["PORT_COUNTERS"]
        out = {}
        for slot in slots:
            per_cpu = table.get(slot) or []      # one struct port_ctrs per CPU
            out[slot] = [sum(cpu.c[i] for cpu in per_cpu) for i in range(n)]
        return out

    def decisions(self, slots) -> dict[int, list]:
        """slot -> the DECISIONS counters (kprobe mode only; {} otherwise)."""
        if not self.has_map("decisions"):
            return {}
        table, n = self._maps["decisions"], abi.CONST["DECISIONS"]
        return {slot: [sum(v.value for v in table.get(slot * n + d) or []) for d in range(n)]
                for slot in slots}

    def fdb_learned(self, slots) -> dict[int, int]:
        """slot -> FDB entries created on or moved to that port (FDB hook)."""
        if not self.has_map("fdb_port_counters"):
            return {}
        table = self._maps["fdb_port_counters"]
        return {slot: sum(v.value for v in table.get(slot) or []) for slot in slots}

    def arp_targets(self) -> list[dict]:
        """Every IPv4 address ARP asked for or claimed on the ports (a bounded
        set-associative array: port_arp.bpf.h arp_entry()). One batched read;
        an address that two CPUs entered at once in two ways is added up."""
        if not self.has_map("arp_targets"):
            return []
        by_ip: dict = {}
        for _k, t in self._maps["arp_targets"].used("ip"):
            if not t.ip:
                continue
            rec = by_ip.get(t.ip)
            if rec is None:
                by_ip[t.ip] = {"ip": socket.inet_ntoa(int(t.ip).to_bytes(4, "little")),
                               "requests": t.requests, "replies": t.replies, "conflicts": t.conflicts,
                               "mac": mac_str(bytes(t.mac)), "other_mac": mac_str(bytes(t.other_mac)),
                               "asker_slot": t.asker_slot, "claimer_slot": t.claimer_slot,
                               "other_slot": t.other_slot}
            else:
                for key in ("requests", "replies", "conflicts"):
                    rec[key] += getattr(t, key)
        return list(by_ip.values())

    def ndp_targets(self) -> list[dict]:
        """Every IPv6 address neighbour discovery asked for, advertised or
        sent router advertisements from, on the ports (a bounded
        set-associative array: port_ndp.bpf.h ndp_entry()). As arp_targets():
        one batched read, an address held in two ways added up."""
        if not self.has_map("ndp_targets"):
            return []
        by_addr: dict = {}
        for _k, t in self._maps["ndp_targets"].used("addr"):
            addr = bytes(t.addr)
            if not any(addr):
                continue
            rec = by_addr.get(addr)
            if rec is None:
                by_addr[addr] = {"ip": str(ipaddress.IPv6Address(addr)),
                                 **{k: getattr(t, k) for k in abi.NDP_COUNTS},
                                 **{k: mac_str(bytes(getattr(t, k)))
                                    for k in ("mac", "other_mac", "prober_mac", "answer_mac")},
                                 **{k: getattr(t, k) for k in ("asker_slot", "claimer_slot", "other_slot",
                                                               "echo_slot", "prober_slot", "answer_slot")}}
            else:
                for key in abi.NDP_COUNTS:
                    rec[key] += getattr(t, key)
        return list(by_addr.values())

    def neigh_entries(self) -> list[dict]:
        """Neighbour entries seen changing (bounded LRU), with transition counts."""
        if not self.has_map("neigh_entries"):
            return []
        out = []
        for key, st in self._maps["neigh_entries"].items():
            out.append({"netns": key.netns, "ifindex": key.ifindex,
                        "ip": neigh_addr(key.family, bytes(key.addr)), "state": nud_name(st.state),
                        "failed": st.failed, "incomplete": st.incomplete, "reachable": st.reachable,
                        "stale": st.stale, "lladdr_changes": st.lladdr_changes,
                        "lladdr": mac_str(bytes(st.lladdr)), "prev_lladdr": mac_str(bytes(st.prev_lladdr))})
        return out

    def neigh_drops(self) -> list[dict]:
        """Packets the neighbour layer dropped anywhere (neigh --all-netns)."""
        if not self.has_map("neigh_drops"):
            return []
        return [{"netns": k.netns, "ifindex": k.ifindex, "reason": k.reason, "count": v.value}
                for k, v in self._maps["neigh_drops"].items()]

    def fdb_moves(self) -> list[dict]:
        """Every MAC the FDB hook saw created or moved (bounded LRU)."""
        if not self.has_map("fdb_moves"):
            return []
        out = []
        for key, m in self._maps["fdb_moves"].items():
            out.append({"mac": mac_str(bytes(key.mac)), "vlan": key.vlan,
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
            if fd < 0:
                continue          # a tracepoint detached by set_detail()
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
