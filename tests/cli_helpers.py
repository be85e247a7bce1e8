"""Shared by the CLI tests: run ``dtn-bench`` in this process."""

from __future__ import annotations

from dtn_bench.cli import main as cli


def run_cli(argv: list[str]) -> int:
    """Run the CLI in this process; the exit code (0 when it returns without exiting)."""
    try:
        cli.main(list(argv))
    except SystemExit as e:
        return 0 if e.code is None else e.code
    return 0
