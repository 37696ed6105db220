"""Drop-reason names, read from the running kernel.

`enum skb_drop_reason` is renumbered in almost every kernel release (reasons
are inserted in the middle, 5.17 started at 0, 6.1 at 1, 6.18 at 2), so
brtrace never carries a table of its own: a number recorded by the BPF program
is only meaningful against the table of the kernel that produced it.

Two sources, in order of preference:

* tracefs: `events/skb/kfree_skb/format`. Since 6.0 (and in 5.17/5.18) its
  `print fmt` holds `__print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, ...)`
  with the enum values already substituted by the kernel (TRACE_DEFINE_ENUM).
* BTF: the enumerators of `enum skb_drop_reason` in /sys/kernel/btf/vmlinux,
  for when tracefs is not mounted or, as on 5.19, the format prints names from
  an in-kernel array instead of a table we can read.
"""
from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from typing import Callable, Dict, Iterator, NamedTuple, Optional

from tracer.errors import BrtraceError, KernelFeatureError

# include/net/dropreason.h: the upper 16 bits of a reason name the subsystem
# that owns it (core = 0, openvswitch, mac80211, ...); the lower 16 its code.
SKB_DROP_REASON_SUBSYS_MASK = 0xFFFF0000
SKB_DROP_REASON_SUBSYS_SHIFT = 16

_PREFIX = "SKB_DROP_REASON_"
DEFAULT_TRACEFS = "/sys/kernel/tracing"
# Kernels before 4.1 (and some setups today) only expose tracefs through debugfs.
_LEGACY_TRACEFS = "/sys/kernel/debug/tracing"
FORMAT_PATH = "events/skb/kfree_skb/format"
MOUNT_HINT = "mount tracefs: mount -t tracefs tracefs /sys/kernel/tracing"


class FormatField(NamedTuple):
    """One `field:` line of a tracefs format file (the record layout)."""

    type: str
    name: str
    offset: int
    size: int
    signed: bool


class ReasonTable(Mapping):
    """Immutable mapping value -> reason name (without the SKB_DROP_REASON_ prefix).

    `name()` never fails: a drop must still be reported when the kernel is newer
    than anything the table knows, so unknown values get a stable made-up name.
    """

    __slots__ = ("_by_value", "_by_name", "_source", "_fields")

    def __init__(self, reasons: Mapping[int, str], source: str,
                 fields: Optional[Mapping[str, FormatField]] = None):
        by_value: Dict[int, str] = {}
        by_name: Dict[str, int] = {}
        for value, name in reasons.items():
            # First spelling wins if the kernel ever lists a value twice.
            by_value.setdefault(int(value), name)
            by_name.setdefault(name, int(value))
        self._by_value = by_value
        self._by_name = by_name
        self._source = source
        self._fields = dict(fields or {})

    @property
    def source(self) -> str:
        """Where the table came from: "tracefs" or "btf"."""
        return self._source

    @property
    def fields(self) -> Mapping[str, FormatField]:
        """kfree_skb record layout by field name (empty when read from BTF)."""
        return dict(self._fields)

    def __getitem__(self, value: int) -> str:
        return self._by_value[value]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._by_value))

    def __len__(self) -> int:
        return len(self._by_value)

    def __repr__(self) -> str:
        return f"<ReasonTable source={self._source} reasons={len(self)}>"

    def name(self, value: int) -> str:
        """Reason name for a raw value as read from the kernel (a u32)."""
        value &= 0xFFFFFFFF  # a value read as signed int still means the same u32
        known = self._by_value.get(value)
        if known is not None:
            return known
        subsys = (value & SKB_DROP_REASON_SUBSYS_MASK) >> SKB_DROP_REASON_SUBSYS_SHIFT
        if subsys:
            return f"SUBSYS_{subsys}_{value & ~SKB_DROP_REASON_SUBSYS_MASK & 0xFFFF}"
        return f"UNKNOWN_{value}"

    def value(self, name: str) -> Optional[int]:
        """Value of a reason name, with or without the SKB_DROP_REASON_ prefix."""
        name = name.strip().upper()
        if name.startswith(_PREFIX):
            name = name[len(_PREFIX):]
        return self._by_name.get(name)


