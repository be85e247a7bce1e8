"""``dtn-bench table <suite>|all RUN...``: paper-style tables and plots from finished runs.

``<suite>`` is listops, imagenet-c, profile, norms or lra-scaling.

Each suite command reads the rows of one or more run folders (or rows files, or folders of runs), keeps its suite's
rows, prints the Markdown, LaTeX or CSV document and, with ``--out``, writes ``table.md``, ``table.tex``,
``table.csv`` and the suite's plots there. The CSV holds the suite's main paper-style table, laid out as in the
Markdown (published numbers beside ours): Table 1 for profile, the test-accuracy table (last checkpoint) for
listops, the normaliser comparison for norms, the step time per length and the log-log slopes for lra-scaling, the
robustness table for imagenet-c. A suite whose report declares render options gets them as options of its command
(listops: ``--ci t|bootstrap``, the interval of the paired DTN - LN differences over seeds).

A report may also offer comparison documents that need more than the rows (per-unit data kept in the run folders):
an attribute ``comparison(df, runs, **options) -> {file name: text}`` and ``comparison_options`` (names from
:data:`TABLE_OPTIONS`; imagenet-c: ``--n-boot``, ``--mcnemar`` for its paired image-level statistics). Those
documents are printed after the table (Markdown or LaTeX; ``--format csv`` prints the main table only) and written
with ``--out`` beside it.

Runs combine only when their rows agree on every measurement setting a table would otherwise average over (profile:
mode, autocast, dtype, channels_last, compile_mode, dtn_kernel, device_name, threads; listops: the training
settings, all but the seed; norms and lra-scaling: device and shapes); otherwise a one-line error names the setting
and the values seen. ``table all`` renders every suite found in the rows, one document after the other. The
commands are one generic loop over the registered suites that have a report (:class:`dtn_bench.runner.Report`:
documents, plots, the settings that must agree); nothing here knows a suite.

Rendering only: nothing is measured. Everything is rendered before anything is written, so an error leaves no
half-written folder.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from dtn_bench.cli.output import console, err_console
from dtn_bench.errors import DTNBenchError

RunsArg = Annotated[list[Path], typer.Argument(help="Run folders, rows files, or folders of runs to combine.")]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="Also write table.md, table.tex, table.csv and the plots "
                                                "into this folder.")]
FormatOpt = Annotated[str, typer.Option("--format", help="What to print: md, tex or csv (csv: the suite's main "
                                        "paper-style table).")]
FORMATS = ("md", "tex", "csv")
CiOpt = Annotated[str, typer.Option("--ci", help="Interval of the paired differences over seeds: t (Student t over "
                                    "the paired seeds) or bootstrap (paired percentile bootstrap).")]
RENDER_OPTIONS = ("ci",)
"""Render options a suite's report may declare (:attr:`dtn_bench.runner.Report.options`); its table command offers
them (``--ci`` for ``ci``)."""
NBootOpt = Annotated[int | None, typer.Option("--n-boot", help="Bootstrap resamples of the paired intervals "
                                              "(default 1000).")]
McNemarOpt = Annotated[bool, typer.Option("--mcnemar", help="Add McNemar's test per unit (e.g. per corruption and "
                                          "severity) to the paired comparison.")]
TABLE_OPTIONS = {"ci": (CiOpt, "t"), "n_boot": (NBootOpt, None), "mcnemar": (McNemarOpt, False)}
"""Every option a table command can offer: name -> (annotated type, default)."""


def _write(files: dict[Path, str | bytes]) -> None:
    from dtn_bench.results.writer import atomic_write_bytes

    for path, content in files.items():
        try:
            atomic_write_bytes(path, content if isinstance(content, bytes) else content.encode())
        except OSError as e:
            raise DTNBenchError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None


def _print(text: str, fmt: str) -> None:
    """The document on stdout (CSV exactly as written, so it pipes); notes go to stderr."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True, end="" if fmt == "csv" else "\n")


