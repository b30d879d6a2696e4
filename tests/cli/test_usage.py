"""--help names the command as it was run and shows docstrings without reST markup."""
import pytest

from mat_kernels.cli import info, usage


def test_prog_follows_argv0(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/mat-info"])
    assert usage.prog("mat-info", "mat_kernels.cli.info") == "mat-info"
    monkeypatch.setattr("sys.argv", ["/src/mat_kernels/cli/info.py"])
    assert usage.prog("mat-info", "mat_kernels.cli.info") == "python -m mat_kernels.cli.info"


def test_plain_strips_literals_and_roles():
    assert usage.plain("``--json PATH`` and :mod:`mat_kernels.testing`") == "--json PATH and mat_kernels.testing"


def test_mat_info_help(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["/venv/bin/mat-info", "--help"])
    with pytest.raises(SystemExit):
        info.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: mat-info ") and "``" not in out and ":mod:" not in out
