"""What the commands print: the consoles, suites' summary tables, and the one base progress view of events.

Every command shows what its suite emits (typed events, :mod:`dtn_bench.events`) through :class:`ProgressView`: one
rich bar per progress task (``images``, ``data``, ``layout``, ``demo images``, the suite's units), warnings and notes
as lines, the warm-up estimate, and the measurement's totals kept for the summary. A command with more to show
(``lra listops``: its training bars) subclasses it and adds handlers ``on_<kind>``.
"""

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


def _line(text: str) -> None:
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


class ProgressView:
    """Renders a run's events on stderr (rank 0): bars per progress task, messages as lines, totals for the summary.

    Args:
        label: what the run is called on its bars (``imagenet-c (ImageNet-C)``).
        units: show a bar of the runner's units (``Started`` / ``UnitDone``); measurement suites show images instead.
        note_prefix: printed before a note (``note: ``).
        notes_later: keep notes for :meth:`print_notes` (printed after the summary) instead of printing them now.
        enabled: ``False`` on ranks other than 0: nothing is shown.

    Attributes:
        done: the :class:`~dtn_bench.events.Finished` totals, when the measurement sent them.
        unreadable: files the measurement could not read (from each unit's result).
        skipped: units the suite skipped with no rows (``UnitDone`` labels ending in ``skipped``).
    """

    def __init__(self, label: str, *, units: bool = False, note_prefix: str = "", notes_later: bool = False,
                 enabled: bool = True):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.label, self.units, self.note_prefix, self.notes_later = label, units, note_prefix, notes_later
        self.enabled = enabled
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=err_console, transient=True)
        self.tasks: dict[str, int] = {}
        self.done = None
        self.unreadable: list[str] = []
        self.skipped: list[str] = []
        self.notes: list[str] = []

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def __call__(self, event) -> None:
        """Show one event (a handler ``on_<kind>`` of this view; events without one show nothing)."""
        if not self.enabled:
            return
        handler = getattr(self, f"on_{event.kind}", None)
        if handler is not None:
            handler(event)

    # ---------------------------------------------------------------------------------------------------- bars
    def task(self, name: str, description: str, total: int | None) -> int:
        """The bar of task ``name`` (made on first use)."""
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(description, total=total, rate="")
        return self.tasks[name]

    def counter(self, task: str, description: str):
        """A ``progress(done, total)`` callback that shows as task ``task`` (layout scans, data generation)."""
        from dtn_bench.events import Progress

        def update(done: int, total: int) -> None:
            self(Progress(task, completed=done, total=total, status=description))

        return update

    def close(self, name: str) -> None:
        """Remove the bar of task ``name``."""
        if name in self.tasks:
            self.bar.remove_task(self.tasks.pop(name))

    def on_progress(self, e) -> None:
        """A task advanced (its bar made on first use, removed when done)."""
        if e.done:
            self.close(e.task)
            return
        tid = self.task(e.task, e.status or f"{e.task} ({self.label})", e.total)
        t = next((t for t in self.bar.tasks if t.id == tid), None)
        speed = t.speed if t is not None and t.speed else None
        fields = {"rate": f"{speed:,.1f} {e.task}/s" if speed and e.task == "images" else ""}
        if e.status:
            fields["description"] = e.status
        self.bar.update(tid, advance=e.advance or None, completed=e.completed, total=e.total, **fields)

    def on_start(self, e) -> None:
        """The runner starts: a bar over its units (when asked for)."""
        if self.units:
            tid = self.task("units", self.label, e.total)
            self.bar.update(tid, completed=e.skipped)

    def on_step(self, e) -> None:
        """A unit's rows are written."""
        if self.units and "units" in self.tasks:
            self.bar.update(self.tasks["units"], advance=1, description=f"{self.label}: {e.label}")
        if not e.rows and e.label.endswith("skipped"):
            self.skipped.append(e.label)

    # -------------------------------------------------------------------------------------------- evaluation
    def on_pending(self, e) -> None:
        """The measurement starts: what resume skipped, and a bar over the images left."""
        self.close("layout")
        if e.skipped:
            err_console.print(f"resume: {e.skipped} finished pair(s) skipped, {e.pending} to go")
        self.task("images", f"{self.label}", e.images)

    def on_estimate(self, e) -> None:
        """The warm-up estimate of the run."""
        err_console.print(f"estimate from warm-up: {e.img_s:,.1f} img/s -> {e.seconds / 60:,.1f} min for "
                          f"{e.images:,} images")

    def on_pair(self, e) -> None:
        """A unit is scored."""
        if "images" in self.tasks:
            self.bar.update(self.tasks["images"], description=f"{self.label}: {e.label} err {e.top1_err:.3f}")
        self.unreadable += list(e.unreadable)

    def on_done(self, e) -> None:
        """The measurement's totals (for the summary)."""
        self.done = e

    # ---------------------------------------------------------------------------------------------- messages
    def on_warning(self, e) -> None:
        """A warning, at once."""
        _line(f"warning: {e.text}")

    def on_note(self, e) -> None:
        """A note, at once or kept for after the summary."""
        if self.notes_later:
            self.notes.append(e.text)
        else:
            _line(f"{self.note_prefix}{e.text}")

    def print_notes(self) -> None:
        """The notes kept for after the summary (stdout), and the skipped units (warnings)."""
        for note in self.notes:
            console.print(note, highlight=False, soft_wrap=True)
        for label in self.skipped:
            print_warning(label)

    def totals(self) -> None:
        """The measurement's totals line on stdout (when it sent them)."""
        if self.done is not None:
            d = self.done
            console.print(f"{d.images:,} images in {d.seconds:.1f} s ({d.img_s:,.1f} img/s end-to-end)")


def run_with_progress(suite_name: str, cfg, out: Path, run_id: str | None, resume: bool = False) -> None:
    """Run a suite through :func:`dtn_bench.runner.run_suite` under a :class:`ProgressView` of its units.

    Then print its summaries, its notes, the configurations it skipped and the run folder.
    """
    from dtn_bench.runner import run_suite
    from dtn_bench.suites import get_suite

    suite = get_suite(suite_name)
    say_rows_are_kept()
    with ProgressView(suite.name, units=True, notes_later=True) as view:
        result = run_suite(suite, cfg, out=out, run_id=run_id, resume=resume, on_event=view)
    if result.rows is None or result.rows.empty:
        print_warning("no configuration produced rows; no tables written")
    elif suite.report.console is not None:
        print_tables(suite.report.console(result.rows))
    view.print_notes()
    console.print(f"results: {result.path}")


def print_frame(df, title: str, index_label: str) -> None:
    """A wide table (index + columns) on the console; floats with 2 decimals."""
    from dtn_bench.runner import ConsoleTable

    print_tables([ConsoleTable.from_frame(df, title, index_label)])