def _read(runs: list[Path], fmt: str, out: Path | None):
    """The rows of ``runs``, after checking ``--format`` and that ``--out`` can be written (nothing printed yet)."""
    from dtn_bench.results.io import read_rows
    from dtn_bench.results.writer import check_output_folder

    if fmt not in FORMATS:
        raise DTNBenchError(f"--format {fmt!r}: choose md, tex or csv")
    if out is not None:
        check_output_folder(out)
    return read_rows(runs)


def _suites_with_tables() -> dict:
    """Suite name (as in the rows) -> its :class:`~dtn_bench.runner.Suite`, for every suite that has a report."""
    from dtn_bench.suites import all_suites

    return {s.name: s for s in all_suites() if s.report is not None and s.command}


def _documents(suite, df, runs: list[Path], **options) -> dict[str, str]:
    """Checks the rows, then renders ``table.md``, ``table.tex`` and ``table.csv`` (name -> text)."""
    command = f"table {suite.command}"
    suite.report.check_combinable(df, runs, command)
    if suite.report.main(df, **options).empty:
        raise DTNBenchError(f"{command}: the rows hold no {suite.report.main_name}")
    return suite.report.documents(df, runs=runs, **options)


def render_suite(suite_name: str, runs: list[Path], out: Path | None, fmt: str, **options) -> None:
    """``dtn-bench table <suite>``: checks and renders the suite's rows of ``runs`` and prints the ``fmt`` document.

    With ``out``, it also writes every document and plot there. ``options`` are render options the suite's report
    declares (``ci="bootstrap"``).
    """
    from dtn_bench.suites import get_suite

    df = _read(runs, fmt, out)
    df = df[df["suite"] == suite_name] if "suite" in df.columns else df.iloc[:0]
    if df.empty:
        raise DTNBenchError(f"no {suite_name} rows in {', '.join(map(str, runs))}")
    suite = get_suite(suite_name)
    extra = {k: options.pop(k) for k in _comparison_options(suite) if k in options}
    docs = _documents(suite, df, runs, **options)
    comparison = getattr(suite.report, "comparison", None)
    more = comparison(df, runs, **extra) if comparison is not None else {}
    files: dict[Path, str | bytes] = {}
    if out is not None:
        files = {out / name: text for name, text in {**docs, **more}.items()}
        files.update({out / name: png for name, png in suite.report.figures(df).items()})
    shown = [docs[f"table.{fmt}"]] + ([t for n, t in more.items() if n.endswith(f".{fmt}")] if fmt != "csv" else [])
    if out is not None:
        _write(files)
    _print("\n".join(shown), fmt)
    if out is not None:
        err_console.print(f"written: {out}", markup=False, highlight=False, soft_wrap=True)


def _comparison_options(suite) -> tuple[str, ...]:
    return tuple(getattr(suite.report, "comparison_options", ()))


def _declaration(suite) -> dict:
    """What ``table <command>`` of ``suite`` needs to exist and show its help: the suite, the help, the options."""
    unknown = sorted(set(suite.report.options) - set(RENDER_OPTIONS))
    if unknown:
        raise ValueError(f"suite {suite.name}: no table option for render options {unknown}")
    names = [*suite.report.options, *_comparison_options(suite)]
    unknown = sorted(set(names) - set(TABLE_OPTIONS))
    if unknown:
        raise ValueError(f"suite {suite.name}: no table option for {unknown}")
    return {"suite": suite.name, "help": suite.table_help, "options": names}


TABLE_INDEX = Path(__file__).with_name("table_commands.json")
"""The ``table`` command of every built-in suite with a report: command -> :func:`_declaration`.

Generated from the suites by ``python -m dtn_bench.cli.table`` (a test checks that it is current), so that listing
the commands and their ``--help`` import no suite, and so no torch."""


def table_index() -> dict[str, dict]:
    """Command -> declaration of every registered suite with a table (imports the built-in suites)."""
    return {s.command: _declaration(s) for s in _suites_with_tables().values()}


def _known() -> dict[str, dict]:
    """The index, with the suites registered so far over it (a test's toy suite); imports no suite."""
    from dtn_bench.suites import SUITES

    known = json.loads(TABLE_INDEX.read_text(encoding="utf-8"))
    known.update({s.command: _declaration(s) for s in SUITES.registered() if s.report is not None and s.command})
    return known