# --- tracefs -----------------------------------------------------------------

_FIELD_RE = re.compile(
    r"field:(?P<decl>[^;]+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"\s*signed:(?P<signed>\d+);")
_SYMBOLIC_RE = re.compile(r"__print_symbolic\(\s*REC->reason\s*,")
# { <value expression>, "NAME" }: the expression is whatever precedes the comma.
_ENTRY_RE = re.compile(r'\{\s*([^{},"]+?)\s*,\s*"([^"]*)"\s*\}')


def parse_format_fields(text: str) -> Dict[str, FormatField]:
    """Field layout of a tracefs format file, by field name."""
    fields: Dict[str, FormatField] = {}
    for m in _FIELD_RE.finditer(text):
        decl = m.group("decl").strip()
        # "enum skb_drop_reason reason", "void * skbaddr", "char comm[16]"
        match = re.match(r"(?P<type>.*?)\s*\b(?P<name>\w+)\s*(?P<dims>(\[[^\]]*\])*)$", decl)
        if not match:
            continue
        ftype = (match.group("type") + match.group("dims")).strip()
        fields[match.group("name")] = FormatField(
            ftype, match.group("name"), int(m.group("offset")), int(m.group("size")),
            m.group("signed") != "0")
    return fields


def _eval_value(expr: str) -> Optional[int]:
    """Integer value of one __print_symbolic key, or None if it is not a constant.

    Kernels write plain decimals, but a key could in principle be hex, carry a C
    suffix (1U, 0x10UL) or be an expression such as (2 << 16) | 3. A bare
    identifier means TRACE_DEFINE_ENUM did not substitute it: its value is unknown.
    """
    expr = re.sub(r"\b(0[xX][0-9a-fA-F]+|\d+)[uUlL]+\b", r"\1", expr.strip())
    try:
        return int(expr, 0)
    except ValueError:
        pass
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return None

    # Only integer arithmetic: never evaluate names, calls or anything else.
    ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.BitOr: lambda a, b: a | b,
           ast.BitAnd: lambda a, b: a & b, ast.BitXor: lambda a, b: a ^ b,
           ast.LShift: lambda a, b: a << b, ast.RShift: lambda a, b: a >> b}

    def walk(node) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.LShift) and not 0 <= right < 64:
                raise ValueError("shift out of range")
            return ops[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert, ast.UAdd)):
            operand = walk(node.operand)
            if isinstance(node.op, ast.USub):
                return -operand
            return ~operand if isinstance(node.op, ast.Invert) else operand
        raise ValueError("not a constant")

    try:
        return walk(tree) & 0xFFFFFFFF
    except (ValueError, RecursionError):
        return None


def _symbolic_body(text: str) -> Optional[str]:
    """The text inside `__print_symbolic(REC->reason, ...)`, up to its closing paren."""
    m = _SYMBOLIC_RE.search(text)
    if not m:
        return None
    depth, i, in_str = 1, m.end(), False
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return text[m.end():i]
        i += 1
    return text[m.end():]  # truncated file: take what is there


