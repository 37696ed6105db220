"""Man pages from the click help: brtrace(8) and one brtrace-VERB(8) per verb.

scripts/package runs `python3 -m tracer.manpage DIR [DATE]`; nothing is
written by hand, so a new option shows up in `man brtrace-drops` by itself.
Pure apart from main(): page() returns the roff text of one page.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

SECTION = "8"
MANUAL = "brtrace manual"


def _esc(text: str) -> str:
    """Roff-safe text: backslashes, leading dots and quotes, hyphens of options."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def _paragraphs(help_text: str) -> list[str]:
    """Click's docstring as roff: plain paragraphs fill, \\b ones keep their lines."""
    out = []
    for para in click.unstyle(help_text or "").split("\n\n"):
        lines = [ln.rstrip() for ln in para.strip("\n").split("\n")]
        if lines and lines[0].strip() == "\b":
            out.append(".PP\n.nf\n" + _esc("\n".join(lines[1:])) + "\n.fi")
        elif any(ln.strip() for ln in lines):
            out.append(".PP\n" + _esc(" ".join(ln.strip() for ln in lines)))
    return out


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument):  # hidden; arguments are in the synopsis
            continue
        opts, help_text = record
        out.append(f".TP\n.B {_esc(opts)}\n{_esc(help_text) if help_text else ''}".rstrip())
    return out


def page(group: click.Group, name: str | None, version: str, date: str) -> str:
    """The page of `brtrace` (name None) or of `brtrace NAME`."""
    root = click.Context(group, info_name="brtrace")
    cmd = group if name is None else group.get_command(root, name)
    ctx = root if name is None else click.Context(cmd, info_name=name, parent=root)
    title = "brtrace" if name is None else f"brtrace-{name}"
    short = cmd.get_short_help_str(limit=200).rstrip(".").removeprefix("brtrace: ")
    lines = [
        f'.TH {_esc(title.upper())} {SECTION} "{date}" "brtrace {version}" "{MANUAL}"',
        ".SH NAME",
        f"{_esc(title)} \\- {_esc(short)}",
        ".SH SYNOPSIS",
        f".B {_esc(ctx.command_path)}",
        _esc(" ".join(cmd.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *_paragraphs(cmd.help),
    ]
    if name is None:
        lines.append(".SH COMMANDS")
        for sub in group.list_commands(root):
            sc = group.get_command(root, sub)
            lines += [f".TP\n.BR brtrace\\-{sub} ({SECTION})", _esc(sc.get_short_help_str(limit=200))]
    lines += [".SH OPTIONS", *_options(cmd, ctx)]
    if name is not None and isinstance(cmd, click.Group):   # a verb with its own verbs: incidents show
        lines.append(".SH COMMANDS")
        for sub in cmd.list_commands(ctx):
            sc = cmd.get_command(ctx, sub)
            sctx = click.Context(sc, info_name=sub, parent=ctx)
            lines += [f".SS {_esc(sctx.command_path)} {_esc(' '.join(sc.collect_usage_pieces(sctx)))}",
                      *_paragraphs(sc.help), *_options(sc, sctx)]
    if name is None:
        lines += [
            ".SH FILES",
            ".TP\n.I /var/cache/brtrace",
            "Kernel headers merged for bcc when the running kernel's own are not installed"
            " (BRTRACE_CACHE overrides).",
            ".TP\n.I /var/lib/brtrace/incidents",
            "Incident bundles recorded by brtrace watch, one directory each (brtrace\\-incidents(8)).",
            ".TP\n.I /usr/share/brtrace",
            "The program, its BPF C sources (bpf/), Prometheus alerting rules and a Grafana dashboard.",
            ".SH EXIT STATUS",
            "0 on success; non\\-zero with a one\\-line error on standard error otherwise.",
            ".SH SEE ALSO",
            " ,\n".join(f".BR brtrace\\-{sub} ({SECTION})" for sub in group.list_commands(root)),
        ]
    else:
        lines += [".SH SEE ALSO", f".BR brtrace ({SECTION})"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    from tracer.cli import cli  # noqa: PLC0415 - the page generator is a tool, not a verb's import
    from tracer.version import VERSION  # noqa: PLC0415 - idem
    dest = Path(argv[0])
    date = argv[1] if len(argv) > 1 else "1970-01-01"
    dest.mkdir(parents=True, exist_ok=True)
    names = [None, *cli.list_commands(click.Context(cli, info_name="brtrace"))]
    for name in names:
        title = "brtrace" if name is None else f"brtrace-{name}"
        (dest / f"{title}.{SECTION}").write_text(page(cli, name, VERSION, date))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
