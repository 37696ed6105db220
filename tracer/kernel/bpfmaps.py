"""BPF maps and the ring buffer by file descriptor, through libbpf (ctypes).

Why not bcc's tables: brtrace compiles its programs with bcc in a short-lived
helper process (tracer/loader_child.py), so the process that runs for hours
never loads bcc and LLVM (~100 MB resident). What it keeps are file
descriptors; this module reads and writes them with libbpf.so.1 (Debian's
libbpf1, already used for BTF). Keys and values are the ctypes mirrors of
bpf/brtrace.h (tracer/abi.py); each map's sizes are checked against the
kernel's own description of it (bpf_map_info) when it is opened.
"""

from __future__ import annotations

import ctypes
import errno
import os

from tracer.errors import KernelFeatureError

# enum bpf_map_type (stable uapi): the per-CPU kinds hold one value per possible CPU.
PERCPU_TYPES = {5, 6, 10}       # PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH
ARRAY_TYPES = {2, 6}            # ARRAY, PERCPU_ARRAY


class _MapInfo(ctypes.Structure):
    # struct bpf_map_info's first fields (include/uapi/linux/bpf.h, append-only ABI)
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 64)]


_SAMPLE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
_lib = None


def lib():
    global _lib
    if _lib is None:
        try:
            _lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError as exc:
            raise KernelFeatureError(f"cannot load libbpf ({exc})",
                                     "install it: apt-get install libbpf1") from exc
        vp, i = ctypes.c_void_p, ctypes.c_int
        for name, args in (("bpf_map_lookup_elem", [i, vp, vp]),
                           ("bpf_map_update_elem", [i, vp, vp, ctypes.c_uint64]),
                           ("bpf_map_delete_elem", [i, vp]),
                           ("bpf_map_get_next_key", [i, vp, vp]),
                           ("bpf_map_lookup_batch", [i, vp, vp, vp, vp, vp, vp]),
                           ("bpf_obj_get_info_by_fd", [i, vp, vp])):
            getattr(_lib, name).argtypes = args
            getattr(_lib, name).restype = i
        _lib.ring_buffer__new.argtypes = [i, _SAMPLE_CB, vp, vp]
        _lib.ring_buffer__new.restype = vp
        _lib.ring_buffer__poll.argtypes = [vp, i]
        _lib.ring_buffer__poll.restype = i
        _lib.ring_buffer__free.argtypes = [vp]
        _lib.libbpf_num_possible_cpus.restype = i
    return _lib


def possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n <= 0:
        raise KernelFeatureError("cannot count the possible CPUs", "check /sys/devices/system/cpu/possible")
    return n


def _nonzero(value) -> bool:
    """A field read from a map is set: a non-zero int, or an array with a non-zero byte."""
    return bool(value) if isinstance(value, int) else any(bytes(value))


def _as(ctype, value):
    """`value` as a ctypes object: as it is if it is one, else ctype(value)."""
    return value if isinstance(value, (ctypes._SimpleCData, ctypes.Structure)) else ctype(value)


