"""Paper-style ListOps tables and learning curves, rendered from the rows of an ``lra-listops`` run only.

Accuracies are stored as fractions and shown in percent. With several seeds a cell is ``mean ± std`` (sample
standard deviation, n - 1) over the seeds; with one seed it is the number.
"""

from __future__ import annotations

import math

import pandas as pd

from dtn_bench.results.published import LRA_LISTOPS, LRA_PAPER, NOT_PUBLISHED
from dtn_bench.results.tables import render_document, setting_text

MODEL_LABELS = {"transformer": "Transformer", "bigbird": "BigBird", "reformer": "Reformer"}
NORM_LABELS = {"layernorm": "LN", "dtn": "DTN", "rmsnorm": "RMSNorm", "scalenorm": "ScaleNorm",
               "batchnorm": "BN", "instancenorm": "IN", "groupnorm": "GN", "dtn_var": "DTN (var only)"}


def _label(name: str, labels: dict[str, str]) -> str:
    return labels.get(name, name)


def accuracy_stats(df: pd.DataFrame, checkpoint: str = "last", split: str = "test") -> pd.DataFrame:
    """Mean, std and count over seeds of the accuracy (%) per ``(model, norm)`` for one checkpoint kind and split.

    A seed measured by several runs (the same run repeated, or on another machine) counts once, with the mean of its
    runs: the count and the spread are over distinct seeds.
    """
    if df.empty or "checkpoint" not in df.columns:
        return pd.DataFrame(columns=["mean", "std", "n"])
    sel = df[(df["metric"] == "accuracy") & (df["split"] == split) & (df["checkpoint"] == checkpoint)]
    if sel.empty:
        return pd.DataFrame(columns=["mean", "std", "n"])
    sel = sel.assign(pct=sel["value"] * 100)
    if "seed" in sel.columns:
        sel = sel.groupby(["model", "norm", "seed"], sort=False, as_index=False)["pct"].mean()
    g = sel.groupby(["model", "norm"], sort=False)["pct"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})


def _cell(mean: float, std: float, n: int) -> float | str:
    if n <= 1 or math.isnan(std):
        return float(mean)
    return f"{mean:.2f} ± {std:.2f}"


def majority_accuracy(df: pd.DataFrame, split: str = "test") -> float | None:
    """The majority-class baseline accuracy (%) recorded in the rows, if any."""
    if "checkpoint" not in df.columns:
        return None
    sel = df[(df["checkpoint"] == "majority") & (df["split"] == split) & (df["metric"] == "accuracy")]
    return float(sel["value"].iloc[0] * 100) if not sel.empty else None


def paper_table(df: pd.DataFrame, checkpoint: str = "last") -> pd.DataFrame:
    """The paper-style table: rows Transformer / BigBird / Reformer.

    Columns: test accuracy (%) per normaliser, ``DTN - LN``, and the published numbers (LRA paper for LN; the DTN
    paper publishes no per-model ListOps number: "not published").
    """
    stats = accuracy_stats(df, checkpoint)
    if stats.empty:
        return pd.DataFrame()
    models = list(dict.fromkeys(m for m, _ in stats.index))
    norms = list(dict.fromkeys(n for _, n in stats.index))
    table = pd.DataFrame(index=pd.Index([_label(m, MODEL_LABELS) for m in models], name="model"))
    for norm in norms:
        col = []
        for m in models:
            if (m, norm) in stats.index:
                s = stats.loc[(m, norm)]
                col.append(_cell(s["mean"], s["std"], int(s["n"])))
            else:
                col.append("-")
        table[_label(norm, NORM_LABELS)] = pd.Series(col, index=table.index, dtype=object)
    if "layernorm" in norms and "dtn" in norms:
        diff = []
        for m in models:
            if (m, "layernorm") in stats.index and (m, "dtn") in stats.index:
                diff.append(float(stats.loc[(m, "dtn"), "mean"] - stats.loc[(m, "layernorm"), "mean"]))
            else:
                diff.append("-")
        table["DTN - LN"] = pd.Series(diff, index=table.index, dtype=object)
    for norm, head in (("layernorm", "LRA paper (LN)"), ("dtn", "DTN paper (DTN)")):
        cells = []
        for m in models:
            entry = LRA_LISTOPS.get((m, norm))
            cells.append(NOT_PUBLISHED if entry is None or entry.value is None else float(entry.value))
        table[head] = pd.Series(cells, index=table.index, dtype=object)
    return table


