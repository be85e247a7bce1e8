"""Plots, rendered from result rows only (matplotlib, Agg backend)."""

from __future__ import annotations

import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(table: pd.DataFrame, *, ylabel: str, title: str, log: bool = False):
    """A grouped bar chart of a wide table (index = groups on the x axis, columns = bars); returns the figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(table.index) + 2), 4.0))
    n = max(1, len(table.columns))
    width = 0.8 / n
    xs = range(len(table.index))
    for i, col in enumerate(table.columns):
        vals = pd.to_numeric(table[col], errors="coerce")
        ax.bar([x + (i - (n - 1) / 2) * width for x in xs], vals, width, label=str(col))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(v) for v in table.index], rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
