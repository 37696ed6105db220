"""Frames of an incident's ports, from the trigger on, into a pcapng file:
what Wireshark shows next to the findings.

One AF_PACKET socket per port, bound to it, made inside the bridge's network
namespace: a short-lived thread setns()es into it (CLONE_NEWNET is per
thread; Python 3.11 has no os.setns, so libc's through ctypes), creates the
socket and ends; a socket stays in the namespace it was made in. A reader
thread polls them with a 0.2 s timeout, so stop() returns within 0.5 s.

Per frame: an interface per port (tracer/output/pcapng.py, as `brtrace
trace -w`), a comment naming port, direction and step (`vnet0 in: entered
br-int by vnet0`), epb_flags inbound/outbound. The direction is the
sockaddr's pkttype: PACKET_OUTGOING is a frame the port transmitted, i.e.
one the bridge sent out of it; anything else arrived on the port, i.e.
entered the bridge by it.

Bounded by snaplen, packets, bytes of the file, seconds. The file is valid
pcapng whenever the process stops, SIGKILL included: every block goes out in
one write() to an unbuffered file (Bundle.open_binary), and a write that
fails half-way (ENOSPC) is cut back to the last whole block.
"""

from __future__ import annotations

import ctypes
import os
import select
import socket
import struct
import threading
import time
from typing import Callable, Optional

from tracer.output.pcapng import INBOUND, OUTBOUND, PcapngWriter

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4          # <linux/if_packet.h> sll_pkttype
SOL_PACKET = 263
PACKET_STATISTICS = 6        # struct tpacket_stats {tp_packets, tp_drops}; reading resets it
SO_TIMESTAMPNS = 35          # the socket module does not export it
CLONE_NEWNET = 0x40000000
POLL_S = 0.2
RCVBUF = 1 << 20             # per port: ~1000 queued frames before the kernel drops
MIB = 1 << 20
DEFAULT_SNAPLEN = 256
DEFAULT_MAX_PACKETS = 100_000
DEFAULT_MAX_BYTES = 32 * MIB
DEFAULT_MAX_SECONDS = 60.0

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: Optional[str]) -> Optional[str]:
    """A namespace as `ip netns` names it, or a path; None: the current one."""
    if not netns:
        return None
    return netns if "/" in netns else f"/run/netns/{netns}"


