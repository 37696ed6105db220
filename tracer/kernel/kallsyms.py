"""Turn kernel text addresses (kfree_skb's `location`) into `function+0xoff`.

/proc/kallsyms lists symbols but not their sizes, so an address is attributed
to the nearest symbol at or below it, which is what the kernel's own %pS does
for a return address inside a function.
"""
from __future__ import annotations

import re
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from operator import itemgetter
from typing import Optional, Tuple

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
    """Sorted text symbols of the running kernel, looked up with bisect.

    Kept compact because it lives as long as brtrace does: addresses in an
    array('Q'), and for names only the offset of each line in the original
    text (~6 MB for 120k symbols, against ~45 MB as Python tuples). A name is
    cut out of the text when an address is symbolised, which happens for a
    handful of distinct drop locations per run.
    """

    def __init__(self, text: str, starts: "array", addrs: "array"):
        self._text = text
        self._starts = starts      # line offsets into _text, sorted by address
        self._addrs = addrs
        # Without CAP_SYSLOG (kptr_restrict) the kernel prints every address as
        # 0: the names are there but useless for lookups.
        self.usable = bool(addrs) and addrs[-1] != 0

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        """Build from the text of /proc/kallsyms (one regex pass, ~150k lines)."""
        found = [(int(m.group(1), 16), m.start()) for m in _LINE_RE.finditer(text)]
        # Stable sort on the address only: aliases at one address (_stext,
        # _text) keep file order.
        found.sort(key=itemgetter(0))
        return cls(text, array("Q", (f[1] for f in found)), array("Q", (f[0] for f in found)))

    @staticmethod
    def addresses_visible(path: str = KALLSYMS) -> bool:
        """Does the kernel show real addresses (not all 0, as kptr_restrict
        makes it)? Read from the first line only."""
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                first = f.readline().split()
        except OSError:
            return False
        try:
            return bool(first) and int(first[0], 16) != 0
        except ValueError:
            return False

    @classmethod
    def load(cls, path: str = KALLSYMS) -> "Kallsyms":
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return cls.parse(f.read())
        except OSError as e:
            raise KernelFeatureError(f"cannot read {path}: {e}",
                                     "the kernel needs CONFIG_KALLSYMS; run as root") from e

    def _entry(self, i: int) -> Tuple[str, Optional[str]]:
        """(name, module) of the i-th symbol, cut out of its line."""
        m = _LINE_RE.match(self._text, self._starts[i])
        return m.group(2), m.group(3) or None

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
                name, module = self._entry(i)
                return Symbol(name, addr - self._addrs[i], module)
        return Symbol(f"0x{addr:x}", 0, None)


class LazyKallsyms:
    """Kallsyms read on the first lookup, not before: most runs name a drop
    location late or never, and reading ~150k symbols costs ~0.1 s of CPU and
    ~12 MB."""

    def __init__(self, path: str = KALLSYMS):
        self._path = path
        self._table: Optional[Kallsyms] = None

    def _get(self) -> Kallsyms:
        if self._table is None:
            self._table = Kallsyms.load(self._path)
        return self._table

    @property
    def usable(self) -> bool:
        return self._get().usable

    def symbolize(self, addr: int) -> Symbol:
        return self._get().symbolize(addr)

    def __len__(self) -> int:
        return len(self._get())
