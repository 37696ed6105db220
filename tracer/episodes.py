"""One incident per episode: when `brtrace watch` opens, updates and closes
an incident on a bridge. Pure: fed the findings (JSON records) every second.

An incident opens when an active critical finding of a layer-2 fault type
appears (a loop, an own-address echo, a looped DAD probe, MAC flapping, a
storm, an address conflict). Its verdict is the most telling of the findings
present, so it follows what watch learns: MAC moves arm detail, and a second
later the loop verdict names the loop's ports. It closes after `close_after`
seconds in which no such finding was active. Failed neighbour resolutions,
drops and not-forwarded ports are kept in the incident while it is open but
open none by themselves: a guest pinging a dead address is not an incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Most telling first: the verdict is the first of these present.
INCIDENT_TYPES = ("l2_loop", "own_address_echo", "dad_looped", "mac_flap", "storm", "ip_conflict")
CLOSE_AFTER = 60.0


def triggers(findings: list) -> list:
    return [f for f in findings if f.get("severity") == "critical" and f.get("active")
            and f.get("type") in INCIDENT_TYPES]


def involved(f: dict) -> list:
    """The ports a trigger adds to the incident (its capture, BRTRACE_PORTS):
    a MAC flapping because a loop brings its frames back is wrongly learned
    on the loop's ports, not on the port its host lives behind."""
    wrong = (f.get("evidence") or {}).get("wrongly_learned_on") if f.get("type") == "mac_flap" else None
    return list(wrong) if wrong else list(f.get("ports", []))


def verdict_of(findings: list) -> Optional[dict]:
    """The most telling finding, as the incident's verdict: active and
    critical ones first, then by INCIDENT_TYPES (a warning about a MAC moving
    between a guest's port and a VPN tap tells less than a critical storm on
    the tap, and names the guest's port)."""
    ranked = sorted((f for f in findings if f.get("type") in INCIDENT_TYPES),
                    key=lambda f: (not f.get("active"), f.get("severity") != "critical",
                                   INCIDENT_TYPES.index(f["type"])))
    if not ranked:
        return None
    f = ranked[0]
    return {"type": f["type"], "kind": (f.get("evidence") or {}).get("kind"), "ports": f.get("ports", []),
            "culprit_ports": f.get("culprit_ports"), "message": f.get("message"), "hint": f.get("hint")}


def signature(findings: list) -> tuple:
    """What makes findings 'changed' for the history: not their growing counts."""
    return tuple(sorted((f.get("type"), tuple(f.get("ports", [])), (f.get("evidence") or {}).get("kind"),
                         bool(f.get("active")), f.get("severity")) for f in findings))


@dataclass
class Episode:
    type: str
    opened_t: float
    ports: list
    last_active_t: float
    findings: list = field(default_factory=list)
    history: list = field(default_factory=list)     # (t, findings) when they changed
    closed_t: Optional[float] = None

    @property
    def verdict(self) -> Optional[dict]:
        return verdict_of(self.findings)


@dataclass
class Episodes:
    close_after: float = CLOSE_AFTER
    current: Optional[Episode] = None
    _sig: tuple = ()

    def update(self, findings: list, t: float) -> list:
        """Fold this second's findings; returns the events, each one of
        ("open", ep), ("ports", ep) (it grew), ("changed", ep), ("close", ep)."""
        found = triggers(findings)
        ep = self.current
        if ep is None:
            if not found:
                return []
            first = verdict_of(found)
            ports = _union(involved(f) for f in found)
            ep = self.current = Episode(type=first["type"], opened_t=t, ports=ports, last_active_t=t,
                                        findings=findings, history=[(t, findings)])
            self._sig = signature(findings)
            return [("open", ep)]
        events = []
        if found:
            ep.last_active_t = t
            grown = _union([ep.ports] + [involved(f) for f in found])
            if grown != ep.ports:
                ep.ports = grown
                events.append(("ports", ep))
        ep.findings = findings
        sig = signature(findings)
        if sig != self._sig:
            self._sig = sig
            ep.history.append((t, findings))
            events.append(("changed", ep))
        if t - ep.last_active_t >= self.close_after:
            ep.closed_t = t
            self.current = None
            self._sig = ()
            events.append(("close", ep))
        return events


def _union(lists) -> list:
    out: list = []
    for ports in lists:
        out += [p for p in ports if p not in out]
    return out
