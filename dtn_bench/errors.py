"""User-facing errors.

Every problem a user can cause (unknown name, bad file, wrong shape) raises :class:`DTNBenchError` with a single
line that says what is wrong and where. The CLI prints that line and exits non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations


class DTNBenchError(Exception):
    """A problem with the user's input, reported as one line (what and where)."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # force one line
