"""The ``dtn-bench`` command line (:mod:`dtn_bench.cli.app`): one module per command group.

:func:`main` is the console script's entry point. It imports the app inside its own Ctrl-C handling, so that a Ctrl-C
while the command line starts (typer, rich, the command modules) prints one line and exits with 130 instead of a
traceback of the import.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``dtn-bench``, ``python -m dtn_bench``): see :func:`dtn_bench.cli.app.main`."""
    try:
        from dtn_bench.cli.app import main as run
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    run(argv)
