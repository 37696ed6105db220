"""Reproducer for the 6.1 guest panic of the VM lane's storm test (not a test:
pytest does not collect it). Without brtrace or BPF: a two-link STP-off storm
between two bridges and, while it runs, one kind of kernel text patching in a
loop, to tell which ingredient panics the guest.

Run from the checkout, inside the lane's VM:

    bash ../shared/tools/vm-run.sh /usr/bin/python3 tests/vm/ftrace_storm_repro.py kprobe 120

MODE:
  kprobe    tracefs kprobe events on br_flood and br_pass_frame_up, enabled and
            disabled in a loop (what brtrace's kprobe mode does once at start
            and once at exit: ftrace rewrites their fentry call sites)
  kcold     the same on a bridge function the storm never calls (br_ioctl_stub)
  function  the function tracer filtered to br_flood and br_pass_frame_up, on/off
  tp        the tracepoint events behind brtrace's raw tracepoints
            (net:netif_receive_skb, net:net_dev_queue, skb:kfree_skb), on/off:
            static keys and static calls in the storm's path patched
  break     no tracing: down and delete one link, add it again, re-seed, in a loop
  none      the storm alone
BRTRACE_REPRO_PIN=1 pins this process and the seed's sender to CPU 0: the veth
storm then runs on CPU 0 only (veth_xmit() -> __netif_rx() queues to the
current CPU's backlog), the CPU that also patches.

Seen with Debian 6.1.0-57 under QEMU 7.2 multi-threaded TCG, 2 vCPUs: kprobe
panics within seconds (RIP 0, called from br_handle_frame_finish+0x235, the
return address of its br_flood() call, as in the lane); kcold, pinned kprobe,
and kprobe under single-threaded TCG do not.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.getcwd())
from lab import BROADCAST, ETH_P_LAB, Lab, ether, send_frames

TRACEFS = "/sys/kernel/tracing"
TP_EVENTS = ("events/net/netif_receive_skb/enable", "events/net/net_dev_queue/enable",
             "events/skb/kfree_skb/enable")
MODES = ("kprobe", "kcold", "function", "tp", "break", "none")


def mark(what: str) -> None:
    """To the serial console (level 3, above the harness's loglevel=4) and stdout."""
    with open("/dev/kmsg", "w") as f:
        f.write(f"<3>repro: {what}\n")
    print(what, flush=True)


def tracefs_write(path: str, text: str, append: bool = False) -> None:
    fd = os.open(os.path.join(TRACEFS, path), os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def storm_rate(lab: Lab, links: list) -> dict:
    def rx(port):
        return lab.link_stats(lab.bridge_ns, port)["rx_packets"]
    before = {p: rx(p) for p in links}
    time.sleep(0.2)
    return {p: rx(p) - before[p] for p in links}


def toggle(mode: str, lab: Lab, loop, links: list, h1, seed: bytes) -> None:
    """One on/off cycle of MODE's patching (or one break and re-seed)."""
    if mode in ("kprobe", "kcold"):
        for state in ("1", "0"):
            tracefs_write("events/rp/enable", state)
            time.sleep(0.05)
    elif mode == "function":
        for tracer in ("function", "nop"):
            tracefs_write("current_tracer", tracer)
            time.sleep(0.05)
    elif mode == "tp":
        for state in ("1", "0"):
            for event in TP_EVENTS:
                tracefs_write(event, state)
            time.sleep(0.05)
    elif mode == "break":
        port = links[1]
        lab.ip(lab.bridge_ns, "link", "set", port, "down")
        time.sleep(0.1)
        lab.ip(lab.bridge_ns, "link", "del", port)
        loop.links[:] = [link for link in loop.links if link[0] != port]
        loop.links.append(lab._add_peer_veth(loop, port, "p2"))
        lab.ip(lab.bridge_ns, "link", "set", port, "up")
        lab.ip(loop.netns, "link", "set", "p2", "up")
        time.sleep(0.3)
        send_frames(h1.netns, h1.ifname, seed, 1)
        time.sleep(0.5)
    else:
        time.sleep(1)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in MODES:
        print(__doc__)
        return 2
    mode, seconds = sys.argv[1], float(sys.argv[2])
    if os.environ.get("BRTRACE_REPRO_PIN") == "1":
        os.sched_setaffinity(0, {0})
    os.system("modprobe bridge; modprobe veth")
    lab = Lab(prefix="rp", hosts=1, mac_base="02:b7:09:00:00")
    try:
        lab.build()
        loop = lab.add_peer_bridge_loop(links=2, stp=False, hold=seconds + 120)
        links = sorted(p for p, _peer in loop.links)
        h1 = lab.host(1)
        seed = ether(BROADCAST, h1.mac, ETH_P_LAB, b"storm")
        send_frames(h1.netns, h1.ifname, seed, 1)
        time.sleep(1)
        mark(f"mode {mode}: storm {storm_rate(lab, links)} per 0.2 s")
        if mode == "kprobe":
            for i, fn in enumerate(("br_flood", "br_pass_frame_up")):
                tracefs_write("kprobe_events", f"p:rp/k{i} {fn}\n", append=True)
        elif mode == "kcold":
            tracefs_write("kprobe_events", "p:rp/k0 br_ioctl_stub\n", append=True)
        elif mode == "function":
            tracefs_write("set_ftrace_filter", "br_flood\nbr_pass_frame_up\n")
        end, cycles = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            toggle(mode, lab, loop, links, h1, seed)
            cycles += 1
            if cycles % 20 == 0:
                mark(f"cycle {cycles}, storm {storm_rate(lab, links)} per 0.2 s")
        mark(f"done: {cycles} cycles in {seconds:.0f} s, no panic")
        if mode in ("kprobe", "kcold"):
            tracefs_write("kprobe_events", "")
    finally:
        lab.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
