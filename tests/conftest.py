"""Fixtures shared by the test modules: run the CLI in this process and read what it printed."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cli_helpers import run_cli


@pytest.fixture
def wide_console(monkeypatch) -> None:
    """A wide stdout console so that table cells are not wrapped, whatever the terminal size."""
    from dtn_bench.cli.output import console

    monkeypatch.setattr(console, "width", 250)


@pytest.fixture
def invoke(capsys, wide_console) -> Callable[..., tuple[int, str, str]]:
    """``invoke(*argv)`` runs ``dtn-bench *argv`` in this process: ``(exit code, stdout, stderr)``.

    Output printed before the call (by an earlier call, a fixture) is not part of the result.
    """

    def call(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run_cli(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call
