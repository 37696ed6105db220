"""tcx links: brtrace's port programs on the tc ingress/egress of exactly the
bridge and its ports (kernel >= 6.6, BPF_TCX_INGRESS/EGRESS).

Why tcx and not the net:netif_receive_skb / net:net_dev_queue tracepoints:
those run for every device of the host and must first find out whether the
device is ours; a tcx program runs only where it is linked, reads the frame
in place, and costs the rest of the host nothing. Why links and not classic
`tc filter`s: a bpf_link lives as long as its file descriptor, so brtrace
leaves nothing attached however it ends (SIGKILL included), and it never
creates or changes a qdisc. Programs that others linked run as before: ours
return TCX_NEXT.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

from tracer.errors import KernelFeatureError
from tracer.kernel import bpfsys

DIRECTIONS = ("ingress", "egress")


def attach_types(btf) -> dict | None:
    """{"ingress": n, "egress": n} from the kernel's enum bpf_attach_type, or
    None when the kernel has no tcx."""
    try:
        values = btf.enum("bpf_attach_type")
    except KernelFeatureError:
        return None
    if "BPF_TCX_INGRESS" not in values or "BPF_TCX_EGRESS" not in values:
        return None
    return {"ingress": values["BPF_TCX_INGRESS"], "egress": values["BPF_TCX_EGRESS"]}


@contextmanager
def in_netns(path: str | None):
    """Run the block with this thread in the network namespace at `path`
    (ifindexes in BPF_LINK_CREATE are the caller's namespace's)."""
    if not path:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            bpfsys.setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            bpfsys.setns(own)
    finally:
        os.close(own)


class TcxLinks:
    """Keeps one ingress and one egress link per device, for a set of
    ifindexes in one namespace that the caller updates with sync()."""

    def __init__(self, prog_fds: dict, types: dict, netns_path: str | None):
        self.prog_fds = prog_fds          # direction -> program fd
        self.types = types                # direction -> attach type
        self.netns_path = netns_path
        self.links: dict = {}             # ifindex -> [fd, ...]

    def sync(self, ifindexes) -> list:
        """Link the programs to every ifindex in the set and unlink the rest.
        Returns the ifindexes that vanished before they could be linked (a
        port deleted between the netlink dump and now): the next refresh
        drops them."""
        want = set(ifindexes)
        for ifindex in set(self.links) - want:
            for fd in self.links.pop(ifindex):
                os.close(fd)
        gone = []
        new = sorted(want - set(self.links))
        if not new:
            return gone
        try:
            with in_netns(self.netns_path):
                for ifindex in new:
                    fds = self._link(ifindex)
                    if fds is None:
                        gone.append(ifindex)
                    else:
                        self.links[ifindex] = fds
        except OSError as exc:  # _link handles its own: this is entering the namespace
            raise KernelFeatureError(
                f"cannot enter network namespace {self.netns_path} to link the port programs: "
                f"{exc.strerror}", "check that the namespace still exists (`ip netns list`)") from exc
        return gone

    def _link(self, ifindex: int) -> list | None:
        """Both links for one device; None if the device is gone."""
        fds = []
        try:
            for d in DIRECTIONS:
                fds.append(bpfsys.link_create(self.prog_fds[d], ifindex, self.types[d]))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            if exc.errno in (errno.ENODEV, errno.ENXIO):
                return None
            self.close()
            raise KernelFeatureError(
                f"cannot link the port programs to ifindex {ifindex} (tcx): {exc.strerror}",
                "set BRTRACE_AVOID=tcx to use the tracepoint fallback, and run `brtrace doctor`") from None
        return fds

    def close(self) -> None:
        for fds in self.links.values():
            for fd in fds:
                os.close(fd)
        self.links = {}
