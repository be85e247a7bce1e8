"""Input checks every suite shares, each in one place: "did you mean", positive settings, JSON objects on disk.

Each raises (or builds the text of) a one-line :class:`~dtn_bench.errors.DTNBenchError` that says what is wrong and
where, as the CLI's error contract asks.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path

from dtn_bench.errors import DTNBenchError


def did_you_mean(name: str, known: Sequence[str], *, n: int = 3, cutoff: float = 0.5, show: int | None = 12,
                 sort_known: bool = True) -> str:
    """The hint after an unknown ``name``: ``" (did you mean: a, b?)"``, else ``" (known: ...)"``.

    Args:
        name: what was asked for.
        known: the valid names.
        n: at most this many near matches; with ``n == 1`` the hint reads ``" (did you mean a?)"``.
        cutoff: difflib's similarity cut-off for a near match.
        show: without a near match, list this many known names (``None``: all of them).
        sort_known: list the known names sorted (else in the given order).
    """
    close = _close_matches(name, list(known), n, cutoff)
    if close:
        return f" (did you mean {close[0]}?)" if n == 1 else f" (did you mean: {', '.join(close)}?)"
    listed = sorted(known) if sort_known else list(known)
    return f" (known: {', '.join(listed if show is None else listed[:show])})"


def _close_matches(name: str, known: list[str], n: int, cutoff: float) -> list[str]:
    """Difflib's near matches (similarity ratio >= ``cutoff``, best first), ties in the order of ``known``.

    ``difflib.get_close_matches`` breaks ties by reverse alphabetical order, so ``dnt`` would suggest ``dyt`` before
    ``dtn``; here a tie keeps the registration order.
    """
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name)
    scored = []
    for i, candidate in enumerate(known):
        matcher.set_seq1(candidate)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff and matcher.ratio() >= cutoff:
            scored.append((-matcher.ratio(), i, candidate))
    return [candidate for _, _, candidate in sorted(scored)[:n]]


def unknown_name_message(kind: str, name: str, known: Sequence[str]) -> str:
    """``unknown norm 'dnt' (did you mean: dtn, dtn_var?)``."""
    return f"unknown {kind} {name!r}{did_you_mean(name, known)}"


def check_positive(where: str, **values: float | int | None) -> None:
    """One-line error ``"{where}: --batch-size must be > 0, got 0"`` for the first value that is not > 0.

    ``None`` (not set) passes; the keyword names are the settings' field names (``_`` written as ``-`` in the
    message, as the flags spell them). Booleans are refused (``True`` is not a count).
    """
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise DTNBenchError(f"{where}: --{name.replace('_', '-')} must be > 0, got {value!r}")


def read_json_object(path: Path, what: str = "", hint: str = "") -> dict:
    """The JSON object in ``path``; a one-line error naming the file when it cannot be read or is not an object.

    Args:
        path: the JSON file.
        what: written before the path in the error (``"the dtn-bench corrupt manifest "``).
        hint: written after the reason in the error (``" (delete it to start afresh)"``).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DTNBenchError(f"cannot read {what}{path}: {type(e).__name__}: {e}{hint}") from None
    if not isinstance(data, dict):
        raise DTNBenchError(f"{what}{path} does not hold a JSON object{hint}")
    return data