class Map:
    """One map: `key` and `value` ctypes types (value per CPU for per-CPU maps)."""

    def __init__(self, name: str, fd: int, key, value):
        self.name, self.fd, self.key, self.value = name, fd, key, value
        info = _MapInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            raise KernelFeatureError(f"cannot describe map {name}", "run `brtrace doctor`")
        if (info.key_size, info.value_size) != (ctypes.sizeof(key), ctypes.sizeof(value)):
            raise KernelFeatureError(
                f"map {name}: kernel says key/value {info.key_size}/{info.value_size} bytes, "
                f"tracer/abi.py {ctypes.sizeof(key)}/{ctypes.sizeof(value)}",
                "bpf/brtrace.h and tracer/abi.py disagree: fix the mirror")
        self.max_entries = info.max_entries
        self.percpu = info.type in PERCPU_TYPES
        self.array = info.type in ARRAY_TYPES
        # per-CPU values come padded to 8 bytes each, one per possible CPU
        self._stride = (ctypes.sizeof(value) + 7) // 8 * 8
        self._ncpu = possible_cpus() if self.percpu else 1

    def _value_buf(self):
        return (ctypes.c_uint8 * (self._stride * self._ncpu))()

    def _values(self, buf, base: int = 0) -> list:
        return [self.value.from_buffer_copy(buf, base + i * self._stride) for i in range(self._ncpu)]

    def _key(self, key):
        return _as(self.key, key)

    def get(self, key):
        """The value (a list, one per CPU, for per-CPU maps), or None if absent."""
        buf = self._value_buf()
        k = self._key(key)
        if lib().bpf_map_lookup_elem(self.fd, ctypes.byref(k), buf) != 0:
            return None
        vals = self._values(buf)
        return vals if self.percpu else vals[0]

    def set(self, key, value) -> None:
        k = self._key(key)
        v = _as(self.value, value)
        if lib().bpf_map_update_elem(self.fd, ctypes.byref(k), ctypes.byref(v), 0) != 0:
            err = ctypes.get_errno()
            raise KernelFeatureError(f"cannot update map {self.name}: {os.strerror(err)}",
                                     "run `brtrace doctor`")

    def delete(self, key) -> None:
        lib().bpf_map_delete_elem(self.fd, ctypes.byref(self._key(key)))

    def keys(self) -> list:
        out, prev = [], None
        nxt = self.key()
        while lib().bpf_map_get_next_key(self.fd, None if prev is None else ctypes.byref(prev),
                                         ctypes.byref(nxt)) == 0:
            out.append(nxt)
            prev, nxt = nxt, self.key()
        return out

    def items(self) -> list:
        """(key, value) of every entry; an array in one batched read."""
        if self.array:
            batch = self._batch()
            if batch is not None:
                return batch
        out = []
        for k in self.keys():
            v = self.get(k)
            if v is not None:        # deleted since the key walk
                out.append((k, v))
        return out

    def clear(self) -> None:
        for k in self.keys():
            self.delete(k)

    def used(self, field: str) -> list:
        """(key, value) of the entries of an array whose `field` is not all
        zero bytes, in one batched read. For the large set-associative
        tables (arp_targets, ndp_targets) that are mostly empty: only the used
        slots are decoded, which is what keeps reading them every second cheap
        (decoding all 4096 slots cost ~14 ms a read)."""
        raw = self._batch_raw() if self.array and not self.percpu else None
        if raw is None:
            return [(k, v) for k, v in self.items()
                    if any(_nonzero(getattr(x, field)) for x in (v if self.percpu else [v]))]
        keys, vals, count = raw
        f = getattr(self.value, field)
        zero = bytes(f.size)
        stride, off = self._stride, f.offset
        data = bytes(vals)[:count * stride]
        return [(_as(self.key, keys[i]), self.value.from_buffer_copy(data, i * stride))
                for i in range(count) if data[i * stride + off:i * stride + off + f.size] != zero]

    def _batch_raw(self):
        """(keys, value bytes, count) of the whole map in one
        BPF_MAP_LOOKUP_BATCH, or None where the kernel cannot."""
        n = self.max_entries
        keys = (self.key * n)()
        vals = (ctypes.c_uint8 * (self._stride * self._ncpu * n))()
        count = ctypes.c_uint32(n)
        out_batch = ctypes.c_uint32(0)
        rc = lib().bpf_map_lookup_batch(self.fd, None, ctypes.byref(out_batch), keys, vals,
                                        ctypes.byref(count), None)
        if rc != 0 and ctypes.get_errno() != errno.ENOENT:   # ENOENT: the last batch
            return None
        return keys, vals, count.value

    def _batch(self):
        raw = self._batch_raw()
        if raw is None:
            return None
        keys, vals, count = raw
        per = self._stride * self._ncpu
        out = []
        for i in range(count):
            vs = self._values(vals, i * per)
            # keys[i] is a plain int for simple key types: wrap it again
            out.append((_as(self.key, keys[i]), vs if self.percpu else vs[0]))
        return out


class RingBuffer:
    """libbpf's consumer of a BPF_MAP_TYPE_RINGBUF: callback(bytes) per record."""

    def __init__(self, fd: int, callback):
        def _cb(_ctx, data, size):
            callback(ctypes.string_at(data, size))
            return 0
        self._cb = _SAMPLE_CB(_cb)       # libbpf keeps only the pointer: hold the object
        self._rb = lib().ring_buffer__new(fd, self._cb, None, None)
        if not self._rb:
            raise KernelFeatureError("cannot open the events ring buffer", "run `brtrace doctor`")

    def poll(self, timeout_ms: int) -> None:
        lib().ring_buffer__poll(self._rb, timeout_ms)

    def close(self) -> None:
        if self._rb:
            lib().ring_buffer__free(self._rb)
            self._rb = None
