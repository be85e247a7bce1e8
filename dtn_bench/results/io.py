"""Reads rows back from run folders, rows files, or folders of runs."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.schema import order_columns, validate_rows
from dtn_bench.results.writer import ROWS_CSV, ROWS_PARQUET, _read_rows_file, _rows_file


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
        DTNBenchError: naming the path that is missing, holds no rows, cannot be read, or breaks the schema.
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
        frame = _read_rows_file(file)
        validate_rows(frame, str(file))
        frames.append(frame)
    frames = [f for f in frames if len(f)] or frames[:1]  # empty frames would only blur the dtypes
    combined = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)
    return order_columns(combined).reset_index(drop=True)
