"""The ``dtn-bench`` command line: a thin Typer layer over the library.

This module makes the app and mounts one module per command group on it (``add_typer``; the modules import nothing
from here): :mod:`~dtn_bench.cli.listing` (list, info), :mod:`~dtn_bench.cli.lra` (lra generate, lra listops),
:mod:`~dtn_bench.cli.imagenet_c`, :mod:`~dtn_bench.cli.cifar_c`, :mod:`~dtn_bench.cli.corrupt`,
:mod:`~dtn_bench.cli.profile`, :mod:`~dtn_bench.cli.train`, :mod:`~dtn_bench.cli.robustness`,
:mod:`~dtn_bench.cli.bench` (bench norms, bench lra-scaling; the other bench commands live beside their suite's
command) and :mod:`~dtn_bench.cli.table`. Shared options are in :mod:`~dtn_bench.cli.options`, printing in
:mod:`~dtn_bench.cli.output`.

Heavy imports (torch, timm) happen inside commands so ``--help`` is instant. Every user error is a
:class:`~dtn_bench.errors.DTNBenchError`: one line on stderr, exit code 2, a traceback only with ``--debug``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dtn_bench import __version__
from dtn_bench.cli import bench, cifar_c, corrupt, imagenet_c, listing, lra, profile, robustness, shifts, table, train
from dtn_bench.cli.output import STATE, console, err_console, print_error
from dtn_bench.errors import DTNBenchError

app = typer.Typer(
    name="dtn-bench",
    help="Benchmarks for token normalisers in transformers, built around Dynamic Token Normalization (DTN).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Micro-benchmarks (what a normaliser costs).", no_args_is_help=True)
for _module in (bench, corrupt, imagenet_c):  # each module's bench commands, merged into one group
    bench_app.add_typer(_module.bench)
for _module in (listing, corrupt, imagenet_c, cifar_c, shifts, profile, train, robustness):  # top-level commands
    app.add_typer(_module.app)
app.add_typer(bench_app, name="bench")
app.add_typer(lra.app, name="lra")
app.add_typer(table.app, name="table")


def _version(value: bool) -> None:
    if value:
        console.print(f"dtn-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and full error details.")] = False,
) -> None:
    STATE["debug"] = debug


# ------------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning user errors into one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    STATE["interrupted"] = "interrupted"  # until a command that writes rows says otherwise
    try:
        rc = app(args=args, prog_name="dtn-bench", standalone_mode=False)
        if rc == 130:  # typer (standalone_mode=False) turns Ctrl-C into this return value
            raise KeyboardInterrupt
    except DTNBenchError as e:
        if debug:
            raise
        print_error(str(e))
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print(STATE["interrupted"], highlight=False, soft_wrap=True)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        # typer vendors its own click (typer._click): its usage errors are not click.ClickException
        if isinstance(e, (click.ClickException, typer.TyperException)) and hasattr(e, "format_message"):
            print_error(f"{e.format_message()} (dtn-bench --help for the usage)")
            sys.exit(getattr(e, "exit_code", 2))
        if debug:
            raise
        print_error(f"{type(e).__name__}: {e} (--debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
