"""What the commands print: the consoles, suites' summary tables, and a run under a progress bar."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

# markup off: what the commands print holds user text (paths, names, messages), and `data[test]` or `[/x]` must
# print as given; a style is given as a Text (print_error, print_warning) or a style= argument, never as markup
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)
STATE: dict = {"debug": False, "interrupted": "interrupted"}
"""``debug``: ``--debug`` was given. ``interrupted``: the line printed on Ctrl-C (a command that writes rows says
so with :func:`say_rows_are_kept`)."""
ROWS_KEPT = "interrupted; rows finished so far are saved"


def say_rows_are_kept(line: str = ROWS_KEPT) -> None:
    """From now on, Ctrl-C prints ``line`` (default: the rows finished so far are saved), not ``interrupted``."""
    STATE["interrupted"] = line


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, ``message`` as given (never read as markup)."""
    err_console.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    """``warning: <message>`` on stderr, ``message`` as given (never read as markup)."""
    err_console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False, soft_wrap=True)


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
    say_rows_are_kept()
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
        print_warning("no configuration produced rows; no tables written")
    elif suite.report.console is not None:
        print_tables(suite.report.console(result.rows))
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    for label in skipped:
        print_warning(label)
    console.print(f"results: {result.path}")


def print_frame(df, title: str, index_label: str) -> None:
    """A wide table (index + columns) on the console; floats with 2 decimals."""
    from dtn_bench.runner import ConsoleTable

    print_tables([ConsoleTable.from_frame(df, title, index_label)])
