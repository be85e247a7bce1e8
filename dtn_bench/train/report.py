"""Training reports, rendered from the rows only: the run table, the learning curves and the diagnostics plot.

Rows (one per number, ``suite = train``): per epoch ``loss`` (``split`` train: the training objective; ``split``
val with ``weights`` raw / ema), ``top1_acc`` / ``top5_acc`` (val, raw / ema), ``lr``, ``throughput_img_s``,
``train_time_s``, ``epoch_time_s``, and per normaliser layer (``layer``) the diagnostics ``ln_share_var``,
``ln_share_mean``, ``alpha`` (and any other parameter of a point-wise normaliser, e.g. Derf's shift),
``saturated_frac``; ``params`` once. A run is a ``(model, norm, placement, recipe, data, seed)`` (rows written before
the placement was recorded are ``pre``).
"""

from __future__ import annotations

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.tables import placement_label

RUN_KEYS = ["model", "norm", "placement", "recipe", "data", "seed"]
DIAG_METRICS = {"ln_share_var": "DTN: share of LN statistics (variance gate)",
                "ln_share_mean": "DTN: share of LN statistics (mean gate)", "alpha": "DyT / Derf: alpha",
                "saturated_frac": "point-wise normalisers: saturated units"}
"""The diagnostics the training rows hold (``train.diagnostics``), each with its panel title."""
NOTE = ("Top-1 / top-5 accuracy (%) on the validation split of the last epoch, of the raw and the EMA weights; best: "
        "the best EMA top-1 (raw without an EMA) and its epoch (1-based), the metric the checkpoints keep as "
        "model_best; img/s: training images per second of training time (mean over epochs).")


def _runs(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``placement`` in every row (``pre`` where none was recorded), so runs group by it."""
    return df.assign(placement=df["placement"].fillna("pre") if "placement" in df else "pre")


def _values(df: pd.DataFrame, metric: str, **where) -> pd.DataFrame:
    sel = df["metric"] == metric
    for k, v in where.items():
        sel &= df[k] == v
    return df[sel]


def _run_summary(g: pd.DataFrame) -> dict:
    last = int(g["epoch"].max())
    out: dict = {"epochs": last + 1}
    for w in ("raw", "ema"):
        for metric, label in (("top1_acc", "top-1"), ("top5_acc", "top-5")):
            v = _values(g, metric, weights=w, epoch=last)["value"]
            out[f"{label} {w}"] = 100 * float(v.iloc[-1]) if len(v) else None
    best_w = "ema" if len(_values(g, "top1_acc", weights="ema")) else "raw"
    curve = _values(g, "top1_acc", weights=best_w).sort_values("epoch")
    if len(curve):
        i = curve["value"].to_numpy().argmax()
        out["best top-1"] = 100 * float(curve["value"].iloc[i])
        out["best epoch"] = int(curve["epoch"].iloc[i]) + 1
    out["train loss"] = float(_values(g, "loss", split="train", epoch=last)["value"].iloc[-1])
    out["img/s"] = float(_values(g, "throughput_img_s")["value"].mean())
    out["train time (s)"] = float(_values(g, "train_time_s")["value"].sum())
    params = _values(g, "params")["value"]
    out["params (M)"] = float(params.iloc[0]) / 1e6 if len(params) else None
    return out


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: epochs, last-epoch accuracies (raw, EMA), the best top-1, loss, img/s, time, parameters."""
    if df.empty or "epoch" not in df.columns:
        return pd.DataFrame()
    records, index = [], []
    for key, g in _runs(df).groupby(RUN_KEYS, sort=False, dropna=False):
        records.append(_run_summary(g))
        index.append(key)
    table = pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=RUN_KEYS))
    return table.dropna(axis=1, how="all").astype(object)


