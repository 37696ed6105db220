"""Plain-text tables for drop rows, within a given width (80 by default). Pure."""

from __future__ import annotations

import textwrap

from tabulate import tabulate


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: max(1, n - 1)] + "~"


def drops_table(rows: list, width: int = 80, rates: bool = True) -> list[str]:
    """A table of drop rows (most first) plus numbered explanations beneath.

    Columns: port, reason, function, proto, count (and rate). At 80 columns the
    function is shown without its offset (JSON always has the full location);
    from 100 columns on, function+offset. Long names are cut with '~' so the
    table never exceeds `width`.
    """
    if not rows:
        return ["no drops on the bridge or its ports"]
    wide = width >= 100
    port_w = max(4, min(15, max(len(r.port) for r in rows)))   # IFNAMSIZ-1 at most
    fixed = port_w + 6 + 7 + (7 if rates else 0)      # port, proto, count, rate
    seps = 2 * (5 if rates else 4)
    flexible = max(30, width - fixed - seps)
    reason_w = min(27, flexible // 2)                  # 24-char reasons + "[n]"
    where_w = flexible - reason_w
    notes: list[str] = []
    body = []
    for row in rows:
        mark = ""
        if row.explanation:
            if row.explanation not in notes:
                notes.append(row.explanation)
            mark = f"[{notes.index(row.explanation) + 1}]"
        where = row.location if wide else row.function
        line = [_cut(row.port, port_w), _cut(row.reason, reason_w - len(mark)) + mark,
                _cut(where, where_w), _cut(row.proto, 6), row.count]
        if rates:
            line.append(f"{row.rate:.1f}")
        body.append(line)
    headers = ["PORT", "REASON", "LOCATION" if wide else "FUNCTION", "PROTO", "COUNT"]
    headers += ["/s"] if rates else []
    out = tabulate(body, headers=headers, tablefmt="simple", disable_numparse=True,
                   colalign=("left", "left", "left", "left", "right") + (("right",) if rates else ())
                   ).splitlines()
    for i, note in enumerate(notes, 1):
        out.extend(textwrap.wrap(f"[{i}] {note}", width=width, subsequent_indent="    "))
    return out


def findings_lines(findings: list, width: int = 80) -> list[str]:
    """Findings as wrapped text: severity, type and ports, then message and hint."""
    out = ["", "findings:"]
    for f in findings:
        head = f"{f.severity.upper()} {f.type} on {', '.join(f.shown_ports())}: "
        out.extend(textwrap.wrap(head + f.message, width=width, subsequent_indent="    "))
        out.extend(textwrap.wrap("try: " + f.hint, width=width, initial_indent="    ",
                                 subsequent_indent="    "))
    return out
