"""Bad input: one line on stderr, non-zero exit, no traceback. No root needed."""

import pytest

from tracer import cli


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["drops"], "Missing option '--bridge'"),
    (["drops", "-b", "br0", "--interval", "0"], "--interval"),
    (["drops", "-b", "br0", "--interval", "-3"], "--interval"),
    (["drops", "-b", "br0", "--interval", "1e9"], "--interval"),
    (["drops", "-b", "br0", "--duration", "-1"], "--duration"),
    (["drops", "-b", "br0", "-o", "xml"], "--output"),
    (["drops", "-b", "br0", "--interval", "fast"], "--interval"),
    (["nosuchverb"], "No such command"),
])
def test_usage_errors_are_one_line(argv, needle, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and needle in err and err.startswith("brtrace: error: ")
    assert "Traceback" not in err


def test_not_root_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    code, _out, err = run(["drops", "-b", "br0"], capsys)
    assert code != 0
    assert err == "brtrace: error: brtrace needs root to load BPF programs; run it with sudo (or as root)\n"


def test_help_ends_with_examples(capsys):
    code, out, _err = run(["drops", "--help"], capsys)
    assert code == 0 and "Examples:" in out and "brtrace drops --bridge br-int" in out
