"""The running kernel as brtrace needs it: BTF, reason names, symbols, features,
and which probe each hook uses. Built once per run."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from tracer.errors import KernelFeatureError, PermissionError_
from tracer.kernel.btf import Btf
from tracer.kernel.features import Features, btf_path, tracefs_root
from tracer.kernel.kallsyms import Kallsyms, LazyKallsyms
from tracer.kernel.reasons import ReasonTable, load_reason_table
from tracer.probes import Choice, choose


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError_("brtrace needs root to load BPF programs",
                               "run it with sudo (or as root)")


@dataclass
class Kernel:
    features: Features
    btf: Btf
    reasons: ReasonTable
    choices: list
    warnings: list
    kallsyms: LazyKallsyms = field(default_factory=LazyKallsyms)

    @classmethod
    def open(cls) -> "Kernel":
        btf = Btf(btf_path())
        features = Features.probe(btf)
        warnings = []
        root = tracefs_root()
        if root is None:
            warnings.append("tracefs is not mounted: drop-reason names come from BTF "
                            "(mount it: mount -t tracefs tracefs /sys/kernel/tracing)")
        reasons = load_reason_table(root or "/nonexistent",
                                    btf_enum=lambda: btf.enum("skb_drop_reason"))
        if not Kallsyms.addresses_visible():
            warnings.append("/proc/kallsyms shows no addresses: locations are raw addresses "
                            "(run as root, or sysctl kernel.kptr_restrict=0)")
        choices = choose(features, btf.has_tracepoint)
        for c in choices:
            if c.picked is None and c.hook.required:
                raise KernelFeatureError(f"cannot attach hook {c.hook.name}: {c.why}",
                                         "run `brtrace doctor`; brtrace needs kernel >= 5.17 with BTF")
        return cls(features, btf, reasons, choices, warnings)

    def choice(self, hook: str) -> Choice:
        return next(c for c in self.choices if c.hook.name == hook)

    def warn(self, stream=sys.stderr) -> None:
        for w in self.warnings:
            print(f"brtrace: warning: {w}", file=stream)
