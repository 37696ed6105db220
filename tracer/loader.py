"""Compile and attach brtrace's BPF programs through bcc, specialised for the
running kernel by -D defines resolved from BTF.

Only this module and tracer/kernel/features.py touch bcc. What the rest of
brtrace gets back is plain Python: counter snapshots and decoded-ready records.
"""

from __future__ import annotations

import ctypes
import os
import re
import socket
from dataclasses import dataclass

from tracer import abi
from tracer.errors import BrtraceError, KernelFeatureError
from tracer.kernel.btf import Btf
from tracer.kernel.headers import bcc_kernel_source
from tracer.kernel.tcx import DIRECTIONS, TcxLinks

# (define, struct, member path): every kernel memory read the BPF side makes.
# common.bpf.h's reads come first; each hook group adds its own.
COMMON_FIELDS = (
    ("SKB_DEV_OFF", "sk_buff", "dev"),
    ("SKB_HEAD_OFF", "sk_buff", "head"),
    ("SKB_DATA_OFF", "sk_buff", "data"),
    ("SKB_LEN_OFF", "sk_buff", "len"),
    ("SKB_MAC_HEADER_OFF", "sk_buff", "mac_header"),
    ("SKB_PROTOCOL_OFF", "sk_buff", "protocol"),
    ("SKB_VLAN_TCI_OFF", "sk_buff", "vlan_tci"),
    ("DEV_IFINDEX_OFF", "net_device", "ifindex"),
    ("DEV_ND_NET_OFF", "net_device", "nd_net"),
    ("NET_NS_INUM_OFF", "net", "ns.inum"),
)

# Per hook group (bpf/<file>): extra fields, and (define, raw tracepoint,
# argument type or spellings) for positions in ctx->args[].
GROUPS = {
    "drops.bpf.c": ((), (
        ("ARG_SKB", "kfree_skb", "struct sk_buff *"),
        ("ARG_LOCATION", "kfree_skb", "void *"),
        ("ARG_REASON", "kfree_skb", "enum skb_drop_reason"),
    )),
    "forward.bpf.c": ((), (
        ("ARG_RX_SKB", "netif_receive_skb", "struct sk_buff *"),
        ("ARG_TX_SKB", "net_dev_queue", "struct sk_buff *"),
    )),
    "decide.bpf.c": ((
        ("BRPORT_DEV_OFF", "net_bridge_port", "dev"),
        ("BRPORT_STATE_OFF", "net_bridge_port", "state"),
    ), ()),
    "neigh.bpf.c": ((
        ("NEIGH_DEV_OFF", "neighbour", "dev"),
        ("NEIGH_TBL_OFF", "neighbour", "tbl"),
        ("NEIGH_STATE_OFF", "neighbour", "nud_state"),
        ("NEIGH_HA_OFF", "neighbour", "ha"),
        ("NEIGH_KEY_OFF", "neighbour", "primary_key"),
        ("TBL_FAMILY_OFF", "neigh_table", "family"),
    ), (
        ("ARG_NEIGH_UPDATE_DONE", "neigh_update_done", "struct neighbour *"),
        ("ARG_NEIGH_TIMER", "neigh_timer_handler", "struct neighbour *"),
        ("ARG_NEIGH_SEND_DONE", "neigh_event_send_done", "struct neighbour *"),
        ("ARG_NEIGH_SEND_DEAD", "neigh_event_send_dead", "struct neighbour *"),
    )),
    "trace.bpf.c": ((
        ("SKB_VLAN_PROTO_OFF", "sk_buff", "vlan_proto"),
    ), (
        ("ARG_RX_SKB", "netif_receive_skb", "struct sk_buff *"),
        ("ARG_TX_SKB", "net_dev_queue", "struct sk_buff *"),
        ("ARG_SKB", "kfree_skb", "struct sk_buff *"),
        ("ARG_LOCATION", "kfree_skb", "void *"),
        ("ARG_REASON", "kfree_skb", "enum skb_drop_reason"),
    )),
    "fdb.bpf.c": ((
        ("BR_DEV_OFF", "net_bridge", "dev"),
        ("BRPORT_DEV_OFF", "net_bridge_port", "dev"),
    ), (
        ("ARG_FDB_BR", "br_fdb_update", "struct net_bridge *"),
        ("ARG_FDB_PORT", "br_fdb_update", "struct net_bridge_port *"),
        ("ARG_FDB_ADDR", "br_fdb_update", ("unsigned char *", "const unsigned char *")),
        ("ARG_FDB_VID", "br_fdb_update", ("u16", "__u16")),
    )),
}

# Kept for tests and doctor: everything the drops view reads.
FIELD_DEFINES = COMMON_FIELDS
ARG_DEFINES = GROUPS["drops.bpf.c"][1]


