"""Tables and plots of a profile run, rendered from its rows only.

* :func:`table1`: the DTN paper's Table 1 layout (Model, Norm, H, C, FLOPs, Params, Top-1) with our measured GMACs
  and parameters beside the published ones ("not published" where the paper has none; Top-1 is the paper's, this
  suite measures no accuracy), plus the analytic GMACs of the norm layers.
* :func:`overhead_table`: throughput of each normaliser over LayerNorm's, per model and batch, with the spread of
  that ratio over repetitions where the rows record repetitions (throughput rows with ``stat = "rep"`` and a
  ``repetition`` index, paired on ``(run_id, repetition)``: :func:`dtn_bench.bench.report.paired_ratio_spread`).
  The rows :mod:`dtn_bench.profile.measure` writes time the ``iters`` throughput iterations as one block, so they
  hold no repetitions: the spread reads :data:`dtn_bench.bench.report.NO_REPETITIONS`.
* :func:`throughput_table`, :func:`latency_table`: items/s per batch; latency p50/p90 and peak memory at batch 1.
  Peak memory is labelled for what was measured (rows' ``mem_kind``): on a GPU the memory torch allocated, on the CPU
  the whole process's peak resident set size (:data:`MEM_LABELS`, :func:`memory_note`).
* :func:`protocol_table`: the measurement protocol the rows record.
* :func:`throughput_plot` (throughput vs batch size) and :func:`latency_plot` (latency bars).
"""

from __future__ import annotations

import pandas as pd

from dtn_bench.results.tables import add_published, pivot, placement_label, render

THROUGHPUT_METRICS = ("throughput_img_s", "throughput_seq_s")
BASELINE = "layernorm"
NORM_MACS_NOTE = ("FLOPs = GMACs per sample, torch's flop counter / 2 (the vision papers' convention; DTN's "
                  "inter-token products count, elementwise work counts 0). Norm GMACs: analytic count of the "
                  "normalisers' own work, DTN as computed here (separable P); dense = the authors' T x T form "
                  "(dtn_bench.profile.normcost). Top-1: published ImageNet-1k accuracy, not measured here.")


def _keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(df["model"], df["norm"], strict=True)))


def _first(df: pd.DataFrame, model: str, norm: str, column: str):
    sub = df[(df["model"] == model) & (df["norm"] == norm)]
    return sub[column].iloc[0] if column in sub.columns and len(sub) else None


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1 layout with our GMACs and parameters beside the published ones.

    Args:
        df: profile rows.

    Returns:
        Index (Model, Norm, H, C); columns FLOPs (G) ours / paper, norm GMACs, norm GMACs dense, Params (M) ours /
        paper, Top-1 (%) paper. Empty when the rows hold no static measurements.
    """
    from dtn_bench.profile.models import paper_key
    from dtn_bench.results.published import IMAGENET_TOP1, NORM_COMPARISON_TOP1, PAPER_FLOPS_G, PAPER_PARAMS_M

    static = df[df["metric"].isin(["gmacs", "params_m", "norm_gmacs", "norm_gmacs_dense"])]
    if static.empty:
        return pd.DataFrame()
    wide = pivot(static, index=["model", "norm"], columns="metric", aggfunc="first")
    wide.index = pd.MultiIndex.from_tuples([(paper_key(m), n) for m, n in wide.index], names=["model", "norm"])
    top1 = {**NORM_COMPARISON_TOP1, **IMAGENET_TOP1}
    wide = add_published(wide, PAPER_FLOPS_G, "FLOPs paper (G)")
    wide = add_published(wide, PAPER_PARAMS_M, "Params paper (M)")
    wide = add_published(wide, top1, "Top-1 paper (%)")
    out = pd.DataFrame({
        "FLOPs ours (G)": wide.get("gmacs"),
        "FLOPs paper (G)": wide["FLOPs paper (G)"],
        "Norm GMACs": wide.get("norm_gmacs"),
        "Norm GMACs dense": wide.get("norm_gmacs_dense"),
        "Params ours (M)": wide.get("params_m"),
        "Params paper (M)": wide["Params paper (M)"],
        "Top-1 paper (%)": wide["Top-1 paper (%)"],
    }, index=wide.index)
    labels = []
    for model, norm in _keys(static):
        placed = placement_label(_first(static, model, norm, "placement"))
        label = f"{_first(static, model, norm, 'model_label')}{placed}"
        labels.append((label, norm, _first(static, model, norm, "heads"), _first(static, model, norm, "dim")))
    out.index = pd.MultiIndex.from_tuples(labels, names=["Model", "Norm", "H", "C"])
    return out


def _throughput_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The throughput rows of each configuration (one repetition rows left out)."""
    from dtn_bench.bench.report import summary_rows

    return summary_rows(df[df["metric"].isin(THROUGHPUT_METRICS)])


