"""Tables and plots of the norm benchmark, from its rows."""

from __future__ import annotations

import pandas as pd

from dtn_bench.results.tables import pivot, render_document


def layer_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = normalisers; median fwd / fwd+bwd time (ms) and the time relative to LayerNorm."""
    t = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    if t.empty:
        return pd.DataFrame()
    wide = pivot(t, index="norm", columns="pass")
    wide = wide.rename(columns={"fwd": "fwd ms", "fwd_bwd": "fwd+bwd ms"})
    if "layernorm" in wide.index:
        for col in list(wide.columns):
            wide[f"{col.split()[0]} / LN"] = wide[col] / wide.loc["layernorm", col]
    return wide


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """The figures the issue targets: DTN speed-up over the authors' algorithm, model throughput and ratio."""
    rows = []
    for _, r in df[df["metric"] == "speedup"].iterrows():
        rows.append({"figure": f"DTN speed-up vs authors' algorithm ({r['pass']}, batch {int(r['batch'])})",
                     "value": r["value"], "unit": "x"})
    for _, r in df[(df["metric"] == "throughput_img_s") & (df["stat"] == "median")].iterrows():
        rows.append({"figure": f"{r['model']} inference throughput (batch {int(r['batch'])}, fp32 eager)",
                     "value": r["value"], "unit": "img/s"})
    for _, r in df[(df["metric"] == "ratio")].iterrows():
        rows.append({"figure": f"{r['model']} / {r['versus']} throughput ({r['stat']})", "value": r["value"],
                     "unit": "x"})
    return pd.DataFrame(rows).set_index("figure") if rows else pd.DataFrame()


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """Both tables in one document (Markdown or LaTeX)."""
    return render_document([("Normaliser time per layer (median)", layer_table(df)),
                            ("Summary", summary_table(df))], fmt)


def bar_plot(df: pd.DataFrame):
    """Median fwd and fwd+bwd time per normaliser, log scale."""
    from dtn_bench.plots import grouped_bars

    lt = layer_table(df)
    cols = [c for c in ("fwd ms", "fwd+bwd ms") if c in lt.columns]
    return grouped_bars(lt[cols], ylabel="time per layer (ms, log)", title="Normaliser cost", log=True)
