"""What the commands print: the consoles, suites' summary tables, and a run under a progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
STATE = {"debug": False}


def print_tables(tables) -> None:
    """Print a suite's console summaries: :class:`~dtn_bench.runner.ConsoleTable` s, and lines (``str``) as they are."""
    for t in tables:
        if isinstance(t, str):
            console.print(t, highlight=False)
            continue
        table = Table(title=t.title)
        for i, col in enumerate(t.columns):
            table.add_column(col, justify="right" if t.right and t.right[i] else "left")
        for r in t.rows:
            table.add_row(*r)
        console.print(table)


def run_with_progress(suite_name: str, cfg, out: Path, run_id: str | None, resume: bool = False) -> None:
    """Run a suite through :func:`dtn_bench.runner.run_suite` under a progress bar.

    Then print its summaries, the configurations it skipped and the run folder.
    """
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
    notes: list[str] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(suite.name, total=suite.steps(cfg) if suite.steps else None)

        def on_event(kind: str, **info) -> None:
            if kind == "step":
                progress.update(task, advance=1, description=f"{suite.name}: {info['label']}")
                if not info["rows"] and info["label"].endswith("skipped"):
                    skipped.append(info["label"])
            elif kind == "note":
                notes.append(info["text"])

        result = run_suite(suite, cfg, out=out, run_id=run_id, resume=resume, on_event=on_event)
    if result.rows is None or result.rows.empty:
        err_console.print("[yellow]warning:[/yellow] no configuration produced rows; no tables written")
    elif suite.report.console is not None:
        print_tables(suite.report.console(result.rows))
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    for label in skipped:
        err_console.print(f"[yellow]warning:[/yellow] {label}", highlight=False, soft_wrap=True)
    console.print(f"results: {result.path}")


def print_frame(df, title: str, index_label: str) -> None:
    """A wide table (index + columns) on the console; floats with 2 decimals."""
    from dtn_bench.runner import ConsoleTable

    print_tables([ConsoleTable.from_frame(df, title, index_label)])
