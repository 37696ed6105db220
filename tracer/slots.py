"""Dense slot numbers for the bridge and its ports. Pure.

The BPF side counts per port in arrays indexed by slot (bpf/brtrace.h:
MAX_PORTS), because an array read is cheaper than a hash lookup on the
per-packet path. Slot 0 is the bridge itself. A port keeps its slot while it
stays on the bridge; a slot freed by a departed port is reused only when no
never-used slot is left, and then its counters' values at reuse time become
the new port's baseline (kernel counters are never cleared).
"""

from __future__ import annotations


class SlotTable:
    def __init__(self, max_ports: int):
        self.max_ports = max_ports
        self.by_ifindex: dict = {}        # ifindex -> slot, current members
        self.owner: dict = {}             # slot -> ifindex, current members
        self._next = 1
        self._free: list = []
        self.reused: list = []            # slots handed to a new port since last take

    def assign(self, bridge_ifindex: int, port_ifindexes) -> list:
        """Make the table match the bridge's current ports. Returns ifindexes
        that got no slot (more ports than MAX_PORTS - 1)."""
        wanted = set(port_ifindexes)
        for ifindex in [i for i in self.by_ifindex if i not in wanted and i != bridge_ifindex]:
            slot = self.by_ifindex.pop(ifindex)
            del self.owner[slot]
            self._free.append(slot)
        if self.owner.get(0) != bridge_ifindex:
            self.by_ifindex.pop(self.owner.get(0), None)
            self.by_ifindex[bridge_ifindex] = 0
            self.owner[0] = bridge_ifindex
        left_out = []
        for ifindex in sorted(wanted - set(self.by_ifindex)):
            if self._next < self.max_ports:
                slot, self._next = self._next, self._next + 1
            elif self._free:
                slot = self._free.pop(0)
                self.reused.append(slot)
            else:
                left_out.append(ifindex)
                continue
            self.by_ifindex[ifindex] = slot
            self.owner[slot] = ifindex
        return left_out

    def take_reused(self) -> list:
        out, self.reused = self.reused, []
        return out
