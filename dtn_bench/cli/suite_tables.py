"""``dtn-bench table listops|imagenet-c|profile|norms|lra-scaling|all RUN...``: paper-style tables and plots from
finished runs.

Each suite command reads the rows of one or more run folders (or rows files, or folders of runs), keeps its suite's
rows, prints the Markdown, LaTeX or CSV document and, with ``--out``, writes ``table.md``, ``table.tex``,
``table.csv`` and the suite's plots there. The CSV holds the suite's main paper-style table, laid out as in the
Markdown (published numbers beside ours): Table 1 for profile, the test-accuracy table (last checkpoint) for
listops, the normaliser comparison for norms, the step time per length and the log-log slopes for lra-scaling, the
robustness table for imagenet-c.

Runs combine only when their rows agree on every measurement setting a table would otherwise average over (profile:
mode, autocast, dtype, channels_last, compile_mode, dtn_kernel, device_name, threads; listops: the training
settings, all but the seed; norms and lra-scaling: device and shapes); otherwise a one-line error names the setting
and the values seen. ``table all`` renders every suite found in the rows, one document after the other. (The
``table imagenet-c`` command is registered in ``dtn_bench.cli.imagenet_c`` and renders through :func:`render_suite`
too.)

Rendering only: nothing is measured. Everything is rendered before anything is written, so an error leaves no
half-written folder.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.main import console, err_console
from dtn_bench.cli.table import table_app
from dtn_bench.errors import DTNBenchError
from dtn_bench.results.tables import setting_text

RunsArg = Annotated[list[Path], typer.Argument(help="Run folders, rows files, or folders of runs to combine.")]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="Also write table.md, table.tex, table.csv and the plots "
                                                "into this folder.")]
FormatOpt = Annotated[str, typer.Option("--format", help="What to print: md, tex or csv (csv: the suite's main "
                                        "paper-style table).")]
FORMATS = ("md", "tex", "csv")

PROFILE_SETTINGS = ("mode", "autocast", "dtype", "channels_last", "compile_mode", "dtn_kernel", "device_name",
                    "threads")
"""Profile row columns that must agree across combined runs (the tables average over runs)."""
LISTOPS_ROW_SETTINGS = ("preset", "max_len", "data")
"""ListOps row columns that must agree (with the training length, the ``step`` of the last checkpoint)."""
LISTOPS_NOT_TRAINING = ("models", "norms", "seeds", "device")
"""``config.json`` fields of a ListOps run that may differ between combined runs (all others must agree)."""
NORMS_SETTINGS = ("device", "batch", "tokens", "dim", "heads", "grid", "dtype", "mode", "malloc_tuned")
"""bench-norms row columns that must agree within each ``model`` (the layer rows, each whole model)."""
SCALING_SETTINGS = ("device", "batch", "dim", "heads", "depth", "mlp_dim", "malloc_tuned")
"""bench-lra-scaling row columns that must agree (and ``n_buckets`` per model and length, slope ranges per pair)."""


@dataclass(frozen=True)
class SuiteTables:
    """How ``dtn-bench table`` renders one suite.

    Attributes:
        command: the sub-command (``table <command>``), also the prefix of its errors.
        render: ``render(rows, "md" | "tex")`` -> the document.
        main: ``main(rows)`` -> the paper-style table written as CSV (its emptiness is an error).
        main_name: what ``main`` shows (for the error when the rows hold none).
        csv: ``csv(rows)`` -> the CSV text, where the suite renders its own (default: ``to_csv(main)``, 9 decimals).
        plots: file name -> ``plot(rows)`` returning a matplotlib figure.
        settings: ``(columns, within)`` pairs: each column must hold one value within each group of ``within``.
        check: a further check ``check(rows, runs)`` (raises :class:`DTNBenchError`), or ``None``.
    """

    command: str
    render: Callable
    main: Callable
    main_name: str
    plots: dict[str, Callable] = field(default_factory=dict)
    settings: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = ()
    check: Callable | None = None
    csv: Callable | None = None


def check_same_settings(df, command: str, columns, within=()) -> None:
    """Raises a one-line :class:`DTNBenchError` when rows of one group differ in a setting.

    Args:
        df: rows.
        command: the error's prefix, e.g. ``"table profile"``.
        columns: setting columns; a missing column and missing values are not compared.
        within: columns whose groups are checked separately (rows with a missing key are not checked).

    Raises:
        DTNBenchError: ``"<command>: the runs differ in <column> (<values>); render them separately"``.
    """
    keys = [c for c in within if c in df.columns]
    groups = [g for _, g in df.groupby(keys, sort=False)] if keys else [df]
    for column in columns:
        if column not in df.columns:
            continue
        for group in groups:
            values = list(dict.fromkeys(setting_text(v) for v in group[column].dropna()))
            if len(values) > 1:
                raise DTNBenchError(f"{command}: the runs differ in {column} ({', '.join(values)}); render them "
                                    "separately")


def _config_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _check_listops(df, runs: list[Path]) -> None:
    """ListOps: the same training length in the rows, and the same training settings in the runs' ``config.json``
    (every field but :data:`LISTOPS_NOT_TRAINING`; a field added after a run was recorded counts as its default,
    other fields some configs lack are not compared)."""
    from dtn_bench.lra.config import SUITE, with_defaults
    from dtn_bench.results.io import _rows_files, read_rows

    if "checkpoint" in df.columns and "step" in df.columns:
        last = df[df["checkpoint"] == "last"].rename(columns={"step": "training steps"})
        check_same_settings(last, "table listops", ["training steps"])
    configs, seen = [], set()
    for path in runs:
        for file in _rows_files(Path(path)):
            config_file = file.parent / "config.json"
            key = config_file.resolve()
            if key in seen or not config_file.is_file():
                continue
            seen.add(key)
            rows = read_rows(file)
            if "suite" not in rows.columns or not (rows["suite"] == SUITE).any():
                continue
            try:
                config = json.loads(config_file.read_text())
            except (OSError, ValueError) as e:
                raise DTNBenchError(f"{config_file}: cannot read the run's config ({e})") from None
            if not isinstance(config, dict):
                raise DTNBenchError(f"{config_file}: the run's config is not a JSON object")
            configs.append(with_defaults(config))
    common = [k for k in dict.fromkeys(k for c in configs for k in c)
              if k not in LISTOPS_NOT_TRAINING and all(k in c for c in configs)]
    for key in common:
        values = list(dict.fromkeys(_config_text(c[key]) for c in configs))
        if len(values) > 1:
            raise DTNBenchError(f"table listops: the runs differ in {key} ({', '.join(values)}); render them "
                                "separately")


def suite_tables() -> dict[str, SuiteTables]:
    """Suite name (as in the rows) -> how ``dtn-bench table`` renders it."""
    from dtn_bench.bench import report as norms_report
    from dtn_bench.bench import scaling
    from dtn_bench.bench.norms import SUITE as NORMS_SUITE
    from dtn_bench.imagenet_c import report as imagenet_c
    from dtn_bench.lra import report as listops
    from dtn_bench.lra.config import SUITE as LISTOPS_SUITE
    from dtn_bench.profile import report as profile

    return {
        "profile": SuiteTables(
            "profile", profile.render_report, profile.table1, "Table 1 counts (gmacs, params_m)",
            {"throughput.png": profile.throughput_plot, "latency.png": profile.latency_plot},
            settings=((PROFILE_SETTINGS, ()),)),
        LISTOPS_SUITE: SuiteTables(
            "listops", listops.render_report, lambda df: listops.paper_table(df, "last"),
            "test accuracy of a last checkpoint", {"curves.png": listops.curves_plot},
            settings=((LISTOPS_ROW_SETTINGS, ()),), check=_check_listops),
        NORMS_SUITE: SuiteTables(
            "norms", norms_report.render_report, norms_report.comparison_table, "normaliser comparison",
            {"norms.png": norms_report.bar_plot}, settings=((NORMS_SETTINGS, ("model",)),)),
        scaling.SUITE: SuiteTables(
            "lra-scaling", scaling.render_report, scaling.summary_table, "training-step times (time_ms, median)",
            {"scaling.png": scaling.loglog_plot},
            settings=((SCALING_SETTINGS, ()), (("n_buckets",), ("model", "length")),
                      (("length_min", "length_max"), ("model", "norm", "metric")))),
        "imagenet-c": SuiteTables(
            "imagenet-c", imagenet_c.render_table, lambda df: imagenet_c.paper_table(df)[0], "ImageNet-C table",
            {"ce_bars.png": imagenet_c.ce_bars, "severity.png": imagenet_c.severity_lines},
            csv=lambda df: imagenet_c.render_table(df, "csv")),
    }


def _documents(spec: SuiteTables, df, runs: list[Path]) -> dict[str, str]:
    """Checks the rows, then renders ``table.md``, ``table.tex`` and ``table.csv`` (name -> text)."""
    from dtn_bench.results.tables import to_csv

    command = f"table {spec.command}"
    for columns, within in spec.settings:
        check_same_settings(df, command, columns, within)
    if spec.check is not None:
        spec.check(df, runs)
    main = spec.main(df)
    if main.empty:
        raise DTNBenchError(f"{command}: the rows hold no {spec.main_name}")
    csv = spec.csv(df) if spec.csv is not None else to_csv(main)
    return {"table.md": spec.render(df, "md"), "table.tex": spec.render(df, "tex"), "table.csv": csv}


def _plots(spec: SuiteTables, df) -> dict[str, bytes]:
    from dtn_bench.plots import _plt

    plt = _plt()
    out = {}
    for name, plot in spec.plots.items():
        fig = plot(df)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        out[name] = buf.getvalue()
    return out


def _write(files: dict[Path, str | bytes]) -> None:
    from dtn_bench.results.writer import atomic_write_bytes, atomic_write_text

    for path, content in files.items():
        if isinstance(content, bytes):
            atomic_write_bytes(path, content)
        else:
            atomic_write_text(path, content)


def _print(text: str, fmt: str) -> None:
    """The document on stdout (CSV exactly as written, so it pipes); notes go to stderr."""
    console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True, end="" if fmt == "csv" else "\n")


def _read(runs: list[Path], fmt: str):
    from dtn_bench.results.io import read_rows

    if fmt not in FORMATS:
        raise DTNBenchError(f"--format {fmt!r}: choose md, tex or csv")
    return read_rows(runs)


def render_suite(suite: str, runs: list[Path], out: Path | None, fmt: str) -> None:
    """``dtn-bench table <suite>``: checks and renders the suite's rows of ``runs``, prints the ``fmt`` document and,
    with ``out``, writes every document and plot there."""
    df = _read(runs, fmt)
    df = df[df["suite"] == suite] if "suite" in df.columns else df.iloc[:0]
    if df.empty:
        raise DTNBenchError(f"no {suite} rows in {', '.join(map(str, runs))}")
    spec = suite_tables()[suite]
    docs = _documents(spec, df, runs)
    files: dict[Path, str | bytes] = {}
    if out is not None:
        files = {out / name: text for name, text in docs.items()}
        files.update({out / name: png for name, png in _plots(spec, df).items()})
    _print(docs[f"table.{fmt}"], fmt)
    if out is not None:
        _write(files)
        err_console.print(f"written: {out}", markup=False, highlight=False, soft_wrap=True)


@table_app.command("listops")
def table_listops(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """ListOps: rows Transformer / BigBird / Reformer, LN, DTN, DTN - LN and the published numbers (mean ± std over
    the seeds of all runs given; the runs must share every other training setting), and the learning curves."""
    from dtn_bench.lra.config import SUITE

    render_suite(SUITE, runs, out, fmt)


@table_app.command("profile")
def table_profile(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """Cost profile: the paper's Table 1 layout (measured FLOPs / params beside the published ones), DTN / LN
    overhead, throughput, latency, memory; throughput-vs-batch and latency plots. The runs must share mode,
    autocast, dtype, channels_last, compile_mode, dtn_kernel, device and threads."""
    render_suite("profile", runs, out, fmt)


@table_app.command("norms")
def table_norms(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """Normaliser comparison (bench norms): time per layer of every normaliser, DTN vs the authors' algorithm, and
    the paper's normaliser comparison (published top-1 beside our layer cost). The runs must share device and
    shapes."""
    from dtn_bench.bench.norms import SUITE

    render_suite(SUITE, runs, out, fmt)


@table_app.command("lra-scaling")
def table_lra_scaling(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """LRA length scaling: time and memory per length and the log-log slopes. The runs must share device and
    model shape."""
    from dtn_bench.bench.scaling import SUITE

    render_suite(SUITE, runs, out, fmt)


_HEADINGS = {"md": "## {}\n", "tex": "% ---- {} ----", "csv": "# {}"}


@table_app.command("all")
def table_all(runs: RunsArg, out: Annotated[Path | None, typer.Option(
        "--out", help="Also write DIR/<suite>/table.md, table.tex, table.csv and the plots.")] = None,
        fmt: FormatOpt = "md") -> None:
    """Every suite found in the rows, one document after the other (each headed by its suite; suites without a
    table, such as bench-corrupt, are named on stderr and left out)."""
    df = _read(runs, fmt)
    specs = suite_tables()
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
            files.update({out / suite / name: png for name, png in _plots(spec, rows).items()})
    _print("\n".join(texts), fmt)
    skipped = [s for s in found if s not in specs]
    if skipped:
        err_console.print(f"no tables for {', '.join(skipped)}: left out", markup=False, highlight=False)
    if out is not None:
        _write(files)
        err_console.print(f"written: {out}", markup=False, highlight=False, soft_wrap=True)
