"""brtrace's lab: disposable bridges in network namespaces, broken on purpose,
for the integration tests, the demo and the bench.  Developer tooling: it
lives beside the package (pyproject.toml does not ship it).

* lab.proc: bounded commands, namespaces, our children by PID;
* lab.frames: frame builders, and Frames (what a sender sends);
* lab.traffic: the frame sender (children/sender.c, or sender.py) and ping;
* lab.topology: Lab, the bridge and its faults (taps, loops, STP, MTU, nft);
* lab.tracefs: ground truth from tracefs, independent of brtrace's BPF;
* lab.tinc: a real tinc 1.0 VPN between namespaced hosts (the 2017 incident);
* lab.demo: `scripts/demo` (python -m lab.demo);
* children/: the programs the lab runs inside namespaces, by path.

The names the tests use are importable from ``lab`` itself.
"""

from lab.frames import (BROADCAST, ETH_P_ARP, ETH_P_IP, ETH_P_LAB, Frames, arp_request, ether,
                        inet_checksum, ipv4_udp, ipv6_icmp, mac_bytes, neighbour_solicitation,
                        pad60)
from lab.proc import (CHILD_PYTHON, NETNS_RUN_DIR, LabError, _kill_pid, _set_pdeathsig, netns_exists,
                      netns_inode, netns_path, ns_argv, run)
from lab.topology import FAULTS, Host, Lab, PeerLoop, SlowPeerLoop, TapPort
from lab.tracefs import Drop, KfreeSkbTrace, summarize
from lab.traffic import ping, send_frames, start_sender, wait_sender

__all__ = [
    "BROADCAST", "CHILD_PYTHON", "Drop", "ETH_P_ARP", "ETH_P_IP", "ETH_P_LAB", "FAULTS", "Frames",
    "Host", "KfreeSkbTrace", "Lab", "LabError", "NETNS_RUN_DIR", "PeerLoop", "SlowPeerLoop", "TapPort",
    "_kill_pid", "_set_pdeathsig", "arp_request", "ether", "inet_checksum", "ipv4_udp", "ipv6_icmp", "mac_bytes",
    "neighbour_solicitation", "netns_exists", "netns_inode", "netns_path", "ns_argv", "pad60", "ping",
    "run", "send_frames", "start_sender", "summarize", "wait_sender",
]
