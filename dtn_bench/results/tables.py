"""Wide and paper-style tables rendered from the rows.

Tables are pivots of the tidy rows (:func:`pivot`), optionally with a column of published reference numbers
(:func:`add_published`), rendered as Markdown, LaTeX (booktabs) or CSV. Rows keep full precision; rounding happens
only here, through ``floatfmt``. Missing numbers are shown as an em dash.

Rendering conventions shared by Markdown and LaTeX:

* the index is shown as the first column(s), headed by its level names, unless it is an unnamed default
  ``RangeIndex`` (then it is left out);
* multi-level column labels are joined with ``" / "``;
* data cells: floats use ``floatfmt``, integers are printed whole, strings are kept as they are;
* index cells are keys, not measurements: whole floats print without decimals (``3.0`` -> ``3``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from dtn_bench.errors import DTNBenchError

MISSING_MD = "—"
MISSING_TEX = "---"  # an em dash in LaTeX

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _as_list(keys: str | Sequence[str] | None) -> list[str]:
    if keys is None:
        return []
    if isinstance(keys, str):
        return [keys]
    return list(keys)


def _first_seen(df: pd.DataFrame, keys: list[str], present: pd.Index) -> pd.Index:
    """The keys of ``present`` in the order they first appear in ``df``."""
    if len(keys) == 1:
        wanted = set(present)
        order = [k for k in pd.unique(df[keys[0]]) if k in wanted]
        return pd.Index(order, name=keys[0], dtype=present.dtype)
    wanted = set(present)
    order = [k for k in df[keys].drop_duplicates().itertuples(index=False, name=None) if k in wanted]
    return pd.MultiIndex.from_tuples(order, names=keys) if order else present[:0]


def pivot(
    df: pd.DataFrame,
    index: str | Sequence[str],
    columns: str | Sequence[str] | None,
    values: str = "value",
    aggfunc: str | Callable[..., Any] = "mean",
) -> pd.DataFrame:
    """A wide table from tidy rows: a thin wrapper over :func:`pandas.pivot_table`.

    Unlike ``pivot_table``, rows and columns keep the order in which their keys first appear in ``df`` (so a suite
    controls the layout by the order it measures in) instead of being sorted. Rows whose keys are missing are
    dropped, as ``pivot_table`` does. Repeated measurements of one cell (e.g. several seeds) are combined with
    ``aggfunc``.

    Args:
        df: tidy rows.
        index: column(s) whose values label the table rows, e.g. ``["model", "norm"]``.
        columns: column(s) whose values label the table columns, e.g. ``"metric"``; ``None`` for a single column
            named after ``values``.
        values: the column holding the numbers.
        aggfunc: how to combine several rows falling into one cell (``"mean"``, ``"median"``, ``"first"``, a
            callable ...).

    Returns:
        The wide table.

    Raises:
        DTNBenchError: if a named column is not in ``df``.
    """
    index_keys, column_keys = _as_list(index), _as_list(columns)
    for key in [*index_keys, *column_keys, values]:
        if key not in df.columns:
            raise DTNBenchError(
                f"cannot pivot: rows have no column {key!r} (columns: {', '.join(map(str, df.columns))})"
            )
    table = pd.pivot_table(
        df, index=index_keys, columns=column_keys or None, values=values, aggfunc=aggfunc, sort=False
    )
    table = table.reindex(index=_first_seen(df, index_keys, table.index))
    if column_keys:
        table = table.reindex(columns=_first_seen(df, column_keys, table.columns))
    return table


def _lookup(published: Mapping[Any, Any], key: Hashable) -> Any:
    candidates = [key]
    if isinstance(key, tuple) and len(key) == 1:
        candidates.append(key[0])
    elif not isinstance(key, tuple):
        candidates.append((key,))
    for candidate in candidates:
        try:
            if candidate in published:
                return published[candidate]
        except TypeError:  # unhashable key
            continue
    return None


def add_published(
    table: pd.DataFrame,
    published: Mapping[Any, Any],
    column: str = "published",
    missing: str = "not published",
) -> pd.DataFrame:
    """Adds a column of published reference numbers beside ours.

    Args:
        table: a wide table, e.g. from :func:`pivot`.
        published: maps an index key of ``table`` (a tuple for a multi-level index, e.g. ``("vit_s", "dtn")``) to
            a number, ``None``, or a :class:`~dtn_bench.results.published.Published` entry.
        column: name of the new column.
        missing: what to show where the source publishes no number.

    Returns:
        A copy of ``table`` with the new last column (object dtype: floats and ``missing`` strings).
    """
    out = table.copy()
    cells: list[Any] = []
    for key in out.index:
        entry = _lookup(published, key)
        value = getattr(entry, "value", entry)
        cells.append(missing if is_missing(value) else float(value))
    out[column] = pd.Series(cells, index=out.index, dtype=object)
    return out


def is_missing(value: Any) -> bool:
    """None, ``pd.NA``, ``pd.NaT`` or a float NaN: a cell with no value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _format_value(value: Any, floatfmt: str, missing: str) -> str:
    if is_missing(value):
        return missing
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), floatfmt)
    return str(value)


