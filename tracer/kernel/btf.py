"""Read the running kernel's BTF through libbpf (ctypes).

brtrace compiles its BPF C against whatever headers exist (often another kernel
version's), so it never trusts a header's struct layout. Every field offset, enum
value and raw-tracepoint argument position the C code needs is looked up here, in
/sys/kernel/btf/vmlinux, and handed to the compiler as a -D define.

libbpf (libbpf.so.1, Debian's libbpf1) parses the blob; we only walk its type
records, whose layout is the stable BTF ABI (include/uapi/linux/btf.h).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass

from tracer.errors import KernelFeatureError

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"

# BTF kinds (include/uapi/linux/btf.h, stable ABI).
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class _BtfType(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _BtfMember(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32),
                ("offset", ctypes.c_uint32)]


class _BtfEnum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _BtfEnum64(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("lo", ctypes.c_uint32), ("hi", ctypes.c_uint32)]


class _BtfParam(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32)]


class _BtfArray(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32),
                ("nelems", ctypes.c_uint32)]


@dataclass(frozen=True)
class Field:
    """Where a (possibly nested) struct member lives: byte offset and byte size."""

    offset: int
    size: int


def _load_libbpf():
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise KernelFeatureError(
            f"cannot load libbpf ({exc})", "install it: apt-get install libbpf1") from exc
    lib.btf__parse.restype = ctypes.c_void_p
    lib.btf__parse.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.btf__free.argtypes = [ctypes.c_void_p]
    lib.btf__type_cnt.restype = ctypes.c_uint32
    lib.btf__type_cnt.argtypes = [ctypes.c_void_p]
    lib.btf__type_by_id.restype = ctypes.POINTER(_BtfType)
    lib.btf__type_by_id.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.btf__name_by_offset.restype = ctypes.c_char_p
    lib.btf__name_by_offset.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.btf__find_by_name_kind.restype = ctypes.c_int32
    lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    return lib


class Btf:
    """The kernel's type information, queried by name."""

    def __init__(self, path: str = VMLINUX_BTF):
        if not os.path.exists(path):
            raise KernelFeatureError(
                f"no BTF at {path}: this kernel was built without CONFIG_DEBUG_INFO_BTF",
                "brtrace needs BTF to read kernel structs safely; use a kernel with BTF "
                "(Debian/Ubuntu/RHEL kernels have it)")
        self._lib = _load_libbpf()
        self._btf = self._lib.btf__parse(path.encode(), None)
        # libbpf returns NULL and sets errno on failure (libbpf 1.x strict mode).
        if not self._btf:
            raise KernelFeatureError(f"libbpf could not parse BTF at {path}",
                                     "check that the file is readable (run as root)")
        self.path = path

    def close(self) -> None:
        if self._btf:
            self._lib.btf__free(self._btf)
            self._btf = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- raw access ---------------------------------------------------------
    def _type(self, type_id: int) -> _BtfType:
        return self._lib.btf__type_by_id(self._btf, type_id).contents

    def _name(self, name_off: int) -> str:
        raw = self._lib.btf__name_by_offset(self._btf, name_off)
        return raw.decode() if raw else ""

    @staticmethod
    def _kind(t: _BtfType) -> int:
        return (t.info >> 24) & 0x1F

    @staticmethod
    def _vlen(t: _BtfType) -> int:
        return t.info & 0xFFFF

    def _trailing(self, t: _BtfType, ctype, count: int):
        """The records that follow a btf_type (members, enumerators, params)."""
        base = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        return (ctype * count).from_address(base)

    def find(self, name: str, kind: int) -> int:
        type_id = self._lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        if type_id < 0:
            raise KernelFeatureError(f"kernel BTF has no {name!r} (kind {kind})",
                                     "this kernel is too old or too different for brtrace")
        return type_id

    def _strip(self, type_id: int) -> int:
        """Follow typedefs and qualifiers to the underlying type."""
        while self._kind(self._type(type_id)) in _MODIFIERS:
            type_id = self._type(type_id).size_or_type
        return type_id

    def type_size(self, type_id: int) -> int:
        type_id = self._strip(type_id)
        t = self._type(type_id)
        kind = self._kind(t)
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            arr = _BtfArray.from_address(ctypes.addressof(t) + ctypes.sizeof(_BtfType))
            return arr.nelems * self.type_size(arr.type)
        return t.size_or_type

    def type_name(self, type_id: int) -> str:
        """A C-ish spelling, enough to recognise `struct sk_buff *` and friends."""
        t = self._type(type_id)
        kind = self._kind(t)
        if kind == KIND_PTR:
            return (self.type_name(t.size_or_type) if t.size_or_type else "void") + " *"
        if kind in (KIND_CONST, KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG):
            return self.type_name(t.size_or_type)
        prefix = {KIND_STRUCT: "struct ", KIND_UNION: "union ", KIND_ENUM: "enum ",
                  KIND_ENUM64: "enum ", KIND_FWD: "struct "}.get(kind, "")
        return prefix + self._name(t.name_off)

    # -- queries ------------------------------------------------------------
    def _members(self, type_id: int):
        t = self._type(type_id)
        if self._kind(t) not in (KIND_STRUCT, KIND_UNION):
            raise KernelFeatureError(f"BTF type {type_id} is not a struct or union")
        kflag = t.info >> 31
        for m in self._trailing(t, _BtfMember, self._vlen(t)):
            bit_off = m.offset & 0xFFFFFF if kflag else m.offset
            bitfield = (m.offset >> 24) if kflag else 0
            yield self._name(m.name_off), m.type, bit_off, bitfield

    def _find_member(self, type_id: int, name: str):
        """Search a struct for `name`, descending into anonymous unions/structs
        (sk_buff keeps `dev` inside an anonymous union since 5.x)."""
        for mname, mtype, bit_off, bitfield in self._members(type_id):
            if mname == name:
                return mtype, bit_off, bitfield
            if not mname:
                inner = self._strip(mtype)
                if self._kind(self._type(inner)) in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name)
                    if found:
                        return found[0], bit_off + found[1], found[2]
        return None

    def field(self, struct: str, path: str) -> Field:
        """Byte offset and size of `path` ("dev", "nd_net.net", "ns.inum") in `struct`."""
        type_id = self.find(struct, KIND_STRUCT)
        total_bits = 0
        mtype = type_id
        for part in path.split("."):
            found = self._find_member(self._strip(mtype), part)
            if found is None:
                raise KernelFeatureError(
                    f"struct {struct} has no member {path!r} in this kernel's BTF",
                    "this kernel is not supported yet; please report its version")
            mtype, bit_off, bitfield = found
            if bitfield or bit_off % 8:
                raise KernelFeatureError(f"{struct}.{path} is a bitfield; cannot read it directly")
            total_bits += bit_off
        return Field(total_bits // 8, self.type_size(mtype))

    def enum(self, name: str) -> dict[str, int]:
        """Enumerators of `enum name` (32- or 64-bit) as name -> value."""
        type_id = self._lib.btf__find_by_name_kind(self._btf, name.encode(), KIND_ENUM)
        kind = KIND_ENUM
        if type_id < 0:
            type_id, kind = self.find(name, KIND_ENUM64), KIND_ENUM64
        t = self._type(type_id)
        signed = bool(t.info >> 31)  # kind_flag on an enum: its values are signed
        if kind == KIND_ENUM:
            return {self._name(e.name_off): e.val if signed else e.val & 0xFFFFFFFF
                    for e in self._trailing(t, _BtfEnum, self._vlen(t))}
        out = {}
        for e in self._trailing(t, _BtfEnum64, self._vlen(t)):
            v = (e.hi << 32) | e.lo
            out[self._name(e.name_off)] = v - (1 << 64) if signed and v >> 63 else v
        return out

    def raw_tracepoint_args(self, tracepoint: str) -> list[tuple[str, str]]:
        """Arguments a raw tracepoint passes to BPF, in ctx->args[] order.

        The kernel declares `typedef void (*btf_trace_<tp>)(void *__data, <TP_PROTO>)`
        for every tracepoint (include/trace/bpf_probe.h); the first parameter is the
        tracepoint's private data and is not part of ctx->args.
        """
        type_id = self.find(f"btf_trace_{tracepoint}", KIND_TYPEDEF)
        ptr = self._type(type_id).size_or_type
        proto = self._type(ptr).size_or_type
        t = self._type(proto)
        if self._kind(t) != KIND_FUNC_PROTO:
            raise KernelFeatureError(f"btf_trace_{tracepoint} is not a function pointer")
        params = list(self._trailing(t, _BtfParam, self._vlen(t)))[1:]
        return [(self._name(p.name_off), self.type_name(p.type)) for p in params]

    def arg_index(self, tracepoint: str, type_name, nth: int = 0) -> int:
        """Position in ctx->args[] of the `nth` argument whose type is `type_name`.

        btf_trace_* prototypes carry no parameter names, so arguments are found by
        type: kfree_skb's skb is its `struct sk_buff *`, its location the `void *`,
        its reason the `enum skb_drop_reason` (the order changed across kernels).
        """
        args = self.raw_tracepoint_args(tracepoint)
        wanted = (type_name,) if isinstance(type_name, str) else tuple(type_name)
        hits = [i for i, (_name, tname) in enumerate(args) if tname in wanted]
        if len(hits) <= nth:
            raise KernelFeatureError(
                f"raw tracepoint {tracepoint} has no argument of type {type_name!r} "
                f"here (it has {[t for _n, t in args]})",
                "this kernel is not supported yet; please report its version")
        return hits[nth]

    def has_tracepoint(self, tracepoint: str) -> bool:
        return self._lib.btf__find_by_name_kind(
            self._btf, f"btf_trace_{tracepoint}".encode(), KIND_TYPEDEF) >= 0