def in_netns(path: Optional[str], fn: Callable):
    """fn() run in the network namespace at path (None: here), in a thread
    that enters it and ends there. OSError from setns or fn is raised here."""
    if path is None:
        return fn()
    box: dict = {}

    def body():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns: {os.strerror(err)}", path)
            finally:
                os.close(fd)
            box["value"] = fn()
        except OSError as exc:
            box["error"] = exc

    t = threading.Thread(target=body, name="brtrace-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


class _Full(Exception):
    """The next block would take the file past max_bytes."""


class _Blocks:
    """The stream PcapngWriter writes to: each block whole or not at all."""

    def __init__(self, stream, max_bytes: int):
        self.stream = stream
        self.max_bytes = max_bytes
        self.written = 0

    def write(self, block: bytes) -> int:
        if self.written + len(block) > self.max_bytes:
            raise _Full()
        view = memoryview(block)
        try:
            while view:
                n = self.stream.write(view)
                view = view[len(view) if n is None else n:]
        except OSError:
            try:   # no half block for a reader to choke on
                self.stream.truncate(self.written)
                self.stream.seek(self.written)
            except OSError:
                pass
            raise
        self.written += len(block)
        return len(block)

    def flush(self) -> None:
        self.stream.flush()


def _open_socket(name: str, ifindex: Optional[int]) -> socket.socket:
    """A packet socket on port `name` (in the calling thread's namespace)."""
    if ifindex is not None and socket.if_nametoindex(name) != ifindex:
        raise OSError(0, f"{name} is no longer ifindex {ifindex} (renamed or replaced)")
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.bind((name, ETH_P_ALL))
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class Capture:
    """Frames of a bridge's ports into a pcapng stream; see the module docstring."""

    def __init__(self, stream, bridge: str, netns: Optional[str] = None, snaplen: int = DEFAULT_SNAPLEN,
                 max_packets: int = DEFAULT_MAX_PACKETS, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_seconds: float = DEFAULT_MAX_SECONDS,
                 on_error: Optional[Callable[[str, OSError], None]] = None):
        self.bridge = bridge
        self.netns = netns_path(netns)
        self.snaplen = snaplen
        self.max_packets = max_packets
        self.max_seconds = max_seconds
        self.on_error = on_error or (lambda _what, _exc: None)
        self._blocks = _Blocks(stream, max_bytes)
        self._writer: Optional[PcapngWriter] = None
        self._lock = threading.Lock()
        self._socks: dict = {}         # fd -> (socket, port) the reader polls
        self._pending: list = []       # (socket, port) added, not yet polled
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started: Optional[float] = None
        self._ended: Optional[float] = None
        self.ports: list = []
        self.port_errors: dict = {}
        self.truncated_by: Optional[str] = None
        self.error: Optional[str] = None
        self._kernel_drops = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, ports) -> bool:
        """Write the section header and capture on ports ({name: ifindex} or
        (name, ifindex) pairs; ifindex None skips the check that the name
        still is that device). False when nothing can be written."""
        try:
            self._writer = PcapngWriter(self._blocks, snaplen=self.snaplen)
        except (OSError, _Full) as exc:
            self._fail("write the capture", exc if isinstance(exc, OSError) else OSError(0, "max_bytes too small"))
            return False
        self._started = time.monotonic()
        for name, ifindex in (ports.items() if isinstance(ports, dict) else ports):
            self.add_port(name, ifindex)
        self._thread = threading.Thread(target=self._read, name=f"brtrace-capture-{self.bridge}", daemon=True)
        self._thread.start()
        return True

    def add_port(self, name: str, ifindex: Optional[int] = None) -> bool:
        """Capture on one more port (a port that joined); False if its socket
        cannot be made (the reason is in stats()['port_errors'])."""
        if name in self.ports or self._stop.is_set():
            return name in self.ports
        try:
            sock = in_netns(self.netns, lambda: _open_socket(name, ifindex))
        except OSError as exc:
            self.port_errors[name] = exc.strerror or str(exc)
            return False
        with self._lock:
            self._pending.append((sock, name))
            self.ports.append(name)
        return True

    def stop(self) -> dict:
        """Stop (within 0.5 s) and return stats(); the file stays valid."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(0.5)
        else:
            self._close_sockets()
        return self.stats()

    def stats(self) -> dict:
        with self._lock:
            socks = [s for s, _ in self._socks.values()]
        for s in socks:
            self._count_drops(s)
        end = self._ended or time.monotonic()
        return {"packets": self._writer.packets if self._writer else 0, "bytes": self._blocks.written,
                "truncated_by": self.truncated_by, "kernel_drops": self._kernel_drops,
                "ports": list(self.ports), "port_errors": dict(self.port_errors), "error": self.error,
                "seconds": round(end - self._started, 3) if self._started else 0.0,
                "snaplen": self.snaplen, "max_packets": self.max_packets,
                "max_bytes": self._blocks.max_bytes, "max_seconds": self.max_seconds}

    # -- the reader thread ------------------------------------------------------
    def _read(self) -> None:
        poller = select.poll()
        buf = bytearray(self.snaplen)
        deadline = self._started + self.max_seconds
        try:
            while not self._stop.is_set():
                with self._lock:
                    for sock, name in self._pending:
                        self._socks[sock.fileno()] = (sock, name)
                        poller.register(sock.fileno(), select.POLLIN)
                    self._pending.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    self._end("seconds")
                    break
                for fd, _ev in poller.poll(min(POLL_S, left) * 1000):
                    sock, name = self._socks[fd]
                    state = self._drain(sock, name, buf)
                    if state == "gone":
                        poller.unregister(fd)
                        self._forget(fd)
                    elif state == "limit":
                        break
        finally:
            self._ended = time.monotonic()
            self._close_sockets()

    def _drain(self, sock: socket.socket, port: str, buf: bytearray) -> str:
        """Write what one socket holds (64 frames at most, so one busy port
        does not starve the others): "ok", "gone" (the port left: its socket
        is dropped, and add_port() may take it again when it comes back) or
        "limit" (a limit or a write error ended the capture)."""
        for _ in range(64):
            try:
                n, anc, _flags, addr = sock.recvmsg_into([buf], socket.CMSG_SPACE(16), socket.MSG_TRUNC)
            except (BlockingIOError, InterruptedError):
                return "ok"
            except OSError as exc:   # ENETDOWN: the device was removed (packet_notifier())
                self.port_errors[port] = exc.strerror or str(exc)
                return "gone"
            ts_ns = time.time_ns()
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack_from("ll", data)
                    ts_ns = sec * 1_000_000_000 + nsec
            if self._writer.packets >= self.max_packets:
                self._end("packets")
                return "limit"
            out = addr[2] == PACKET_OUTGOING
            comment = (f"{port} out: left {self.bridge} by {port}" if out
                       else f"{port} in: entered {self.bridge} by {port}")
            try:
                self._writer.interface(port, f"port of {self.bridge}")
                self._writer.packet(port, ts_ns, bytes(buf[:min(n, self.snaplen)]), n, comment,
                                    OUTBOUND if out else INBOUND)
            except _Full:
                self._end("bytes")
                return "limit"
            except OSError as exc:
                self._fail("write the capture", exc)
                self._end(None)
                return "limit"
        return "ok"

    def _end(self, why: Optional[str]) -> None:
        self.truncated_by = self.truncated_by or why
        self._stop.set()

    def _fail(self, what: str, exc: OSError) -> None:
        self.error = f"cannot {what}: {exc.strerror or exc}"
        self.on_error(what, exc)

    def _count_drops(self, sock: socket.socket) -> None:
        try:
            raw = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return
        _packets, drops = struct.unpack("II", raw)
        with self._lock:
            self._kernel_drops += drops

    def _forget(self, fd: int) -> None:
        with self._lock:
            sock, name = self._socks.pop(fd)
            if name in self.ports:
                self.ports.remove(name)
        self._count_drops(sock)
        sock.close()

    def _close_sockets(self) -> None:
        with self._lock:
            socks = list(self._socks.values()) + list(self._pending)
            self._socks.clear()
            self._pending.clear()
        for sock, _name in socks:
            self._count_drops(sock)
            sock.close()
