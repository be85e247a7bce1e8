"""``dtn-bench table listops RUN...``: the paper-style ListOps table and learning curves from finished runs."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import typer

from dtn_bench.cli.main import console
from dtn_bench.cli.table import table_app
from dtn_bench.errors import DTNBenchError


@table_app.command("listops")
def table_listops(
    runs: Annotated[list[Path], typer.Argument(help="Run folders, rows files, or folders of runs to combine.")],
    out: Annotated[Path | None, typer.Option("--out", help="Also write table.md, table.tex and curves.png into this "
                                             "folder.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="What to print: md or tex.")] = "md",
) -> None:
    """Combine lra-listops runs (e.g. one per seed or per machine) into the paper-style table (LN, DTN, DTN - LN,
    published numbers; mean ± std over seeds) and the learning curves."""
    from dtn_bench.lra.config import SUITE
    from dtn_bench.lra.report import curves_plot, render_report
    from dtn_bench.results.io import read_rows

    if fmt not in ("md", "tex"):
        raise DTNBenchError(f"--format {fmt!r}: choose md or tex")
    df = read_rows(runs)
    df = df[df["suite"] == SUITE] if "suite" in df.columns else df.iloc[:0]
    if df.empty:
        raise DTNBenchError(f"no {SUITE} rows in {', '.join(map(str, runs))}")
    md, tex = render_report(df, "md"), render_report(df, "tex")
    console.print(md if fmt == "md" else tex, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        from dtn_bench.results.writer import atomic_write_bytes, atomic_write_text

        atomic_write_text(out / "table.md", md)
        atomic_write_text(out / "table.tex", tex)
        buf = io.BytesIO()
        curves_plot(df).savefig(buf, format="png", dpi=150, bbox_inches="tight")
        atomic_write_bytes(out / "curves.png", buf.getvalue())
        console.print(f"written: {out}")