def parse_kfree_skb_format(text: str) -> ReasonTable:
    """Reason table from the text of tracefs `events/skb/kfree_skb/format`.

    Raises KernelFeatureError when the kernel has no drop reasons at all
    (before 5.17) or prints them without a readable table (5.19).
    """
    fields = parse_format_fields(text)
    if "reason" not in fields:
        raise KernelFeatureError(
            "the kfree_skb tracepoint has no drop reason field (kernel older than 5.17)",
            "drop reasons need Linux 5.17 or newer")
    body = _symbolic_body(text)
    if body is None:
        raise KernelFeatureError(
            "the kfree_skb format prints drop reasons without a __print_symbolic table",
            "read the reason names from BTF (/sys/kernel/btf/vmlinux)")
    reasons: Dict[int, str] = {}
    for expr, name in _ENTRY_RE.findall(body):
        value = _eval_value(expr)
        if value is None or _is_pseudo_reason(name):
            continue
        reasons.setdefault(value, name)
    if not reasons:
        raise KernelFeatureError(
            "the kfree_skb format lists no drop reason with a numeric value",
            "read the reason names from BTF (/sys/kernel/btf/vmlinux)")
    return ReasonTable(reasons, "tracefs", fields)


# --- BTF -----------------------------------------------------------------------

_PSEUDO_REASONS = frozenset({"MAX", "SUBSYS_MASK", "SUBSYS_SHIFT"})


def _is_pseudo_reason(name: str) -> bool:
    """Enumerators that bound or mask the enum rather than name a drop."""
    return name in _PSEUDO_REASONS or name.startswith("_")


def from_btf_enum(enumerators: Mapping[str, int]) -> ReasonTable:
    """Reason table from the BTF enum `skb_drop_reason` given as name -> value.

    Keeps SKB_NOT_DROPPED_YET and SKB_CONSUMED (as NOT_DROPPED_YET, CONSUMED),
    which are real enum values though kfree_skb never reports them, and drops
    SKB_DROP_REASON_MAX and SKB_DROP_REASON_SUBSYS_MASK.
    """
    reasons: Dict[int, str] = {}
    for full, value in enumerators.items():
        if full.startswith(_PREFIX):
            name = full[len(_PREFIX):]
        elif full.startswith("SKB_"):
            name = full[len("SKB_"):]
        else:
            name = full
        if not name or _is_pseudo_reason(name):
            continue
        # BTF enum values may come back as signed 32-bit (0xffff0000 -> -65536).
        reasons.setdefault(int(value) & 0xFFFFFFFF, name)
    if not reasons:
        raise KernelFeatureError("BTF enum skb_drop_reason has no drop reasons",
                                 "drop reasons need Linux 5.17 or newer")
    return ReasonTable(reasons, "btf")


# --- loading -----------------------------------------------------------------

def load_reason_table(tracefs_root: str = DEFAULT_TRACEFS,
                      btf_enum: Optional[Callable[[], Mapping[str, int]]] = None
                      ) -> ReasonTable:
    """Reason table of the running kernel: tracefs first, then BTF.

    `btf_enum` returns the enumerators of `enum skb_drop_reason` (name -> value);
    it is only called when tracefs cannot answer.
    """
    roots = [tracefs_root]
    if tracefs_root == DEFAULT_TRACEFS:
        roots.append(_LEGACY_TRACEFS)
    text, read_error = None, None
    for root in roots:
        try:
            with open(os.path.join(root, FORMAT_PATH), encoding="utf-8") as f:
                text = f.read()
            break
        except OSError as e:
            read_error = read_error or e

    tracefs_error: Optional[KernelFeatureError] = None
    if text is not None:
        try:
            return parse_kfree_skb_format(text)
        except KernelFeatureError as e:
            if "reason" not in parse_format_fields(text):
                raise  # before 5.17: BTF has no drop reasons either
            tracefs_error = e  # e.g. 5.19: reasons exist, tracefs can't name them

    if btf_enum is not None:
        try:
            enumerators = btf_enum()
        except BrtraceError:
            raise
        except (OSError, LookupError, ValueError) as e:
            raise KernelFeatureError(f"cannot read enum skb_drop_reason from BTF: {e}",
                                     MOUNT_HINT) from e
        if enumerators:
            return from_btf_enum(enumerators)

    if tracefs_error is not None:
        raise tracefs_error
    where = os.path.join(tracefs_root, FORMAT_PATH)
    raise KernelFeatureError(f"cannot read {where}: {read_error}", MOUNT_HINT)