def kernel_defines(btf: Btf, sources=("drops.bpf.c",)) -> dict[str, int]:
    """Offsets and argument positions for this kernel, from its BTF."""
    fields = list(COMMON_FIELDS)
    args = []
    for src in sources:
        extra_fields, extra_args = GROUPS[src]
        fields += extra_fields
        args += extra_args
    found = {name: btf.field(struct, path) for name, struct, path in dict.fromkeys(fields)}
    out = {name: f.offset for name, f in found.items()}
    # frame_start() (common.bpf.h) reads these four sk_buff fields with one
    # bpf_probe_read_kernel() of the span that holds them, when it is short.
    span = [found[n] for n in ("SKB_LEN_OFF", "SKB_MAC_HEADER_OFF", "SKB_HEAD_OFF", "SKB_DATA_OFF")]
    out["SKB_SPAN_START"] = min(f.offset for f in span)
    out["SKB_SPAN_LEN"] = max(f.offset + f.size for f in span) - out["SKB_SPAN_START"]
    for name, tp, type_name in args:
        out[name] = btf.arg_index(tp, type_name)
    return out


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


def _import_bcc():
    try:
        import bcc  # noqa: PLC0415 - only the loader imports bcc
    except ImportError as exc:
        raise KernelFeatureError(
            "bcc is not importable from this Python",
            "run scripts/setup (it installs python3-bpfcc and a venv that sees it)") from exc
    return bcc


def _mac(raw) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def _mac_key(mac: str) -> int:
    """A MAC as the BPF side keys it: its 6 bytes copied into a little-endian u64."""
    return int.from_bytes(bytes.fromhex(mac.replace(":", "")), "little")


