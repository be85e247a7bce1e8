"""What the commands print: the consoles, suites' summary tables, and a run under a progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from dtn_bench.errors import DTNBenchError

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}


def print_tables(tables) -> None:
    """Print a suite's :class:`~dtn_bench.runner.ConsoleTable` s."""
    for t in tables:
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="right" if t.right and t.right[i] else "left")
        for r in t.rows:
            table.add_row(*r)
        console.print(table)


def run_with_progress(suite_name: str, cfg, out: Path, run_id: str | None, resume: bool = False) -> None:
    """Run a suite through :func:`dtn_bench.runner.run_suite` under a progress bar, then print its summaries, the
    configurations it skipped and the run folder."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dtn_bench.runner import run_suite
    from dtn_bench.suites import get_suite

    suite = get_suite(suite_name)
    skipped: list[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(suite.name, total=suite.steps(cfg) if suite.steps else None)

        def on_event(kind: str, **info) -> None:
            if kind == "step":
                progress.update(task, advance=1, description=f"{suite.name}: {info['label']}")
                if not info["rows"] and info["label"].endswith("skipped"):
                    skipped.append(info["label"])

        result = run_suite(suite, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)
    if result.rows is None or result.rows.empty:
        err_console.print("[yellow]warning:[/yellow] no configuration produced rows; no tables written")
    elif suite.report.console is not None:
        print_tables(suite.report.console(result.rows))
    for label in skipped:
        err_console.print(f"[yellow]warning:[/yellow] {label}", highlight=False, soft_wrap=True)
    console.print(f"results: {result.path}")


def _preset_config(suite: str, preset_name: str, cls, overrides: dict, **fixed):
    """The suite's preset with the CLI flags that were given (not None) merged over it, as a validated ``cls``."""
    from dtn_bench.suites import load_preset

    fields = load_preset(suite, preset_name)
    fields.update({k: v for k, v in overrides.items() if v is not None})
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    unknown = set(fields) - set(cls.__dataclass_fields__)
    if unknown:
        raise DTNBenchError(f"suites/{suite}.yaml preset {preset_name!r}: unknown fields {sorted(unknown)}")
    cfg = cls(**fields, **fixed)
    cfg.validate()
    return cfg


def _write_report(writer, render_report, plot, plot_name: str):
    """table.md, table.tex and the plot of a run, rendered from its rows; returns the rows."""
    df = writer.rows()
    writer.write_text("table.md", render_report(df, "md"))
    writer.write_text("table.tex", render_report(df, "tex"))
    writer.savefig(plot(df), plot_name)
    return df


def _run_suite(suite: str, cfg, items, total: int, out: Path, run_id: str | None, render) -> None:
    """Append rows as they come, with a progress bar, then render tables and plots from the rows."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from dtn_bench.results.writer import RunWriter

    writer = RunWriter(out, suite, cfg.as_dict(), run_id=run_id, device=getattr(cfg, "device", None))
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(suite, total=total)
        for label, rows in items:
            writer.append(rows)
            progress.update(task, advance=1, description=f"{suite}: {label}")
    render(writer)
    console.print(f"results: {writer.path}")


def print_frame(df, title: str, index_label: str) -> None:
    """A wide table (index + columns) on the console; floats with 2 decimals."""
    from dtn_bench.runner import ConsoleTable

    print_tables([ConsoleTable.from_frame(df, title, index_label)])
