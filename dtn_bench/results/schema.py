"""The results schema, defined in one place.

Every suite emits tidy rows in long format: one row per measured number. A row has

1. identity columns :data:`IDENTITY_COLUMNS` (``suite, model, norm, metric, value, unit``),
2. the setting columns of its suite (``corruption``, ``severity``, ``seed``, ``batch_size``, ``dtype`` ...),
3. provenance columns :data:`PROVENANCE_COLUMNS`, filled in by :class:`~dtn_bench.results.writer.RunWriter`.

Metric names carry their unit (``throughput_img_s``, ``latency_ms_p50``); :data:`UNITS` maps the known ones to the
unit string stored in the ``unit`` column. Unit conventions:

* classification errors and accuracies (``top1_err``, ``top5_err``, ``accuracy``, ``top1_acc`` ...) are stored as
  fractions in ``[0, 1]`` with unit ``"fraction"``;
* corruption errors (``ce``, ``mce``, ``relative_mce``) follow the ImageNet-C convention of Hendrycks & Dietterich
  and are stored in percent with unit ``"%"`` (an mCE of 100 means "as good as AlexNet").

Values are stored at full precision; rounding happens only when a table is rendered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from dtn_bench.errors import DTNBenchError

IDENTITY_COLUMNS: tuple[str, ...] = ("suite", "model", "norm", "metric", "value", "unit")
"""Columns every row has, in this order, first."""

PROVENANCE_COLUMNS: tuple[str, ...] = (
    "run_id",
    "timestamp",
    "git_sha",
    "dtn_bench_version",
    "torch_version",
    "timm_version",
    "device",
)
"""Columns that record where a row came from, in this order, last."""

UNITS: dict[str, str] = {
    # cost
    "throughput_img_s": "img/s",
    "tokens_s": "tok/s",
    "latency_ms_p50": "ms",
    "latency_ms_p90": "ms",
    "latency_ms_p99": "ms",
    "latency_ms_mean": "ms",
    "time_ms": "ms",
    "peak_mem_mib": "MiB",
    "gmacs": "GMAC",
    "params_m": "M",
    # classification quality, stored as fractions in [0, 1]
    "top1_err": "fraction",
    "top5_err": "fraction",
    "top1_acc": "fraction",
    "top5_acc": "fraction",
    "accuracy": "fraction",
    # ImageNet-C corruption errors, stored in percent (AlexNet-normalised)
    "ce": "%",
    "mce": "%",
    "relative_ce": "%",
    "relative_mce": "%",
    # ratios and training signals
    "speedup": "x",
    "ratio": "x",
    "loss": "nat",
}
"""Known metric name -> unit string."""

NON_NEGATIVE_UNITS: frozenset[str] = frozenset(
    {"fraction", "%", "ms", "s", "img/s", "tok/s", "MiB", "GMAC", "M", "x", "images", "count"})
"""Units of quantities that cannot be negative (times, rates, sizes, counts, ratios, errors, accuracies)."""
UNBOUNDED_UNITS: frozenset[str] = frozenset({"nat"})
"""Units whose value may be infinite: a loss (``nat``) of a training run that diverged is a measurement."""


def make_row(
    suite: str,
    model: str,
    norm: str,
    metric: str,
    value: Any,
    unit: str | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Builds one tidy row.

    Args:
        suite: suite name, e.g. ``"cost"``.
        model: model name, e.g. ``"vit_s"``.
        norm: normaliser name, e.g. ``"dtn"``.
        metric: metric name with its unit in it, e.g. ``"latency_ms_p50"``.
        value: the measured number; anything ``float()`` accepts (Python or NumPy scalar, 0-d tensor).
        unit: unit string; looked up in :data:`UNITS` when ``None``.
        **settings: the suite's setting columns for this measurement (``severity=3``, ``batch_size=64`` ...).

    Returns:
        A dict with the identity columns first, then the settings in the order given.

    Raises:
        ValueError: if ``metric`` is not in :data:`UNITS` and no ``unit`` is given, or if ``value`` is not a number.
    """
    if unit is None:
        if metric not in UNITS:
            raise ValueError(f"unknown metric {metric!r}: pass unit= or add it to dtn_bench.results.schema.UNITS")
        unit = UNITS[metric]
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metric {metric!r}: value {value!r} is not a number") from exc
    row: dict[str, Any] = {
        "suite": suite,
        "model": model,
        "norm": norm,
        "metric": metric,
        "value": number,
        "unit": unit,
    }
    row.update(settings)
    return row


