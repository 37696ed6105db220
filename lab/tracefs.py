"""Ground truth from tracefs, independent of brtrace's BPF code: record
skb:kfree_skb in a private tracefs instance and attribute each drop to a device."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from lab.proc import LabError

TRACEFS = "/sys/kernel/tracing"


@dataclass
class Drop:
    """One skb:kfree_skb line, with the device the skb was last seen on."""
    reason: str
    location: str     # symbol+0xoff/0xsize as tracefs prints it
    protocol: int     # skb->protocol as printed (network order read as host int)
    skbaddr: str
    dev: Optional[str]

    @property
    def symbol(self) -> str:
        return self.location.split("+")[0]


class KfreeSkbTrace:
    """Record skb:kfree_skb in a private tracefs instance (instances/NAME).

    Why a private instance: the global buffer may be in use by others, and an
    instance can be created, enabled and removed without touching it.
    net:netif_receive_skb and net:net_dev_queue are recorded too, only so each
    drop can be attributed to the device its skb was last seen on (kfree_skb
    itself carries no device).  Use as a context manager around the traffic.
    """

    EVENTS = ("skb/kfree_skb", "net/netif_receive_skb", "net/net_dev_queue")

    def __init__(self, name: str = "brtl", buffer_kb: int = 4096, consume: bool = False):
        self.dir = os.path.join(TRACEFS, "instances", name)
        self.buffer_kb = buffer_kb
        self.events = self.EVENTS + (("skb/consume_skb",) if consume else ())
        self.lines: List[str] = []

    def _write(self, rel: str, value: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(value)

    def __enter__(self) -> "KfreeSkbTrace":
        if not os.path.isdir(os.path.join(TRACEFS, "instances")):
            raise LabError("tracefs not mounted at %s" % TRACEFS)
        if not os.path.isdir(self.dir):
            os.mkdir(self.dir)
        try:
            self._write("buffer_size_kb", str(self.buffer_kb))
            self._write("trace", "")
            for ev in self.events:
                self._write("events/%s/enable" % ev, "1")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stop(self) -> List[str]:
        """Disable events and keep the buffer's lines."""
        for ev in self.events:
            try:
                self._write("events/%s/enable" % ev, "0")
            except OSError:
                pass
        with open(os.path.join(self.dir, "trace")) as f:
            self.lines = [line for line in f.read().splitlines() if line and not line.startswith("#")]
        return self.lines

    def close(self) -> None:
        """Disable our events and remove the instance (idempotent)."""
        if not os.path.isdir(self.dir):
            return
        if not self.lines:
            try:
                self.stop()
            except OSError:
                pass
        try:
            os.rmdir(self.dir)
        except OSError:
            pass

    def drops(self) -> List[Drop]:
        """Parse kfree_skb lines, attributing each to the skb's last device."""
        last_dev: Dict[str, str] = {}
        out = []
        for line in self.lines:
            if "netif_receive_skb:" in line or "net_dev_queue:" in line:
                dev = _field(line, "dev=")
                addr = _field(line, "skbaddr=")
                if dev and addr:
                    last_dev[addr] = dev
            elif "kfree_skb:" in line:
                addr = _field(line, "skbaddr=")
                out.append(Drop(reason=line.rsplit("reason: ", 1)[-1].strip(),
                                location=_field(line, "location=") or "?",
                                protocol=int(_field(line, "protocol=") or 0),
                                skbaddr=addr or "", dev=last_dev.pop(addr, None)))
        return out


def _field(line: str, key: str) -> Optional[str]:
    """Value after KEY up to the next space in a trace line."""
    at = line.find(key)
    if at < 0:
        return None
    return line[at + len(key):].split(" ", 1)[0]


def summarize(drops: Sequence[Drop], devices: Optional[Sequence[str]] = None) -> Dict[tuple, int]:
    """Count drops by (reason, symbol, dev), keeping only DEVICES if given."""
    counts: Dict[tuple, int] = {}
    for d in drops:
        if devices is not None and d.dev not in devices:
            continue
        key = (d.reason, d.symbol, d.dev)
        counts[key] = counts.get(key, 0) + 1
    return counts