def _throughput_reps(df: pd.DataFrame, model: str, norm: str, batch: int) -> pd.DataFrame:
    """The one repetition throughput rows of one configuration at the batch actually run."""
    from dtn_bench.bench.report import repetition_rows

    reps = repetition_rows(df[df["metric"].isin(THROUGHPUT_METRICS)])
    if reps.empty:
        return reps
    return reps[(reps["model"] == model) & (reps["norm"] == norm) & (reps["batch_used"].astype(int) == batch)]


def ratio_spread_text(df: pd.DataFrame, model: str, norm: str, batch: int) -> str:
    """The spread over repetitions of ``norm``'s throughput over LayerNorm's (``"0.820 (0.800-0.850)"``).

    Args:
        df: profile rows.
        model: the model.
        norm: the normaliser over LayerNorm.
        batch: the batch actually run (both sides).

    Returns:
        The text (:func:`dtn_bench.bench.report.spread_text`, three decimals), or
        :data:`~dtn_bench.bench.report.NO_REPETITIONS` when the rows hold no paired repetitions.
    """
    from dtn_bench.bench.report import paired_ratio_spread, spread_text

    s = paired_ratio_spread(_throughput_reps(df, model, norm, batch), _throughput_reps(df, model, BASELINE, batch))
    return spread_text(s, 3)


def throughput_table(df: pd.DataFrame) -> pd.DataFrame:
    """Items/s (images or sequences) per ``(model, norm)`` and batch actually run."""
    t = _throughput_rows(df)
    if t.empty:
        return pd.DataFrame()
    t = t.assign(batch=t["batch_used"].astype(int).map(lambda b: f"batch {b}"))
    return pivot(t, index=["model", "norm"], columns="batch")


def overhead_table(df: pd.DataFrame) -> pd.DataFrame:
    """Throughput per model and batch for each normaliser, and each one over LayerNorm's (``dtn / LN``).

    Pairs are matched on the batch actually run, so a configuration that fell back to a smaller batch after
    running out of memory is never compared with a larger one. Beside each ratio, ``dtn / LN over repetitions``:
    its spread over repetitions (:func:`ratio_spread_text`).
    """
    t = _throughput_rows(df)
    if t.empty:
        return pd.DataFrame()
    t = t.assign(batch=t["batch_used"].astype(int))
    wide = pivot(t, index=["model", "batch"], columns="norm")
    if BASELINE in wide.columns:
        for norm in [c for c in wide.columns if c != BASELINE]:
            ratio = wide[norm] / wide[BASELINE]
            wide[f"{norm} / LN"] = ratio
            wide[f"{norm} / LN over repetitions"] = [
                "—" if pd.isna(r) else ratio_spread_text(df, model, norm, batch)
                for (model, batch), r in ratio.items()]
    wide.columns = [c if "/" in str(c) else f"{c} (items/s)" for c in wide.columns]
    return wide


MEM_LABELS = {
    "cuda_max_memory_allocated": "peak GPU memory (MiB, max_memory_allocated)",
    "cpu_process_max_rss": "peak RSS (MiB, whole process)",
}
"""Column heading of ``peak_mem_mib`` per ``mem_kind`` (what the number is); rows without a kind: ``peak mem (MiB)``."""
MEM_NOTES = {
    "cuda_max_memory_allocated": "peak GPU memory: torch.cuda.max_memory_allocated after a reset of the peak "
                                 "statistics (model, inputs and activations; not the allocator's cached blocks).",
    "cpu_process_max_rss": "peak RSS (whole process): the peak resident set size of the whole measuring process "
                           "(ru_maxrss): the model, inputs and activations, but mostly the Python interpreter, torch "
                           "and its libraries; not the model's memory.",
}


