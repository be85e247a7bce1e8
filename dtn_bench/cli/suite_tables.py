"""``dtn-bench table listops|profile|norms|lra-scaling RUN...``: paper-style tables and plots from finished runs.

Each command reads the rows of one or more run folders (or rows files, or folders of runs), keeps its suite's rows,
prints the Markdown (or LaTeX) document and, with ``--out``, writes ``table.md``, ``table.tex`` and the suite's plots
there. Rendering only: nothing is measured. (``table imagenet-c`` lives in ``dtn_bench.cli.imagenet_c``.)
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.main import console
from dtn_bench.cli.table import table_app
from dtn_bench.errors import DTNBenchError

RunsArg = Annotated[list[Path], typer.Argument(help="Run folders, rows files, or folders of runs to combine.")]
OutDirOpt = Annotated[Path | None, typer.Option("--out", help="Also write table.md, table.tex and the plots into "
                                                "this folder.")]
FormatOpt = Annotated[str, typer.Option("--format", help="What to print: md or tex.")]


def _render(suite: str, runs: list[Path], out: Path | None, fmt: str, render: Callable,
            plots: dict[str, Callable]) -> None:
    from dtn_bench.results.io import read_rows

    if fmt not in ("md", "tex"):
        raise DTNBenchError(f"--format {fmt!r}: choose md or tex")
    df = read_rows(runs)
    df = df[df["suite"] == suite] if "suite" in df.columns else df.iloc[:0]
    if df.empty:
        raise DTNBenchError(f"no {suite} rows in {', '.join(map(str, runs))}")
    md, tex = render(df, "md"), render(df, "tex")
    console.print(md if fmt == "md" else tex, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        from dtn_bench.results.writer import atomic_write_bytes, atomic_write_text

        atomic_write_text(out / "table.md", md)
        atomic_write_text(out / "table.tex", tex)
        for name, plot in plots.items():
            buf = io.BytesIO()
            plot(df).savefig(buf, format="png", dpi=150, bbox_inches="tight")
            atomic_write_bytes(out / name, buf.getvalue())
        console.print(f"written: {out}")


@table_app.command("listops")
def table_listops(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """ListOps: rows Transformer / BigBird / Reformer, LN, DTN, DTN - LN and the published numbers (mean ± std over
    the seeds of all runs given), and the learning curves."""
    from dtn_bench.lra.config import SUITE
    from dtn_bench.lra.report import curves_plot, render_report

    _render(SUITE, runs, out, fmt, render_report, {"curves.png": curves_plot})


@table_app.command("profile")
def table_profile(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """Cost profile: the paper's Table 1 layout (measured FLOPs / params beside the published ones), DTN / LN
    overhead, throughput, latency, memory; throughput-vs-batch and latency plots."""
    from dtn_bench.profile.report import latency_plot, render_report, throughput_plot

    _render("profile", runs, out, fmt, render_report,
            {"throughput.png": throughput_plot, "latency.png": latency_plot})


@table_app.command("norms")
def table_norms(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """Normaliser comparison (bench norms): time per layer of every normaliser, DTN vs the authors' algorithm."""
    from dtn_bench.bench.norms import SUITE
    from dtn_bench.bench.report import bar_plot, render_report

    _render(SUITE, runs, out, fmt, render_report, {"norms.png": bar_plot})


@table_app.command("lra-scaling")
def table_lra_scaling(runs: RunsArg, out: OutDirOpt = None, fmt: FormatOpt = "md") -> None:
    """LRA length scaling: time and memory per length and the log-log slopes."""
    from dtn_bench.bench.scaling import SUITE, loglog_plot, render_report

    _render(SUITE, runs, out, fmt, render_report, {"scaling.png": loglog_plot})
