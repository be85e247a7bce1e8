"""Reads rows back from run folders, rows files, or folders of runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import check_unique_keys, check_values, order_columns, validate_rows
from dtn_bench.results.writer import ROWS_CSV, ROWS_PARQUET, _read_rows_file, _rows_file

_TWIN = {ROWS_CSV: ROWS_PARQUET, ROWS_PARQUET: ROWS_CSV}


def _check_complete(path: Path) -> None:
    """A CSV the writer made ends with a newline; one that does not was cut (a copy or an edit that stopped)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return  # read_csv reports an empty file
            handle.seek(-1, os.SEEK_END)
            last = handle.read(1)
    except OSError as exc:
        raise DTNBenchError(f"cannot read results file {path}: {exc.strerror or type(exc).__name__}") from exc
    if last not in (b"\n", b"\r"):
        raise DTNBenchError(f"results file {path} is truncated: its last line does not end (rows are written whole)")


def _same(a, b) -> bool:
    """Whether two cells hold the same value (missing equals missing; numbers compared as numbers)."""
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _disagreement(df: pd.DataFrame, other: pd.DataFrame) -> str | None:
    """Where two frames of the same rows differ, in words, or ``None``."""
    if list(df.columns) != list(other.columns):
        return f"columns {', '.join(map(str, df.columns))} vs {', '.join(map(str, other.columns))}"
    if len(df) != len(other):
        return f"{len(df)} rows vs {len(other)}"
    for column in df.columns:
        for position, (a, b) in enumerate(zip(df[column].tolist(), other[column].tolist(), strict=True)):
            if not _same(a, b):
                return f"row {position}, {column}: {a!r} vs {b!r}"
    return None


def _check_twin(path: Path, df: pd.DataFrame) -> None:
    """A run folder's ``rows.csv`` and ``rows.parquet`` are the same rows (the writer writes both from one table)."""
    twin = path.with_name(_TWIN[path.name])
    if not twin.is_file():
        return
    if path.name == ROWS_PARQUET and twin.read_bytes() == df.to_csv(index=False, lineterminator="\n").encode():
        return  # the CSV the writer wrote from these rows, byte for byte
    other = _read_rows_file(twin)
    found = _disagreement(df, other) if path.name == ROWS_PARQUET else _disagreement(other, df)
    if found is not None:
        raise DTNBenchError(f"{path.parent}: {ROWS_PARQUET} and {ROWS_CSV} disagree ({found}); one of them was "
                            f"edited or damaged: restore it, or delete the other to use this one")


def read_rows_file(path: str | os.PathLike) -> pd.DataFrame:
    """The rows of one rows file, checked as a run's rows must be.

    The file is readable and complete (a CSV ends with its last line's newline), the rows honour the schema
    (:func:`~dtn_bench.results.schema.validate_rows`), hold plausible values
    (:func:`~dtn_bench.results.schema.check_values`: finite, fractions in [0, 1], no negative time or count) and
    no two measure the same thing (:func:`~dtn_bench.results.schema.check_unique_keys`); in a run folder holding
    both ``rows.csv`` and ``rows.parquet``, the two are the same rows.

    Raises:
        DTNBenchError: naming the file (and the row) that fails.
    """
    path = Path(path)
    if path.suffix == ".csv":
        _check_complete(path)
    df = _read_rows_file(path)
    validate_rows(df, str(path))
    check_values(df, str(path))
    check_unique_keys(df, str(path))
    if path.name in _TWIN:
        _check_twin(path, df)
    return df


def _rows_files(path: Path) -> list[Path]:
    """The rows files a path stands for (see :func:`read_rows`)."""
    if not path.exists():
        raise DTNBenchError(f"results path {path} does not exist")
    if path.is_file():
        if path.suffix not in (".csv", ".parquet"):
            raise DTNBenchError(f"results file {path} is not a .csv or .parquet rows file")
        return [path]
    own = _rows_file(path)
    if own is not None:
        return [own]
    found: list[Path] = []
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        if ROWS_PARQUET in files:
            found.append(Path(folder) / ROWS_PARQUET)
        elif ROWS_CSV in files:
            found.append(Path(folder) / ROWS_CSV)
    if not found:
        raise DTNBenchError(f"no {ROWS_PARQUET} or {ROWS_CSV} found under {path}")
    return found


def read_rows(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Reads the rows of one or more runs into one frame.

    Each path may be a run folder (its ``rows.parquet``, else its ``rows.csv``), a ``rows.csv`` / ``rows.parquet``
    file, or a folder holding run folders at any depth (e.g. ``results/`` or ``results/cost/``), searched
    recursively in sorted order, taking ``rows.parquet`` where a folder has it and ``rows.csv`` otherwise. A file
    reached twice is read once.

    Args:
        paths: a path or an iterable of paths.

    Returns:
        All rows, concatenated in the order found, with columns in schema order.

    Raises:
        DTNBenchError: naming the path that is missing, holds no rows, cannot be read, or fails the checks of
            :func:`read_rows_file` (schema, values, duplicated rows, ``rows.csv`` and ``rows.parquet`` disagreeing).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for file in _rows_files(Path(path)):
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    if not files:
        raise DTNBenchError("no results paths given")
    frames = []
    for file in files:
        frames.append(read_rows_file(file))
    frames = [f for f in frames if len(f)] or frames[:1]  # empty frames would only blur the dtypes
    combined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)
    return order_columns(combined).reset_index(drop=True)