def _label_memory(rows: pd.DataFrame) -> pd.DataFrame:
    """``peak_mem_mib`` rows renamed to the heading of what they measured (:data:`MEM_LABELS`)."""
    kinds = rows["mem_kind"] if "mem_kind" in rows.columns else pd.Series(None, index=rows.index, dtype=object)
    labels = kinds.map(MEM_LABELS).fillna("peak mem (MiB)")
    return rows.assign(metric=rows["metric"].where(rows["metric"] != "peak_mem_mib", labels))


def memory_note(df: pd.DataFrame) -> str | None:
    """What the peak-memory figures of ``df`` are, one sentence per kind measured (``None`` without any)."""
    mem = df[df["metric"] == "peak_mem_mib"]
    if mem.empty or "mem_kind" not in mem.columns:
        return None
    notes = [MEM_NOTES[k] for k in pd.unique(mem["mem_kind"].dropna()) if k in MEM_NOTES]
    return " ".join(notes) or None


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Latency p50 / p90 (ms) and peak memory (MiB, headed by what it measured) at batch 1 per ``(model, norm)``."""
    lat = df[df["metric"].isin(["latency_ms_p50", "latency_ms_p90"])
             | ((df["metric"] == "peak_mem_mib") & (df.get("phase") == "latency"))]
    if lat.empty:
        return pd.DataFrame()
    wide = pivot(_label_memory(lat), index=["model", "norm"], columns="metric", aggfunc="first")
    return wide.rename(columns={"latency_ms_p50": "p50 (ms)", "latency_ms_p90": "p90 (ms)"})


def memory_mfu_table(df: pd.DataFrame) -> pd.DataFrame:
    """Peak memory (MiB, headed by what it measured) and MFU per ``(model, norm)`` and batch actually run.

    MFU is there on GPUs only.
    """
    sub = df[((df["metric"] == "peak_mem_mib") & (df.get("phase") == "throughput")) | (df["metric"] == "mfu")]
    if sub.empty:
        return pd.DataFrame()
    sub = _label_memory(sub.assign(batch=sub["batch_used"].astype(int)))
    wide = pivot(sub, index=["model", "norm", "batch"], columns="metric", aggfunc="first")
    return wide.rename(columns={"mfu": "MFU"})


OVERHEAD_NOTE = ("dtn / LN: the ratio of the two throughputs; over repetitions: median (min-max) of the ratio of "
                 "each timed repetition, repetition k of one side over repetition k of LayerNorm's in the same run. "
                 "no repetitions recorded: the run timed its throughput iterations as one block (one number per "
                 "configuration), so the ratio has no spread.")

PROTOCOL_COLUMNS = ("device_name", "placement", "mode", "warmup", "iters", "latency_iters", "dtype", "autocast",
                    "channels_last", "compile_mode", "dtn_kernel", "cudnn_benchmark", "tf32", "isolation", "threads",
                    "malloc_tuned", "torch_version", "timm_version", "cuda_version", "cudnn_version")


def protocol_table(df: pd.DataFrame) -> pd.DataFrame:
    """The protocol recorded in the rows: one line per distinct setting, with the value(s) seen."""
    items = []
    for col in PROTOCOL_COLUMNS:
        if col in df.columns:
            values = [str(v) for v in pd.unique(df[col].dropna())]
            items.append((col, ", ".join(values) if values else "—"))
    if not items:
        return pd.DataFrame()
    return pd.DataFrame({"value": [v for _, v in items]}, index=pd.Index([k for k, _ in items], name="setting"))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per ``(model, norm)``: params, GMACs, norm GMACs, items/s per batch, latency p50, DTN/LN.

    Each ``/ LN @<batch>`` is followed by its spread over repetitions (``/ LN @<batch> over repetitions``,
    :func:`ratio_spread_text`).
    """
    keys = _keys(df)
    if not keys:
        return pd.DataFrame()
    records = []
    tp = _throughput_rows(df)
    for model, norm in keys:
        sub = df[(df["model"] == model) & (df["norm"] == norm)]

        def metric(name: str, frame=sub):
            v = frame.loc[frame["metric"] == name, "value"]
            return float(v.iloc[0]) if len(v) else None

        rec = {"model": model, "norm": norm, "params (M)": metric("params_m"), "GMACs": metric("gmacs"),
               "norm GMACs": metric("norm_gmacs"), "p50 (ms)": metric("latency_ms_p50")}
        for _, r in tp[(tp["model"] == model) & (tp["norm"] == norm)].iterrows():
            b, used = int(r["batch_size"]), int(r["batch_used"])
            rec[f"items/s @{b}"] = r["value"] if used == b else f"{r['value']:.2f} (at {used})"
            base = tp[(tp["model"] == model) & (tp["norm"] == BASELINE) & (tp["batch_used"] == used)]
            if norm != BASELINE and len(base):
                rec[f"/ LN @{b}"] = r["value"] / float(base["value"].iloc[0])
                rec[f"/ LN @{b} over repetitions"] = ratio_spread_text(df, model, norm, used)
        records.append(rec)
    return pd.DataFrame(records).set_index(["model", "norm"])


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """Every table of a profile run in one Markdown or LaTeX document."""
    sections = [
        ("Table 1 layout: measured vs published (224x224 images; LRA: 2000 tokens)", table1(df), NORM_MACS_NOTE,
         ".3f"),
        ("Throughput overhead (items/s; ratio over LayerNorm at the same batch)", overhead_table(df), OVERHEAD_NOTE,
         ".3f"),
        ("Throughput (items/s) by batch actually run", throughput_table(df), None, ".2f"),
        ("Latency at batch 1 and peak memory", latency_table(df), memory_note(df), ".3f"),
        ("Peak memory and MFU by batch", memory_mfu_table(df), memory_note(df), ".3f"),
        ("Protocol", protocol_table(df), None, ".2f"),
    ]
    parts = [render(table, fmt, title=title, note=note, floatfmt=ff) for title, table, note, ff in sections
             if not table.empty]
    return "\n\n".join(parts) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def throughput_plot(df: pd.DataFrame):
    """Throughput vs batch size, one line per ``(model, norm)`` (log-log); returns the figure."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.5))
    t = _throughput_rows(df)
    for model, norm in _keys(t):
        sub = t[(t["model"] == model) & (t["norm"] == norm)].sort_values("batch_used")
        style = "-" if norm == BASELINE else "--"
        ax.plot(sub["batch_used"].astype(int), sub["value"], style, marker="o", label=f"{model} / {norm}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if not t.empty:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted(set(t["batch_used"].astype(int))))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (run)")
    units = sorted(set(t["unit"])) if not t.empty else ["items/s"]
    mode = ", ".join(sorted(set(df["mode"].dropna()))) if "mode" in df.columns else ""
    ax.set_ylabel(f"throughput ({', '.join(units)})")
    ax.set_title(f"Throughput vs batch size ({mode})" if mode else "Throughput vs batch size")
    if not t.empty:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def latency_plot(df: pd.DataFrame):
    """Latency p50 at batch 1 per model, one bar per normaliser (p90 as the error bar's top); returns the figure."""
    plt = _plt()
    lat = df[df["metric"].isin(["latency_ms_p50", "latency_ms_p90"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * max(1, lat["model"].nunique()) + 2), 4.0))
    if lat.empty:
        ax.set_title("Latency at batch 1 (no latency rows)")
        return fig
    p50 = pivot(lat[lat["metric"] == "latency_ms_p50"], index="model", columns="norm")
    p90 = pivot(lat[lat["metric"] == "latency_ms_p90"], index="model", columns="norm").reindex_like(p50)
    n = max(1, len(p50.columns))
    width = 0.8 / n
    xs = range(len(p50.index))
    for i, norm in enumerate(p50.columns):
        lo = p50[norm].to_numpy(dtype=float)
        up = (p90[norm].to_numpy(dtype=float) - lo).clip(min=0)
        ax.bar([x + (i - (n - 1) / 2) * width for x in xs], lo, width, yerr=[[0] * len(lo), up], capsize=3,
               label=str(norm))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(v) for v in p50.index], rotation=30, ha="right")
    ax.set_ylabel("latency at batch 1 (ms): p50, bar to p90")
    ax.set_title("Latency")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig
