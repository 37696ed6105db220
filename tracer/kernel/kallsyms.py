"""Turn kernel text addresses (kfree_skb's `location`) into `function+0xoff`.

/proc/kallsyms lists symbols but not their sizes, so an address is attributed
to the nearest symbol at or below it, which is what the kernel's own %pS does
for a return address inside a function.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from operator import itemgetter
from typing import List, Optional, Tuple

from tracer.errors import KernelFeatureError

KALLSYMS = "/proc/kallsyms"

# "<hex addr> <type> <name>" and, for module symbols, "\t[<module>]".
# Types: t/T are text; w/W are weak symbols, which in kallsyms are weak
# *functions* (e.g. `abort`), so leaving them out would blame their callers'
# neighbours. Data (d, b, r...) can never be a drop location.
_LINE_RE = re.compile(
    r"^([0-9a-fA-F]+) [tTwW] (\S+)(?:[ \t]+\[([^\]]+)\])?[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Symbol:
    """Where an address points: `name+offset`, in `module` (None for vmlinux)."""

    name: str
    offset: int
    module: Optional[str] = None

    @property
    def function(self) -> str:
        return self.name

    @property
    def location(self) -> str:
        # An unresolved address is already its own location; "0x...+0x0" would
        # suggest a symbol that does not exist. (No C identifier starts with "0x".)
        if self.name.startswith("0x"):
            return self.name
        return f"{self.name}+0x{self.offset:x}"

    def __str__(self) -> str:
        return f"{self.location} [{self.module}]" if self.module else self.location


class Kallsyms:
    """Sorted text symbols of the running kernel, looked up with bisect."""

    def __init__(self, symbols: List[Tuple[int, str, Optional[str]]]):
        # Stable sort on the address only: aliases at one address (_stext,
        # _text) keep file order.
        symbols = sorted(symbols, key=itemgetter(0))
        self._addrs = [s[0] for s in symbols]
        self._names = [s[1] for s in symbols]
        self._modules = [s[2] for s in symbols]
        # Without CAP_SYSLOG (kptr_restrict) the kernel prints every address as
        # 0: the names are there but useless for lookups.
        self.usable = bool(self._addrs) and self._addrs[-1] != 0

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        """Build from the text of /proc/kallsyms (one regex pass, ~150k lines)."""
        return cls([(int(addr, 16), name, module or None)
                    for addr, name, module in _LINE_RE.findall(text)])

    @classmethod
    def load(cls, path: str = KALLSYMS) -> "Kallsyms":
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls.parse(f.read())
        except OSError as e:
            raise KernelFeatureError(f"cannot read {path}: {e}",
                                     "the kernel needs CONFIG_KALLSYMS; run as root") from e

    def __len__(self) -> int:
        return len(self._addrs)

    def symbolize(self, addr: int) -> Symbol:
        """Nearest symbol at or below `addr`; the bare hex address if there is none."""
        if self.usable:
            i = bisect_right(self._addrs, addr) - 1
            if i >= 0:
                # Of several names at one address take the first listed, as the
                # kernel's own lookup (get_symbol_pos) does.
                i = bisect_left(self._addrs, self._addrs[i], 0, i)
                return Symbol(self._names[i], addr - self._addrs[i], self._modules[i])
        return Symbol(f"0x{addr:x}", 0, None)
