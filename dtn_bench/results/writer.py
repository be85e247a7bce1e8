"""Writes a run folder: rows, config, environment, tables and plots, atomically.

A run folder ``<root>/<suite>/<run_id>/`` holds ``rows.parquet``, ``rows.csv``, ``config.json``, ``env.json``
and whatever tables and plots the suite renders. Every file is written to a temporary file in the same folder and
then renamed over its final name (``os.replace`` is atomic on POSIX and Windows), so a reader or a killed run sees
either the old file or the new one, never half of one.

Rows are appended as work completes and the whole table is rewritten each time; ``rows.parquet`` is written before
``rows.csv``, so the Parquet file (which readers prefer) is never behind the CSV.

Only one process should write a run folder; under ``torchrun`` that is rank 0.
"""

from __future__ import annotations

import dataclasses
import io
import json
import numbers
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.env import device_name, environment, utc_now
from dtn_bench.results.schema import PROVENANCE_COLUMNS, order_columns, validate_rows

ROWS_CSV = "rows.csv"
ROWS_PARQUET = "rows.parquet"
CONFIG_JSON = "config.json"
ENV_JSON = "env.json"

DEFAULT_IGNORED_CONFIG_KEYS: tuple[str, ...] = ("resume", "run_id", "debug")
"""Top-level config keys that may differ when a run is resumed (they say how to run, not what to measure)."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


TMP_SUFFIX = ".tmp"
"""Temporary files of :func:`atomic_write_bytes` are ``.<name>.<8 hex>.tmp`` beside their target (hidden)."""


def _open_temporary(path: Path) -> tuple[int, str]:
    """A new hidden temporary file beside ``path``, opened for writing with mode ``0o666`` less the umask.

    ``tempfile.mkstemp`` would make it 0600 whatever the umask, and the rename keeps that mode; ``os.open`` with 0o666
    lets the kernel apply the umask, as a plain ``open`` does.
    """
    for _ in range(100):
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), name
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name beside {path}")


_TMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # also tempfile.mkstemp's names, which earlier versions used


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named like a temporary file of :func:`atomic_write_bytes` (left by a killed writer)."""
    return _TMP_NAME.match(Path(path).name) is not None


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` so that ``path`` never holds a partial file.

    The data go to a temporary file in the same folder, are flushed to disk, and the temporary file is renamed over
    ``path``. On any failure the temporary file is removed and ``path`` keeps its previous content. The file gets
    the mode a plain ``open`` would give it (``0o666`` less the umask; 0644 under the usual umask 022).

    Args:
        path: destination file; its parent folders are created.
        data: the bytes to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = _open_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def check_output_folder(path: str | Path, what: str = "--out") -> Path:
    """A one-line error, before anything is written, when ``path`` cannot be (or become) a folder written into.

    The first existing folder on the way to ``path`` (``path`` itself, or the parent it would be created in) must be
    a folder this process may write into; a file there, or a read-only folder, is named.

    Args:
        path: the output folder (need not exist yet).
        what: how the message names it (``--out``, ``output``, ``run folder``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DTNBenchError: ``path`` or a parent of it is a file, or the folder to write into is not writable.
    """
    path = Path(path)
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        if probe == path:
            raise DTNBenchError(f"{what} {path} exists and is not a folder")
        raise DTNBenchError(f"{what} {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DTNBenchError(f"{what} {path}: {'it' if probe == path else probe} is not writable (permission denied)")
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Writes ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`.

    Args:
        path: destination file; its parent folders are created.
        text: the text to write.
        encoding: text encoding.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def new_run_id() -> str:
    """A fresh run id, ``YYYYmmdd-HHMMSS-<6 hex>`` in UTC, e.g. ``"20250131-120000-a1b2c3"``."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _plain_config(config: Any) -> dict[str, Any]:
    """The config as plain JSON data (dataclasses expanded, tuples as lists, other objects as strings)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or a dataclass instance, not {type(config).__name__}")
    return json.loads(_config_json(dict(config)))


def _config_json(config: Mapping[str, Any]) -> str:
    return json.dumps(config, default=str, sort_keys=True, indent=2) + "\n"


_MISSING = object()