def setting_text(value: Any) -> str:
    """A run setting as text: a whole number without its ``.0``, a boolean as ``True`` / ``False``, else ``str``.

    A whole number prints without its ``.0``: ``200.0``, as a column with gaps is read back, -> ``200``.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Real) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _format_key(value: Any, missing: str) -> str:
    """Like :func:`_format_value`, but a float key prints exactly (``2.0`` -> ``2``, ``0.1`` -> ``0.1``)."""
    if _is_number(value) and not isinstance(value, numbers.Integral) and not is_missing(value):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return _format_value(value, "", missing)


def _label(label: Any) -> str:
    if isinstance(label, tuple):
        return " / ".join(str(part) for part in label if part is not None and str(part) != "")
    return str(label)


def _shows_index(df: pd.DataFrame) -> bool:
    index = df.index
    default = isinstance(index, pd.RangeIndex) and index.name is None and index.start == 0 and index.step == 1
    return not default


def _layout(df: pd.DataFrame, floatfmt: str, missing: str) -> tuple[list[str], list[list[str]], list[bool]]:
    """Headers, cell strings and right-alignment flags of ``df`` (index first)."""
    show_index = _shows_index(df)
    nlevels = df.index.nlevels if show_index else 0
    headers = [("" if name is None else str(name)) for name in df.index.names] if show_index else []
    headers += [_label(c) for c in df.columns]
    rows: list[list[str]] = []
    for i in range(len(df)):
        cells: list[str] = []
        if show_index:
            key = df.index[i]
            parts = key if nlevels > 1 else (key,)
            cells += [_format_key(part, missing) for part in parts]
        cells += [_format_value(df.iat[i, j], floatfmt, missing) for j in range(df.shape[1])]
        rows.append(cells)
    right = [False] * nlevels
    for j in range(df.shape[1]):
        present = [v for v in df.iloc[:, j].tolist() if not is_missing(v)]
        right.append(bool(present) and all(_is_number(v) for v in present))
    return headers, rows, right


def _md_escape(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f", title: str | None = None, note: str | None = None) -> str:
    """Renders a table as a padded Markdown pipe table.

    Numeric columns are right-aligned, the index and text columns left-aligned; missing values show as ``—``.

    Args:
        df: the table.
        floatfmt: format spec for floats, e.g. ``".2f"`` or ``".3g"``.
        title: shown in bold above the table.
        note: shown as a paragraph below the table (sources, units).

    Returns:
        The Markdown text, ending with a newline.
    """
    headers, rows, right = _layout(df, floatfmt, MISSING_MD)
    headers = [_md_escape(h) for h in headers]
    rows = [[_md_escape(c) for c in row] for row in rows]
    widths = [max(3, len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(("-" * (w - 1) + ":") if r else "-" * w for w, r in zip(widths, right, strict=True)) + " |"
    table = "\n".join([line(headers), rule, *(line(row) for row in rows)])
    parts = [f"**{title}**"] if title else []
    parts.append(table)
    if note:
        parts.append(note)
    return "\n\n".join(parts) + "\n"


def latex_escape(text: str) -> str:
    r"""Escapes LaTeX special characters (``& % $ # _ { } ~ ^ \``) in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(df: pd.DataFrame, floatfmt: str = ".2f", caption: str | None = None, label: str | None = None) -> str:
    r"""Renders a table as a booktabs ``tabular`` (needs ``\usepackage{booktabs}``).

    With a ``caption`` or ``label`` the tabular is wrapped in a ``table`` float with the caption above it. Text is
    escaped (:func:`latex_escape`); missing values show as ``---``. Index columns are left-aligned, numeric
    columns right-aligned.

    Args:
        df: the table.
        floatfmt: format spec for floats.
        caption: table caption (escaped).
        label: ``\label`` key (not escaped).

    Returns:
        The LaTeX text, ending with a newline.
    """
    headers, rows, right = _layout(df, floatfmt, MISSING_TEX)
    spec = "".join("r" if r else "l" for r in right)
    lines: list[str] = []
    wrapped = caption is not None or label is not None
    if wrapped:
        lines += [r"\begin{table}[t]", r"\centering"]
        if caption is not None:
            lines.append(rf"\caption{{{latex_escape(caption)}}}")
        if label is not None:
            lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(h) for h in headers) + r" \\"]
    lines.append(r"\midrule")
    for row in rows:
        lines.append(" & ".join(c if c == MISSING_TEX else latex_escape(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if wrapped:
        lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """Renders a table as CSV at 12 significant digits and 9 decimals, enough for any measured figure.

    That is without the float noise of averaging and differencing (``33.900000000000006`` -> ``33.9``, ``7.1e-15`` ->
    ``0.0``); the index is included unless it is an unnamed default index.
    """
    out = df.map(lambda v: float(f"{round(v, 9) + 0.0:.12g}") if isinstance(v, float) else v)
    out.columns = [_label(c) for c in out.columns]
    return out.to_csv(index=_shows_index(df), lineterminator="\n")


def render_document(sections, fmt: str, **kwargs) -> str:
    """Several titled tables in one document: ``sections`` is ``[(title, table), ...]``; empty tables are left out."""
    parts = [render(table, fmt, title=title, **kwargs) for title, table in sections if not table.empty]
    return "\n\n".join(parts) + "\n"


def render(
    df: pd.DataFrame,
    fmt: str,
    *,
    floatfmt: str = ".2f",
    title: str | None = None,
    note: str | None = None,
    caption: str | None = None,
    label: str | None = None,
) -> str:
    """Renders a table in the named format.

    Args:
        df: the table.
        fmt: ``"md"``/``"markdown"``, ``"tex"``/``"latex"`` or ``"csv"`` (case-insensitive).
        floatfmt: format spec for floats (Markdown and LaTeX; CSV keeps full precision).
        title: Markdown title; also the LaTeX caption when ``caption`` is not given.
        note: Markdown note below the table.
        caption: LaTeX caption.
        label: LaTeX label.

    Returns:
        The rendered text.

    Raises:
        DTNBenchError: for an unknown format.
    """
    kind = str(fmt).strip().lower()
    if kind in ("md", "markdown"):
        return to_markdown(df, floatfmt=floatfmt, title=title, note=note)
    if kind in ("tex", "latex"):
        return to_latex(df, floatfmt=floatfmt, caption=caption if caption is not None else title, label=label)
    if kind == "csv":
        return to_csv(df)
    raise DTNBenchError(f"unknown table format {fmt!r}: choose md, tex or csv")


def placement_label(placement) -> str:
    """What a table appends to a model's name for its placement: ``""`` for ``pre`` or none recorded, else ``[post]``.

    (:mod:`dtn_bench.placement`; runs of different placements never combine, so the label marks the whole table.)
    """
    return f" [{placement}]" if isinstance(placement, str) and placement not in ("", "pre") else ""


def check_same_settings(df, command: str, columns, within=()) -> None:
    """Raises a one-line :class:`DTNBenchError` when rows of one group differ in a setting.

    Args:
        df: rows.
        command: the error's prefix, e.g. ``"table profile"``.
        columns: setting columns; a missing column and missing values are not compared.
        within: columns whose groups are checked separately (rows with a missing key are not checked).

    Raises:
        DTNBenchError: ``"<command>: the runs differ in <column> (<values>); render them separately"``.
    """
    keys = [c for c in within if c in df.columns]
    groups = [g for _, g in df.groupby(keys, sort=False)] if keys else [df]
    for column in columns:
        if column not in df.columns:
            continue
        for group in groups:
            values = list(dict.fromkeys(setting_text(v) for v in group[column].dropna()))
            if len(values) > 1:
                raise DTNBenchError(f"{command}: the runs differ in {column} ({', '.join(values)}); render them "
                                    "separately")