def _table_command(suite_name: str, names: list[str]):
    """The command function of ``table <suite>``, with the options its report declares (render and comparison)."""

    def command(runs, out=None, fmt="md", **options) -> None:
        render_suite(suite_name, runs, out, fmt, **options)

    # typer reads the options from the signature: the fixed ones, then those the report declares
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("runs", keyword, annotation=RunsArg),
              inspect.Parameter("out", keyword, annotation=OutDirOpt, default=None),
              inspect.Parameter("fmt", keyword, annotation=FormatOpt, default="md")]
    params += [inspect.Parameter(n, keyword, annotation=TABLE_OPTIONS[n][0], default=TABLE_OPTIONS[n][1])
               for n in names]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def suite_commands() -> list[str]:
    """The ``table`` sub-command of every registered suite with a report."""
    return list(_known())


def suite_command(name: str):
    """The click command ``dtn-bench table <name>`` of the suite whose ``command`` is ``name`` (``None``: none)."""
    declared = _known().get(name)
    if declared is None:
        return None
    one = typer.Typer()
    one.command(name, help=declared["help"])(_table_command(declared["suite"], declared["options"]))
    return typer.main.get_command(one)


class SuiteTablesGroup(TyperGroup):
    """The ``table`` group: its fixed commands (``all``) and one command per registered suite with a report.

    The suite commands are made on demand from :data:`TABLE_INDEX` (so no ``--help`` imports a suite).
    """

    def list_commands(self, ctx):  # noqa: D102
        return [*suite_commands(), *super().list_commands(ctx)]

    def get_command(self, ctx, cmd_name):  # noqa: D102
        cmd = super().get_command(ctx, cmd_name)
        return cmd if cmd is not None else suite_command(cmd_name)


app = typer.Typer(cls=SuiteTablesGroup, help="Paper-style tables combining finished runs.", no_args_is_help=True)


_HEADINGS = {"md": "## {}\n", "tex": "% ---- {} ----", "csv": "# {}"}


@app.command("all")
def table_all(runs: RunsArg, out: Annotated[Path | None, typer.Option(
        "--out", help="Also write DIR/<suite>/table.md, table.tex, table.csv and the plots.")] = None,
        fmt: FormatOpt = "md") -> None:
    """Every suite found in the rows, one document after the other, each headed by its suite.

    Suites without a table, such as bench-corrupt, are named on stderr and left out.
    """
    df = _read(runs, fmt, out)
    specs = _suites_with_tables()
    found = list(dict.fromkeys(df["suite"].dropna())) if "suite" in df.columns else []
    chosen = [s for s in found if s in specs]
    if not chosen:
        extra = f" (rows of {', '.join(map(str, found))} only)" if found else ""
        raise DTNBenchError(f"table all: no rows of a suite with tables ({', '.join(specs)}) in "
                            f"{', '.join(map(str, runs))}{extra}")
    texts: list[str] = []
    files: dict[Path, str | bytes] = {}
    for suite in chosen:
        spec, rows = specs[suite], df[df["suite"] == suite]
        docs = _documents(spec, rows, runs)
        texts.append(_HEADINGS[fmt].format(suite) + "\n" + docs[f"table.{fmt}"])
        if out is not None:
            files.update({out / suite / name: text for name, text in docs.items()})
            files.update({out / suite / name: png for name, png in spec.report.figures(rows).items()})
    if out is not None:
        _write(files)
    _print("\n".join(texts), fmt)
    skipped = [s for s in found if s not in specs]
    if skipped:
        err_console.print(f"no tables for {', '.join(skipped)}: left out", markup=False, highlight=False)
    if out is not None:
        err_console.print(f"written: {out}", markup=False, highlight=False, soft_wrap=True)



if __name__ == "__main__":  # python -m dtn_bench.cli.table: rewrite TABLE_INDEX from the suites
    TABLE_INDEX.write_text(json.dumps(table_index(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"written: {TABLE_INDEX}")