def _ordered_columns(columns: Iterable[str]) -> list[str]:
    columns = list(columns)
    present = set(columns)
    identity = [c for c in IDENTITY_COLUMNS if c in present]
    provenance = [c for c in PROVENANCE_COLUMNS if c in present]
    fixed = set(IDENTITY_COLUMNS) | set(PROVENANCE_COLUMNS)
    settings = [c for c in columns if c not in fixed]
    return identity + settings + provenance


def order_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Puts the columns in schema order.

    Identity columns come first (in :data:`IDENTITY_COLUMNS` order), then setting columns in the order they appear
    in ``df``, then provenance columns (in :data:`PROVENANCE_COLUMNS` order). Columns absent from ``df`` are skipped.

    Args:
        df: a frame of rows.

    Returns:
        A new frame with the same rows and reordered columns.
    """
    return df.loc[:, _ordered_columns(df.columns)]


def validate_rows(df: pd.DataFrame, source: str | None = None) -> None:
    """Checks that ``df`` honours the schema.

    Args:
        df: a frame of rows.
        source: where the rows came from (a path), used in the error message.

    Raises:
        DTNBenchError: naming the first missing identity column, or the first row whose ``value`` is not a number.
            Missing values (NaN) are allowed.
    """
    where = f" in {source}" if source else ""
    for column in IDENTITY_COLUMNS:
        if column not in df.columns:
            raise DTNBenchError(f"results{where} are missing the identity column {column!r}")
    values = df["value"]
    if pd.api.types.is_numeric_dtype(values):
        return
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        position = int(bad.to_numpy().nonzero()[0][0])
        metric = df["metric"].iloc[position]
        raise DTNBenchError(
            f"results{where}: value {values.iloc[position]!r} of metric {metric!r} (row {position}) is not a number"
        )


def _value_problem(unit: str, value: float) -> str | None:
    if unit in UNBOUNDED_UNITS or value != value:  # NaN: the row records that there is no value
        return None
    if np.isinf(value):
        return "must be finite"
    if unit == "fraction" and not 0.0 <= value <= 1.0:
        return "a fraction must be in [0, 1]"
    if unit in NON_NEGATIVE_UNITS and value < 0:
        return f"a value in {unit} must be >= 0"
    return None


def check_values(df: pd.DataFrame, source: str | None = None) -> None:
    """Checks that rows read back hold what a suite can have measured (after :func:`validate_rows`).

    Every identity column but ``value`` is filled; values are finite (NaN, "no value", is allowed; a loss may be
    infinite, :data:`UNBOUNDED_UNITS`), fractions (errors, accuracies) lie in ``[0, 1]`` and the units of
    :data:`NON_NEGATIVE_UNITS` are not negative.

    Raises:
        DTNBenchError: naming the source, the row (0-based, as :func:`validate_rows`), the metric and the value.
    """
    where = f" in {source}" if source else ""
    for column in IDENTITY_COLUMNS:
        missing = df[column].isna().to_numpy() if column != "value" else np.zeros(len(df), bool)
        if missing.any():
            raise DTNBenchError(f"results{where}: row {int(missing.nonzero()[0][0])} has no {column}")
    values = pd.to_numeric(df["value"], errors="coerce").to_numpy(dtype=float)
    suspect = ~np.isfinite(values) | (values < 0) | (values > 1)  # a cheap superset of the rows to look at
    for position in suspect.nonzero()[0]:
        unit, value = str(df["unit"].iloc[position]), float(values[position])
        problem = _value_problem(unit, value)
        if problem is not None:
            raise DTNBenchError(f"results{where}: {df['metric'].iloc[position]} = {value!r} (row {int(position)}): "
                                f"{problem}")


def check_unique_keys(df: pd.DataFrame, source: str | None = None) -> None:
    """Checks that no two rows of one run measure the same thing.

    Two rows measure the same thing when every column but ``value`` and the provenance columns is equal.

    Raises:
        DTNBenchError: naming the source, the two rows (0-based) and the key they share.
    """
    key = [c for c in df.columns if c != "value" and c not in PROVENANCE_COLUMNS]
    if df.empty or not key:
        return
    duplicated = df.duplicated(subset=key, keep=False).to_numpy()
    if not duplicated.any():
        return
    first, *others = duplicated.nonzero()[0]
    twin = next(int(i) for i in others if df.iloc[i][key].equals(df.iloc[first][key]))
    shown = ", ".join(f"{c}={df[c].iloc[first]}" for c in key if c not in ("suite", "unit")
                      and not pd.isna(df[c].iloc[first]))
    where = f" in {source}" if source else ""
    raise DTNBenchError(f"results{where}: rows {int(first)} and {twin} measure the same thing twice ({shown})")