def _release_compiler_heap() -> None:
    """Give clang's freed compile-time heap back to the system (~30 MB): glibc
    keeps freed arenas mapped, and brtrace lives for hours after one compile."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


class Session:
    """One compiled, attached BPF object. close() detaches everything.

    tcx: (attach types, netns path or None) when forward.bpf.c was built with
    PORT_HOOK_TCX: its port programs are then linked to every watched device
    (set_watch) rather than attached to tracepoints by bcc."""

    def __init__(self, program: Program, tcx=None):
        self.tcx_links = None
        headers, self.headers_note = bcc_kernel_source()
        if headers is not None:
            os.environ["BCC_KERNEL_SOURCE"] = str(headers)
        bcc = _import_bcc()
        text = assemble(program.sources)
        cflags = [f"-I{abi.BPF_DIR}", "-Wno-macro-redefined"]
        cflags += [f"-D{k}={v}" for k, v in sorted(program.defines.items())]
        try:
            self.bpf = bcc.BPF(text=text, cflags=cflags)
        except Exception as exc:  # bcc raises bare Exception on compile/load/attach failure
            raise KernelFeatureError(
                f"could not load BPF program ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                "run `brtrace doctor` to see what this kernel lacks") from exc
        self._events_open = False
        if tcx is not None:
            types, netns_path = tcx
            try:
                fds = {d: self.bpf.load_func(f"port_{d}", bcc.BPF.SCHED_CLS).fd for d in DIRECTIONS}
            except Exception as exc:  # bcc raises bare Exception when the verifier refuses
                self.close()
                raise KernelFeatureError(
                    f"could not load the tcx port programs ({str(exc).splitlines()[0] if str(exc) else exc})",
                    "set BRTRACE_AVOID=tcx to use the tracepoint fallback, and run `brtrace doctor`") from exc
            self.tcx_links = TcxLinks(fds, types, netns_path)
        _release_compiler_heap()

    # -- watch set ------------------------------------------------------------
    def has_map(self, name: str) -> bool:
        try:
            self.bpf[name]
        except KeyError:
            return False
        return True

    def set_watch(self, values_by_ifindex: dict[int, int]) -> list[int]:
        """Make the kernel watch exactly these ifindexes (value: WATCH_* flags
        | slot << WATCH_SLOT_SHIFT). Returns those that cannot be watched
        (ifindex >= WATCH_SLOTS)."""
        table = self.bpf["watch"]
        slots = abi.CONST["WATCH_SLOTS"]
        current = getattr(self, "_watched", {})
        changed = False
        for ifindex in set(current) - set(values_by_ifindex):
            table[ctypes.c_int(ifindex)] = table.Leaf(0, 0)
            changed = True
        too_big = []
        for ifindex, value in values_by_ifindex.items():
            if ifindex >= slots:
                too_big.append(ifindex)
            elif current.get(ifindex) != value:
                table[ctypes.c_int(ifindex)] = table.Leaf(value, 0)
                changed = True
        if changed:
            # After the array: every CPU's cached verdicts (common.bpf.h
            # watched()) are from an older generation now.
            self._gen = getattr(self, "_gen", 0) + 1
            self.bpf["watch_gen"][ctypes.c_int(0)] = ctypes.c_uint32(self._gen & 0xFFFFFFFF)
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
        table, lo = self.bpf["own_macs"], self.bpf["own_mac_lo"]
        table.clear()
        for key in want:
            table[ctypes.c_uint64(key)] = ctypes.c_uint32(1)
        last_bytes = {(key >> 40) & 0xFF for key in want}
        for b in range(256):
            lo[ctypes.c_int(b)] = ctypes.c_uint32(1 if b in last_bytes else 0)
        self._own = want

    # -- counters -------------------------------------------------------------
    def drop_counts(self) -> dict[tuple, int]:
        """(ifindex, reason, location, ethertype) -> frames freed, since load."""
        out = {}
        for key, per_cpu in self.bpf["drop_counts"].items():
            out[(key.ifindex, key.reason, key.location, key.ethertype)] = sum(per_cpu)
        return out

    def stats(self) -> dict[str, int]:
        """brtrace's own counters: events_sent/lost/rate_limited overall and
        per record kind (events_sent_drop, ...), keys full, drops seen."""
        table = self.bpf["stats"]
        c = abi.CONST
        out = {}
        for name, slot in c.items():
            if name.startswith("STAT_") and name not in ("STAT_SLOTS", "STAT_KIND_BASE"):
                out[name[5:].lower()] = sum(table[ctypes.c_int(slot)])
        for name, kind in c.items():
            if name.startswith("EVENT_"):
                base = c["STAT_KIND_BASE"] + kind * 3
                for i, what in enumerate(("events_sent", "events_lost", "events_rate_limited")):
                    out[f"{what}_{name[6:].lower()}"] = sum(table[ctypes.c_int(base + i)])
        return out

    def port_counters(self, slots) -> dict[int, list]:
        """slot -> the PORT_COUNTERS monotonic counters (summed over CPUs).
        Only the slots asked for are read: one lookup per port."""
        if not self.has_map("port_counters"):
            return {}
        table, n = self.bpf["port_counters"], abi.CONST["PORT_COUNTERS"]
        out = {}
        for slot in slots:
            per_cpu = table[ctypes.c_int(slot)]      # one struct port_ctrs per CPU
            out[slot] = [sum(cpu.c[i] for cpu in per_cpu) for i in range(n)]
        return out

    def decisions(self, slots) -> dict[int, list]:
        """slot -> the DECISIONS counters (kprobe mode only; {} otherwise)."""
        if not self.has_map("decisions"):
            return {}
        table, n = self.bpf["decisions"], abi.CONST["DECISIONS"]
        return {slot: [sum(table[ctypes.c_int(slot * n + d)]) for d in range(n)] for slot in slots}

    def fdb_learned(self, slots) -> dict[int, int]:
        """slot -> FDB entries created on or moved to that port (FDB hook)."""
        if not self.has_map("fdb_port_counters"):
            return {}
        table = self.bpf["fdb_port_counters"]
        return {slot: sum(table[ctypes.c_int(slot)]) for slot in slots}

    def arp_targets(self) -> list[dict]:
        """Every IPv4 address ARP asked for or claimed on the ports (a bounded
        set-associative array: forward.bpf.c arp_entry()). One batched read;
        an address that two CPUs entered at once in two ways is added up."""
        if not self.has_map("arp_targets"):
            return []
        table = self.bpf["arp_targets"]
        try:
            entries = [t for _k, t in table.items_lookup_batch()]
        except Exception:  # bcc raises bare Exception where the kernel has no batch ops
            entries = list(table.values())
        by_ip: dict = {}
        for t in entries:
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
        for key, st in self.bpf["neigh_entries"].items():
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
                for k, v in self.bpf["neigh_drops"].items()]

    def fdb_moves(self) -> list[dict]:
        """Every MAC the FDB hook saw created or moved (bounded LRU)."""
        if not self.has_map("fdb_moves"):
            return []
        out = []
        for key, m in self.bpf["fdb_moves"].items():
            out.append({"mac": _mac(key.mac), "vlan": key.vlan,
                        "count": m.count, "slot": m.slot, "prev_slot": m.prev_slot,
                        "last_ns": m.last_ns})
        return out

    # -- events ---------------------------------------------------------------
    def on_events(self, callback) -> None:
        """Call callback(bytes) for every ring-buffer record."""
        def _cb(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0
        self._cb = _cb  # bcc keeps only a weak hold on the callback
        self.bpf["events"].open_ring_buffer(_cb)
        self._events_open = True

    def poll(self, timeout_ms: int) -> None:
        if self._events_open:
            self.bpf.ring_buffer_poll(timeout_ms)

    def close(self) -> None:
        links, self.tcx_links = getattr(self, "tcx_links", None), None
        if links is not None:
            links.close()
        bpf, self.bpf = getattr(self, "bpf", None), None
        if bpf is not None:
            bpf.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["Session", "Program", "kernel_defines", "BrtraceError"]
