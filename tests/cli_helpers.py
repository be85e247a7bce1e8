"""Shared by the CLI tests: run ``dtn-bench`` in this process, and the one-line error contract.

The fixtures built on these (``invoke``, ``wide_console``) live in ``conftest.py``; these are plain functions so that a
test module can import them.
"""

from __future__ import annotations

from collections.abc import Sequence


def run_cli(argv: Sequence[str]) -> int:
    """Run the CLI in this process; the exit code (0 when it returns without exiting)."""
    from dtn_bench.cli import app as cli

    try:
        cli.main(list(argv))
    except SystemExit as e:
        return 0 if e.code is None else e.code
    return 0


def assert_one_line_error(code: int, err: str, *expected: str, preceded_by: Sequence[str] = ()) -> str:
    """Assert the CLI's error contract: exit code 2, one ``error: ...`` line on stderr, no traceback.

    Args:
        code: the exit code.
        err: everything the command wrote to stderr.
        *expected: substrings the error line must contain.
        preceded_by: the non-empty stderr lines a command prints before it fails (e.g. the data label of
            ``imagenet-c``), in order; nothing else may come before or after the error line.

    Returns:
        The error line.
    """
    assert code == 2, f"exit code {code}, stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    assert lines[:-1] == list(preceded_by), err
    line = lines[-1]
    assert line.startswith("error:"), err
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    return line


def assert_one_line_message(error: BaseException, *expected: str) -> str:
    """The library side of the same contract: a :class:`DTNBenchError` whose message is one line.

    The CLI prints ``error: <message>``, so a message without a newline is what makes the error one line.

    Args:
        error: the raised exception (``excinfo.value`` of ``pytest.raises``).
        *expected: substrings the message must contain.

    Returns:
        The message.
    """
    from dtn_bench.errors import DTNBenchError

    assert isinstance(error, DTNBenchError), repr(error)
    message = str(error)
    assert message.strip() and "\n" not in message, message
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    return message


class Killed(Exception):
    """Raised by :func:`kill_at` to stop a run part-way (a killed process, for the resume tests)."""


def kill_at(event: str):
    """An ``on_event`` callback that raises :class:`Killed` at the first event of kind ``event``."""

    def on_event(e):
        if e.kind == event:
            raise Killed

    return on_event


def record(events: list):
    """An ``on_event`` callback that appends ``(kind, fields)`` of each event to ``events``."""
    return lambda e: events.append((e.kind, e.fields()))
