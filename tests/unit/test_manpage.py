"""Man pages generated from the click help (tracer/manpage.py, scripts/package)."""

import shutil
import subprocess

import click
import pytest

from tracer import manpage
from tracer.cli import cli

VERBS = cli.list_commands(click.Context(cli, info_name="brtrace"))


def test_main_page_lists_every_verb():
    text = manpage.page(cli, None, "1.0", "2025-01-01")
    assert text.startswith('.TH BRTRACE 8 "2025-01-01" "brtrace 1.0"')
    assert "brtrace \\- where and why a Linux bridge drops or loops frames" in text
    for verb in VERBS:
        assert f".BR brtrace\\-{verb} (8)" in text
    assert "/var/cache/brtrace" in text and "\\-\\-version" in text


@pytest.mark.parametrize("verb", VERBS)
def test_verb_page_has_its_options_not_hidden_ones(verb):
    text = manpage.page(cli, verb, "1.0", "2025-01-01")
    assert f".TH BRTRACE\\-{verb.upper()} 8" in text
    assert f".B brtrace {verb}" in text
    cmd = cli.get_command(click.Context(cli), verb)
    for param in cmd.params:
        for opt in param.opts:
            shown = opt.replace("-", "\\-") in text
            assert shown != param.hidden, (verb, opt)


def test_pages_render_without_warnings(tmp_path):
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    manpage.main([str(tmp_path), "2025-01-01"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["brtrace.8", *(f"brtrace-{v}.8" for v in VERBS)])
    for page in tmp_path.iterdir():
        proc = subprocess.run(["man", "-P", "cat", "-l", str(page)], capture_output=True, text=True,
                              env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}, check=True)
        assert "SYNOPSIS" in proc.stdout and proc.stderr == "", (page, proc.stderr)