def _first_difference(old: Any, new: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """The first (dotted key, old, new) where two JSON values differ, or ``None`` if they are equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        for name in sorted(set(old) | set(new)):
            sub = f"{key}.{name}" if key else str(name)
            found = _first_difference(old.get(name, _MISSING), new.get(name, _MISSING), sub)
            if found is not None:
                return found
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            found = _first_difference(a, b, f"{key}[{i}]")
            if found is not None:
                return found
        return None
    if old is _MISSING or new is _MISSING or old != new or type(old) is not type(new):
        return key, old, new
    return None


def _show(value: Any) -> str:
    return "<missing>" if value is _MISSING else json.dumps(value, default=str)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise DTNBenchError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    return name


def _read_rows_file(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise DTNBenchError(f"cannot read results file {path}: {type(exc).__name__}: {exc}") from exc


def _rows_file(folder: Path) -> Path | None:
    """The rows file of a run folder: ``rows.parquet`` when present, else ``rows.csv``, else ``None``."""
    for name in (ROWS_PARQUET, ROWS_CSV):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Makes object columns storable in Parquet.

    A setting column may hold ``1, 2, 3`` for some rows and ``"all"`` for others, or objects such as paths; Arrow
    needs one plain type per column. Columns that mix only numbers become numeric; other mixes and other objects
    become strings (missing values stay missing). Columns of one plain type are left alone.
    """
    out = df
    for column in df.columns:
        series = df[column]
        if series.dtype != object:
            continue
        kinds = {type(v) for v in series if not _is_missing(v)}
        if len(kinds) <= 1 and kinds <= {str, bool, int, float}:
            continue
        if out is df:
            out = df.copy()
        if all(issubclass(k, numbers.Real) and not issubclass(k, (bool, np.bool_)) for k in kinds):
            out[column] = pd.to_numeric(series)
        else:
            out[column] = series.map(lambda v: None if _is_missing(v) else str(v)).astype(object)
    return out


class RunWriter:
    """Owns one run folder ``<root>/<suite>/<run_id>/`` and writes everything in it atomically.

    At creation the folder is made and ``config.json`` (the resolved config, sorted keys) and ``env.json`` (see
    :func:`~dtn_bench.results.env.environment`) are written. :meth:`append` adds rows as work completes.

    Args:
        root: the results folder, e.g. ``"results"``.
        suite: suite name; the run folder lives under ``root/suite``.
        config: the resolved config, a mapping or a dataclass instance; stored as JSON (``default=str``).
        run_id: folder name of the run; a fresh ``YYYYmmdd-HHMMSS-<6 hex>`` (UTC) when ``None``.
        resume: continue an existing run folder: its rows are loaded and its ``config.json`` must match ``config``
            (apart from ``ignore_keys``); the original ``config.json`` is kept and ``env.json`` is rewritten (each
            row carries its own provenance). Resuming a folder that does not exist starts it.
        device: the torch device the run measures on (``"cuda:0"``, ``"cpu"``); names the ``device`` provenance
            column. When ``None``, the environment's default device (the GPU if there is one) is used.
        ignore_keys: top-level config keys that may differ on resume.
        env: the environment dict to record; computed with :func:`~dtn_bench.results.env.environment` when ``None``.

    Raises:
        DTNBenchError: if the folder already holds rows and ``resume`` is false; if resuming a folder whose config
            differs or cannot be read; if ``suite`` or ``run_id`` is not a plain folder name.
    """

    def __init__(
        self,
        root: str | Path,
        suite: str,
        config: Mapping[str, Any] | Any,
        run_id: str | None = None,
        resume: bool = False,
        *,
        device: str | None = None,
        ignore_keys: Iterable[str] = DEFAULT_IGNORED_CONFIG_KEYS,
        env: Mapping[str, Any] | None = None,
    ):
        self.suite = _check_name(suite, "suite name")
        self.run_id = _check_name(run_id, "run id") if run_id is not None else new_run_id()
        self._dir = Path(root) / self.suite / self.run_id
        self.config = _plain_config(config)
        self.env: dict[str, Any] = dict(env) if env is not None else environment()
        if device is not None:
            self.env["device"] = device_name(device)
        self._rows = pd.DataFrame()

        check_output_folder(self._dir, "run folder")
        existing = _rows_file(self._dir) if self._dir.is_dir() else None
        if existing is not None and not resume:
            raise DTNBenchError(
                f"run folder {self._dir} already holds results; resume it (--resume) or choose another run id"
            )
        self._created = _missing_folders(self._dir)
        try:
            if existing is not None:
                self._check_config(set(ignore_keys))
                from dtn_bench.results.io import read_rows_file

                self._rows = order_columns(read_rows_file(existing))
            else:
                atomic_write_text(self._dir / CONFIG_JSON, _config_json(self.config))
            atomic_write_text(self._dir / ENV_JSON, _config_json(self.env))
        except OSError as exc:
            raise DTNBenchError(f"cannot write run folder {self._dir}: {exc.strerror or type(exc).__name__}") from exc

    def discard(self) -> bool:
        """Removes the run folder when this writer created it and no row was written; whether it did.

        For a run that fails before its first row: nothing half-written (a folder with only ``config.json`` and
        ``env.json``) is left behind. The folders above it that this writer created go too.
        """
        if not self._rows.empty or not self._created:
            return False
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)
        for folder in self._created[1:]:  # the parents made for it, innermost first, while empty
            try:
                folder.rmdir()
            except OSError:
                break
        return True

    def _check_config(self, ignore: set[str]) -> None:
        config_path = self._dir / CONFIG_JSON
        try:
            old = json.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise DTNBenchError(f"run {self._dir} cannot be resumed: it has rows but no {CONFIG_JSON}") from exc
        except (OSError, ValueError) as exc:
            raise DTNBenchError(f"cannot read {config_path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(old, dict):
            raise DTNBenchError(f"{config_path} does not hold a JSON object")
        old = {k: v for k, v in old.items() if k not in ignore}
        new = {k: v for k, v in self.config.items() if k not in ignore}
        found = _first_difference(old, new)
        if found is not None:
            key, old_value, new_value = found
            raise DTNBenchError(
                f"run {self._dir} was made with a different config: "
                f"key {key} differs ({_show(old_value)} vs {_show(new_value)})"
            )

    @property
    def path(self) -> Path:
        """The run folder."""
        return self._dir

    def rows(self) -> pd.DataFrame:
        """All rows written so far (including those of a resumed run), in schema column order."""
        return self._rows.copy()

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Adds rows and rewrites ``rows.parquet`` and ``rows.csv`` atomically.

        Provenance columns are filled where a row does not set them: ``run_id``, ``timestamp`` (now, UTC),
        ``git_sha``, ``dtn_bench_version``, ``torch_version``, ``timm_version`` and ``device`` from the environment.
        If writing fails, the files on disk and :meth:`rows` keep everything appended before.

        Args:
            rows: tidy rows, e.g. from :func:`~dtn_bench.results.schema.make_row`.

        Raises:
            DTNBenchError: if a row misses an identity column or has a non-numeric value.
        """
        new = pd.DataFrame([dict(r) for r in rows])
        if new.empty:
            return
        validate_rows(new, f"rows appended to {self._dir}")
        provenance = {
            "run_id": self.run_id,
            "timestamp": utc_now(),
            "git_sha": self.env.get("git_sha", "unknown"),
            "dtn_bench_version": self.env.get("dtn_bench_version", "unknown"),
            "torch_version": self.env.get("torch_version", "unknown"),
            "timm_version": self.env.get("timm_version", "unknown"),
            "device": self.env.get("device", "unknown"),
        }
        for column in PROVENANCE_COLUMNS:
            if column in new.columns:
                new[column] = new[column].astype(object).where(new[column].notna(), provenance[column])
            else:
                new[column] = provenance[column]
        combined = new if self._rows.empty else pd.concat([self._rows, new], ignore_index=True, sort=False)
        # Keep in memory exactly what a resumed run will read back from rows.parquet.
        combined = _arrow_safe(order_columns(combined).reset_index(drop=True))
        self._write_rows(combined)
        self._rows = combined

    def _write_rows(self, df: pd.DataFrame) -> None:
        buffer = io.BytesIO()
        df.to_parquet(buffer, index=False)
        # Parquet first: readers prefer it, so it must never be behind the CSV.
        atomic_write_bytes(self._dir / ROWS_PARQUET, buffer.getvalue())
        atomic_write_text(self._dir / ROWS_CSV, df.to_csv(index=False, lineterminator="\n"))

    def done_keys(self, columns: Iterable[str]) -> set[tuple]:
        """The distinct combinations of ``columns`` already present in the rows, to skip finished work on resume.

        Args:
            columns: setting (or identity) column names, e.g. ``["model", "norm", "corruption", "severity"]``.

        Returns:
            A set of tuples, one entry per column in the given order. A column the rows lack, or a missing value,
            shows as ``None``; NumPy scalars become Python scalars (so ``3`` and ``3.0`` match).
        """
        columns = list(columns)
        if self._rows.empty:
            return set()
        keys = set()
        parts = [self._rows[c].tolist() if c in self._rows.columns else [None] * len(self._rows) for c in columns]
        for values in zip(*parts, strict=True):
            keys.add(tuple(_plain_scalar(v) for v in values))
        return keys

    def _target(self, name: str) -> Path:
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise DTNBenchError(f"file name {name!r} must be a relative path inside the run folder {self._dir}")
        return self._dir / relative

    def write_text(self, name: str, text: str) -> Path:
        """Writes a text file (e.g. ``"table.md"``) into the run folder atomically and returns its path."""
        return atomic_write_text(self._target(name), text)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Writes a binary file into the run folder atomically and returns its path."""
        return atomic_write_bytes(self._target(name), data)

    def savefig(self, fig: Any, name: str, dpi: int = 150, **kwargs: Any) -> Path:
        """Saves a matplotlib figure into the run folder atomically.

        Args:
            fig: a :class:`matplotlib.figure.Figure`.
            name: file name; ``.png`` is added when it has no suffix, and the suffix picks the format.
            dpi: resolution.
            **kwargs: passed to ``fig.savefig``.

        Returns:
            The path of the saved image.
        """
        target = self._target(name)
        if not target.suffix:
            target = target.with_suffix(".png")
        kwargs.setdefault("bbox_inches", "tight")
        buffer = io.BytesIO()
        fig.savefig(buffer, format=target.suffix[1:], dpi=dpi, **kwargs)
        return atomic_write_bytes(target, buffer.getvalue())


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its parents that do not exist yet, innermost first (what creating ``folder`` would make)."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _plain_scalar(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value