def render(df: pd.DataFrame, fmt: str) -> str:
    """The run table as Markdown (``md``) or LaTeX (``tex``), with the data each run trained on."""
    from dtn_bench.results.tables import to_latex, to_markdown

    table = summary_table(df)
    recipes = ", ".join(dict.fromkeys(df["recipe"].astype(str))) if "recipe" in df else ""
    title = f"Training (recipe {recipes})"
    if fmt == "md":
        return to_markdown(table, floatfmt=".2f", title=title, note=NOTE)
    if fmt == "tex":
        return to_latex(table, floatfmt=".2f", caption=f"{title}. {NOTE}", label="tab:train")
    raise DTNBenchError(f"unknown table format {fmt!r}: md or tex")


def console(df: pd.DataFrame) -> list:
    """The run table for the console, and the note."""
    from dtn_bench.runner import ConsoleTable

    table = summary_table(df)
    if table.empty:
        return []
    data = "; ".join(dict.fromkeys(str(d) for d in table.index.get_level_values("data")))
    recipes = ", ".join(dict.fromkeys(str(r) for r in table.index.get_level_values("recipe")))
    table.index = [f"{m}{placement_label(p)} / {n} / seed {s}" for m, n, p, _, _, s in table.index]
    return [ConsoleTable.from_frame(table.map(_cell), f"Training, recipe {recipes}, on {data}",
                                    "model / norm / seed"), NOTE]


def _cell(v) -> str:
    if v is None or isinstance(v, float) and v != v:
        return "—"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _label(key) -> str:
    return " / ".join(str(k) for k in key)


def curves_plot(df: pd.DataFrame):
    """Learning curves: training loss, validation top-1 (raw solid, EMA dashed) and the learning rate per epoch."""
    from dtn_bench.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, g in _runs(df).groupby(RUN_KEYS, sort=False, dropna=False):
        label = _label(key[:2]) + placement_label(key[2]) + f" seed {key[5]}"
        loss = _values(g, "loss", split="train").sort_values("epoch")
        (line,) = axes[0].plot(loss["epoch"] + 1, loss["value"], label=label)
        for w, style in (("raw", "-"), ("ema", "--")):
            acc = _values(g, "top1_acc", weights=w).sort_values("epoch")
            if len(acc):
                axes[1].plot(acc["epoch"] + 1, 100 * acc["value"], style, color=line.get_color(),
                             label=f"{label} ({w})")
        lr = _values(g, "lr").sort_values("epoch")
        axes[2].plot(lr["epoch"] + 1, lr["value"], color=line.get_color(), label=label)
    for ax, title, ylabel in zip(axes, ("training loss", "validation top-1 (raw -, EMA --)", "learning rate"),
                                 ("loss (nat)", "top-1 (%)", "lr"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def diagnostic_panels(df: pd.DataFrame, draw, *, empty: str, panel: tuple[float, float] = (5, 4)):
    """One panel per diagnostic of :data:`DIAG_METRICS` that ``df`` holds, filled by ``draw(ax, rows of it)``.

    Without any: a small figure that says ``empty``. Shared by this report (a line per run and layer) and
    ``robustness`` (a band over seeds).
    """
    from dtn_bench.plots import _plt

    plt = _plt()
    metrics = [m for m in DIAG_METRICS if "metric" in df and (df["metric"] == m).any()]
    if not metrics:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, empty, ha="center")
        return fig
    fig, axes = plt.subplots(1, len(metrics), figsize=(panel[0] * len(metrics), panel[1]), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        draw(ax, df[df["metric"] == metric])
        ax.set_title(DIAG_METRICS[metric], fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def diagnostics_plot(df: pd.DataFrame):
    """One panel per diagnostic the rows hold (DTN gates, alpha, saturation), a line per run and layer."""

    def draw(ax, sel):
        for key, g in _runs(sel).groupby([*RUN_KEYS, "layer"], sort=False, dropna=False):
            g = g.sort_values("epoch")
            ax.plot(g["epoch"] + 1, g["value"], label=f"{_label(key[:2])}{placement_label(key[2])} s{key[5]} {key[6]}",
                    lw=1)
        if len(ax.lines) <= 12:
            ax.legend(fontsize=6)

    return diagnostic_panels(df, draw, empty="no DTN or point-wise normaliser in these models: nothing to show")
