"""One version, from pyproject.toml: `brtrace --version` and brtrace_build_info show it."""

from pathlib import Path

import pytest

from tracer import cli
from tracer.output.prometheus import VERSION as EXPORTED
from tracer.version import VERSION, from_pyproject

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_is_pyprojects():
    assert VERSION == from_pyproject(PYPROJECT.read_text()) != "unknown"
    assert EXPORTED == VERSION


def test_from_pyproject_reads_the_project_table_only():
    text = '[tool.x]\nversion = "9"\n\n[project]\nname = "brtrace"\nversion = "1.2.3"\n\n[tool.y]\nversion = "8"\n'
    assert from_pyproject(text) == "1.2.3"
    assert from_pyproject('[project]\nname = "brtrace"\n') is None


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_cli_version(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([flag])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"brtrace {VERSION}\n"