def details_table(df: pd.DataFrame) -> pd.DataFrame:
    """The details table, per model x norm.

    Test accuracy of the last and best-validation checkpoints, the best step, parameters, training tokens/s, training
    time and peak memory (means over seeds).
    """
    last, best = accuracy_stats(df, "last"), accuracy_stats(df, "best")
    if last.empty:
        return pd.DataFrame()
    rows = []
    for (m, n), s in last.iterrows():
        def metric(name: str, m=m, n=n) -> float | str:
            sel = df[(df["model"] == m) & (df["norm"] == n) & (df["metric"] == name)]
            return float(sel["value"].mean()) if not sel.empty else "-"

        best_rows = df[(df["model"] == m) & (df["norm"] == n) & (df["checkpoint"] == "best")
                       & (df["metric"] == "accuracy") & (df["split"] == "test")]
        rows.append({
            "model": _label(m, MODEL_LABELS), "norm": _label(n, NORM_LABELS),
            "test acc % (last)": _cell(s["mean"], s["std"], int(s["n"])),
            "test acc % (best val)": _cell(*best.loc[(m, n)][["mean", "std"]], int(best.loc[(m, n), "n"]))
            if (m, n) in best.index else "-",
            "best step": _whole(best_rows["step"].mean()) if not best_rows.empty else "-",
            "seeds": int(s["n"]),
            "params": _whole(metric("params")),
            "train tokens/s": metric("tokens_s"),
            "train time s": metric("train_time_s"),
        })
        if (df["metric"] == "peak_mem_mib").any():
            rows[-1]["peak GPU MiB"] = metric("peak_mem_mib")
        else:
            rows[-1]["peak RSS MiB (process)"] = metric("peak_rss_mib")
    return pd.DataFrame(rows).set_index(["model", "norm"])


def _whole(value: float | str) -> int | str:
    return int(round(value)) if isinstance(value, float) and not math.isnan(value) else value


def _settings_note(df: pd.DataFrame) -> str:
    parts = []
    for col in ("preset", "data", "max_len"):
        if col in df.columns:
            values = [setting_text(v) for v in pd.unique(df[col].dropna())]
            if values:
                parts.append(f"{col} {', '.join(values)}")
    return "; ".join(parts)


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The run's document, Markdown or LaTeX.

    The paper-style table (last checkpoint, LRA's rule), the same for the best-validation checkpoint, and the details
    table.
    """
    base = majority_accuracy(df)
    note = _settings_note(df)
    title = f"ListOps test accuracy (%), last checkpoint (LRA's rule) - {note}"
    if base is not None:
        title += f"; majority-class baseline {base:.2f}%"
    sections = [
        (title, paper_table(df, "last")),
        ("ListOps test accuracy (%), best-validation checkpoint", paper_table(df, "best")),
        ("Runs", details_table(df)),
    ]
    text = render_document(sections, fmt)
    if str(fmt).lower() in ("md", "markdown") and not paper_table(df).empty:
        text += (f"\nPublished: {LRA_PAPER}, full LRA ListOps (lengths up to 2,000, 5k steps); numbers from another "
                 "preset or data are not comparable with them. The DTN paper reports only a +0.5 to +0.8 point gain "
                 "with BigBird and Reformer, no per-model table.\n")
    return text


def curves_plot(df: pd.DataFrame):
    """Validation accuracy (%) vs step, one panel per model, one line per normaliser (mean over seeds)."""
    from dtn_bench.plots import _plt

    plt = _plt()
    sel = df[(df.get("checkpoint") == "curve") & (df["metric"] == "accuracy") & (df["split"] == "val")] \
        if "checkpoint" in df.columns else df.iloc[:0]
    models = list(dict.fromkeys(sel["model"])) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), sharey=True, squeeze=False)
    base = majority_accuracy(df, "val")
    for ax, m in zip(axes[0], models, strict=True):
        part = sel[sel["model"] == m]
        for norm in dict.fromkeys(part["norm"]):
            line = part[part["norm"] == norm].groupby("step")["value"].mean() * 100
            ax.plot(line.index, line.values, marker="o", markersize=3, label=_label(norm, NORM_LABELS))
        if base is not None:
            ax.axhline(base, color="grey", linestyle="--", linewidth=1, label="majority class")
        ax.set_title(_label(m, MODEL_LABELS))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("validation accuracy (%)")
    fig.suptitle(f"ListOps learning curves ({_settings_note(df)})", fontsize=9)
    fig.tight_layout()
    return fig
