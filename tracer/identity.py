"""Who is behind a port: `vnet3 (vm web01)`, `t3o (vpn tincd)`.

Two sources, both read-only and optional:
- libvirt's runtime state (/run/libvirt/qemu/<domain>.xml): each running
  domain's <interface><target dev='vnetN'/>, naming the VM;
- for tap devices, the process holding the tun file descriptor: its
  /proc/PID/fdinfo shows `iff: <name>`, and /proc/PID/comm names the daemon.
Without either, a port is just its name.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tracer.kernel import switches

# Process names of VPN daemons that run taps (comm is at most 15 characters).
VPN_DAEMONS = {"tincd": "tincd", "openvpn": "openvpn", "fastd": "fastd", "vtund": "vtund",
               "zerotier-one": "zerotier", "edge": "n2n", "tinc": "tincd", "softether": "softether",
               "vpnserver": "softether", "vpnclient": "softether"}
NO_READER = "tap, no reader"
VM_PROCESSES = ("qemu-system", "qemu-kvm", "kvm", "firecracker", "cloud-hypervisor")


def libvirt_interfaces(run_dir: Path | None = None) -> dict:
    """Interface name -> VM name, from libvirt's per-domain runtime XML
    (in run_dir, else BRTRACE_LIBVIRT_RUN or /run/libvirt/qemu)."""
    if run_dir is None:
        run_dir = switches.libvirt_run()
    out = {}
    try:
        files = sorted(run_dir.glob("*.xml"))
    except OSError:
        return out
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError):
            continue
        domain = root if root.tag == "domain" else root.find("domain")
        if domain is None:
            continue
        name = domain.findtext("name") or f.stem
        for target in domain.iterfind("./devices/interface/target"):
            dev = target.get("dev")
            if dev:
                out[dev] = name
    return out


def tap_owners(names: set, proc: Path = Path("/proc")) -> dict:
    """Tap name -> (pid, comm) of a process holding it open, for `names` only.
    Walks /proc/*/fdinfo once; callers do it when the set of taps changes."""
    out: dict = {}
    if not names:
        return out
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            fds = list((pid_dir / "fdinfo").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                text = fd.read_text()
            except OSError:
                continue
            if "iff:" not in text:
                continue
            for line in text.splitlines():
                if line.startswith("iff:") and line.split()[-1] in names:
                    try:
                        comm = (pid_dir / "comm").read_text().strip()
                    except OSError:
                        comm = "?"
                    out.setdefault(line.split()[-1], (int(pid_dir.name), comm))
    return out


def label(port: str, kind: str, vms: dict, owners: dict) -> str:
    """What to show after a port's name, or "" when nothing is known."""
    if port in vms:
        return f"vm {vms[port]}"
    if kind == "tun" and port in owners:
        pid, comm = owners[port]
        if comm in VPN_DAEMONS:
            return f"vpn {VPN_DAEMONS[comm]}"
        if comm.startswith(VM_PROCESSES):
            return f"vm pid {pid}"
        return f"{comm} pid {pid}"
    if kind == "tun":
        return NO_READER
    return ""


def identify(ports) -> dict:
    """Port name -> label for the bridge's ports (topology.Port objects)."""
    vms = libvirt_interfaces()
    taps = {p.name for p in ports if p.kind == "tun" and p.name not in vms}
    owners = tap_owners(taps)
    return {p.name: label(p.name, p.kind, vms, owners) for p in ports}
