"""Tables and plots of the norm benchmark, from its rows.

* :func:`layer_table`: time per layer of every normaliser measured, and its ratio to LayerNorm.
* :func:`summary_table`: DTN's speed-up over the authors' algorithm, model throughput and the DTN / LN ratio.
* :func:`speedups`, :func:`throughput_ratios`: those derived figures, computed from the measured rows of each run
  (the rows hold measurements only).
* :func:`repetition_rows`, :func:`paired_ratio_spread`, :func:`spread_text`: the spread over repetitions beside a
  ratio. A run records each timed repetition as a row (``stat = "rep"``, ``repetition`` = 0, 1, ...); repetition
  ``k`` of one side pairs with repetition ``k`` of the other within the same run, and the spread is min / median /
  max of the per-repetition ratios (:func:`dtn_bench.stats.ratio_spread`), shown ``"0.82 (0.80-0.85)"`` (median,
  then min-max). Rows of older runs hold only summary statistics: their ratios show :data:`NO_REPETITIONS`.
* :func:`comparison_table`: the DTN paper's normaliser comparison (ImageNet-1k top-1 of ViT-S and ViT-S* with LN, BN,
  IN, GN, SN, ScN, PN, DTN) and the Derf paper's (ViT-B and ViT-L with LN, DyT, Derf) with the published accuracies
  beside our layer timings at each model's layer shape.
"""

from __future__ import annotations

import pandas as pd

from dtn_bench.results.published import DERF_IMAGENET_TOP1, NORM_COMPARISON_TOP1, NOT_PUBLISHED
from dtn_bench.results.tables import pivot, placement_label, render
from dtn_bench.stats import Spread, pair_by_key, ratio_spread, spread

PAPER_NORMS = (("LN", "layernorm"), ("BN", "batchnorm"), ("IN", "instancenorm"), ("GN", "groupnorm"), ("SN", "sn"),
               ("ScN", "scalenorm"), ("PN", "powernorm"), ("DTN", "dtn"))
"""The comparison's columns in the paper's order: (paper's name, this package's name; ``sn``: not expanded)."""
PAPER_MODELS = (("ViT-S", "vit_s", 196, 384, 6), ("ViT-S*", "vit_s_star", 196, 432, 9))
"""The DTN comparison's rows: (label, published key, tokens, channels, heads of a normalised layer at 224 x 224)."""
POINTWISE_MODELS = (("ViT-B", "vit_base_patch16_224", 196, 768, 12), ("ViT-L", "vit_large_patch16_224", 196, 1024, 16))
"""The Derf comparison's rows (stock timm ViTs with every LayerNorm replaced, :data:`~dtn_bench.results.published.
DERF_IMAGENET_TOP1`): label, published key, and the 14 x 14 patch grid's layer shape (the class token is one more)."""
COMPARISON_ROWS = tuple((*m, NORM_COMPARISON_TOP1) for m in PAPER_MODELS) + tuple(
    (*m, DERF_IMAGENET_TOP1) for m in POINTWISE_MODELS)
"""Every row block of the comparison with the published table (one source each) its top-1 comes from."""
NOT_MEASURED = "not measured"
NOT_PROVIDED = "not provided"
COMPARISON_TITLE = ("Normaliser comparison, DTN paper layout (ViT-S, ViT-S*) and Derf README (ViT-B, ViT-L): published "
                    "ImageNet-1k top-1 beside our layer cost")


REP = "rep"
"""The ``stat`` of a row that holds one timed repetition (its index in the ``repetition`` column)."""
NO_REPETITIONS = "no repetitions recorded"
"""What a ratio's spread shows when its rows hold no repetitions (runs recorded before repetitions were kept)."""
SPREAD_NOTE = ("over repetitions: median (min-max) of the ratio of each repetition, repetition k of one side over "
               "repetition k of the other in the same run (over the repetitions both timed); "
               f"{NO_REPETITIONS}: the run kept only summary statistics.")


def repetition_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that hold one timed repetition each (``stat == "rep"`` with a ``repetition`` index).

    Args:
        df: rows of any timing suite.

    Returns:
        Those rows (empty when the rows record no repetitions).
    """
    if "stat" not in df.columns or "repetition" not in df.columns:
        return df.iloc[0:0]
    return df[(df["stat"] == REP) & df["repetition"].notna()]


def summary_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that are not single repetitions (summary statistics, counts)."""
    if "stat" not in df.columns:
        return df
    return df[df["stat"] != REP]


def _rep_keys(rows: pd.DataFrame) -> list[tuple[str, int]]:
    runs = rows["run_id"].astype(object).fillna("") if "run_id" in rows.columns else [""] * len(rows)
    return [(str(r), int(k)) for r, k in zip(runs, rows["repetition"], strict=True)]


def paired_ratio_spread(numerator: pd.DataFrame, denominator: pd.DataFrame) -> Spread | None:
    """Spread of ``r_k = a_k / b_k`` over the repetitions of two sides, paired on ``(run_id, repetition)``.

    Args:
        numerator: repetition rows (:func:`repetition_rows`) of side A, one per run and repetition.
        denominator: repetition rows of side B.

    Returns:
        The spread (:func:`dtn_bench.stats.ratio_spread`) over the pairs both sides have; ``None`` when there is
        no pair (rows without repetitions).
    """
    if numerator.empty or denominator.empty:
        return None
    _, a, b = pair_by_key(zip(_rep_keys(numerator), numerator["value"], strict=True),
                          zip(_rep_keys(denominator), denominator["value"], strict=True),
                          what="repetition", strict=False)
    return ratio_spread(a, b) if a else None


def value_spread(rows: pd.DataFrame) -> Spread | None:
    """Spread of the repetitions themselves (:func:`dtn_bench.stats.spread`); ``None`` without any."""
    return spread(rows["value"].to_numpy()) if len(rows) else None


def spread_text(s: Spread | None, digits: int = 2) -> str:
    """``"0.82 (0.80-0.85)"`` (:meth:`dtn_bench.stats.Spread.format`), or :data:`NO_REPETITIONS` for ``None``."""
    return NO_REPETITIONS if s is None else s.format(digits)


def _time_reps(df: pd.DataFrame, norm: str, pass_: str) -> pd.DataFrame:
    reps = repetition_rows(df)
    if reps.empty or "pass" not in reps.columns:
        return reps
    return reps[(reps["metric"] == "time_ms") & (reps["norm"] == norm) & (reps["pass"] == pass_)]


def layer_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows = normalisers; median fwd / fwd+bwd time (ms) and the time relative to LayerNorm.

    Args:
        df: bench-norms rows (several runs: the mean of a repeated cell).

    Returns:
        Columns ``fwd ms``, ``fwd+bwd ms`` (and when LayerNorm was timed ``fwd / LN``, ``fwd+bwd / LN``, the ratio of
        the median times, each followed by its spread over repetitions, :data:`SPREAD_NOTE`); empty without layer
        timings.
    """
    t = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    if t.empty:
        return pd.DataFrame()
    wide = pivot(t, index="norm", columns="pass")
    passes = list(wide.columns)
    wide = wide.rename(columns={"fwd": "fwd ms", "fwd_bwd": "fwd+bwd ms"})
    if "layernorm" in wide.index:
        for pass_ in passes:
            col = "fwd ms" if pass_ == "fwd" else "fwd+bwd ms" if pass_ == "fwd_bwd" else pass_
            label = col.split()[0]
            wide[f"{label} / LN"] = wide[col] / wide.loc["layernorm", col]
            base = _time_reps(df, "layernorm", pass_)
            wide[f"{label} / LN over repetitions"] = [
                spread_text(paired_ratio_spread(_time_reps(df, norm, pass_), base)) for norm in wide.index]
    return wide


def per_run(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The rows of each run (``run_id``), in the order the runs first appear.

    Derived figures (speed-ups, ratios, slopes) are computed within one run, from the numbers that run measured.

    Args:
        df: rows of one or more runs.

    Returns:
        One frame per run (all rows as one run when there is no ``run_id`` column).
    """
    if "run_id" not in df.columns:
        return [df]
    return [rows for _, rows in df.groupby(df["run_id"].astype(object).fillna(""), sort=False)]


def speedups(df: pd.DataFrame) -> pd.DataFrame:
    """DTN's speed-up over the authors' algorithm: the authors' median layer time over DTN's, per run and pass.

    Args:
        df: bench-norms rows (one or more runs).

    Returns:
        Columns ``pass``, ``batch``, ``value`` and ``spread`` (the :class:`~dtn_bench.stats.Spread` of the
        per-repetition speed-ups over the repetitions both timed, :func:`paired_ratio_spread`; ``None`` when the run
        recorded no repetitions): one row per run and pass that timed both (``fwd`` before ``fwd_bwd``).
    """
    from dtn_bench.bench.norms import AUTHORS

    out = []
    for rows in per_run(df):
        t = rows[(rows["metric"] == "time_ms") & (rows["stat"] == "median")]
        if t.empty or "pass" not in t.columns:
            continue
        med = {(n, p): (v, b) for n, p, v, b in zip(t["norm"], t["pass"], t["value"], t["batch"], strict=True)}
        for pass_ in ("fwd", "fwd_bwd"):
            if ("dtn", pass_) in med and (AUTHORS, pass_) in med:
                dtn, batch = med[("dtn", pass_)]
                out.append({"pass": pass_, "batch": batch, "value": med[(AUTHORS, pass_)][0] / dtn,
                            "spread": paired_ratio_spread(_time_reps(rows, AUTHORS, pass_),
                                                          _time_reps(rows, "dtn", pass_))})
    return pd.DataFrame(out, columns=["pass", "batch", "value", "spread"])


def _throughput_reps(df: pd.DataFrame, model: str) -> pd.DataFrame:
    reps = repetition_rows(df)
    return reps[(reps["metric"] == "throughput_img_s") & (reps["model"] == model)]


def throughput_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """``<model>_dtn / <model>_ln`` inference throughput (``vit_s_dtn / vit_s_ln``), per run and statistic.

    Args:
        df: bench-norms rows (one or more runs).

    Returns:
        Columns ``model``, ``versus``, ``stat``, ``value`` and ``spread`` (the spread of the per-repetition
        throughput ratios, :func:`paired_ratio_spread`, the same beside every statistic; ``None`` without
        repetitions): one row per run, ``*_dtn`` model with its ``*_ln`` pair measured, and statistic (``median``,
        ``best``), in the order the rows measured them.
    """
    out = []
    for rows in per_run(df):
        t = summary_rows(rows[rows["metric"] == "throughput_img_s"])
        tp = {(m, s): v for m, s, v in zip(t["model"], t["stat"], t["value"], strict=True)}
        for (model, stat), value in tp.items():
            base = model[:-4] + "_ln"
            if model.endswith("_dtn") and (base, stat) in tp:
                out.append({"model": model, "versus": base, "stat": stat, "value": value / tp[(base, stat)],
                            "spread": paired_ratio_spread(_throughput_reps(rows, model),
                                                          _throughput_reps(rows, base))})
    return pd.DataFrame(out, columns=["model", "versus", "stat", "value", "spread"])


SUMMARY_SPREAD = "over repetitions"
"""The summary table's column of spreads: median (min-max) over the repetitions, of the figure or of its ratio."""


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """The figures the issue targets: DTN speed-up over the authors' algorithm, model throughput and ratio.

    The speed-up and the ratio are computed from each run's measurements (:func:`speedups`,
    :func:`throughput_ratios`); a figure that several combined runs repeat shows their mean, as in
    :func:`layer_table`. Beside each figure, its spread over repetitions (``over repetitions``): of the
    per-repetition ratios for a speed-up or ratio (repetitions paired within each run, pooled over the runs), of the
    repetitions themselves for a throughput; :data:`NO_REPETITIONS` for runs that kept only summary statistics.

    Args:
        df: bench-norms rows (one or more runs).

    Returns:
        Index ``figure``; columns ``value``, ``unit`` and ``over repetitions`` (empty when the rows hold none of
        these figures).
    """
    from dtn_bench.bench.norms import AUTHORS

    rows, spreads = [], {}
    for r in speedups(df).to_dict("records"):
        figure = f"DTN speed-up vs authors' algorithm ({r['pass']}, batch {int(r['batch'])})"
        rows.append({"figure": figure, "value": r["value"], "unit": "x"})
        at = df[df["batch"] == r["batch"]]
        spreads[figure] = paired_ratio_spread(_time_reps(at, AUTHORS, r["pass"]), _time_reps(at, "dtn", r["pass"]))
    for _, r in df[(df["metric"] == "throughput_img_s") & (df["stat"] == "median")].iterrows():
        figure = (f"{r['model']}{placement_label(r.get('placement'))} inference throughput (batch {int(r['batch'])}, "
                  "fp32 eager)")
        rows.append({"figure": figure, "value": r["value"], "unit": "img/s"})
        spreads[figure] = value_spread(_throughput_reps(df[df["batch"] == r["batch"]], r["model"]))
    for r in throughput_ratios(df).to_dict("records"):
        figure = f"{r['model']} / {r['versus']} throughput ({r['stat']})"
        rows.append({"figure": figure, "value": r["value"], "unit": "x"})
        spreads[figure] = paired_ratio_spread(_throughput_reps(df, r["model"]), _throughput_reps(df, r["versus"]))
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["figure", "unit"], sort=False)["value"].mean().reset_index("unit")[
        ["value", "unit"]]
    table[SUMMARY_SPREAD] = [spread_text(spreads[f]) for f in table.index]
    return table


def _at_shape(df: pd.DataFrame, tokens: int, dim: int, heads: int) -> pd.DataFrame:
    """The layer timing rows (every statistic) at one layer shape."""
    t = df[df["metric"] == "time_ms"]
    if t.empty or not {"tokens", "dim", "heads", "pass"} <= set(t.columns):
        return t.iloc[0:0]
    return t[(t["tokens"] == tokens) & (t["dim"] == dim) & (t["heads"] == heads)]


def _median_ms(df: pd.DataFrame, tokens: int, dim: int, heads: int) -> dict[tuple[str, str], float]:
    """Median layer time (ms) per ``(norm, pass)`` at one layer shape (mean over runs that repeat it)."""
    at = _at_shape(df, tokens, dim, heads)
    at = at[at["stat"] == "median"]
    return {key: float(v) for key, v in at.groupby(["norm", "pass"], sort=False)["value"].mean().items()}


def _comparison_columns(layer: pd.DataFrame) -> list[tuple[str, str]]:
    """``(column, normaliser)`` of the comparison, in order.

    The DTN paper's, then those with a published number in a row block's table (DyT, Derf), then every other
    normaliser the rows measured, by its name here.
    """
    columns = list(PAPER_NORMS)
    taken = {name for _, name in columns}
    for *_, table in COMPARISON_ROWS:
        for (_, name), entry in table.items():
            if name not in taken and entry.value is not None:
                columns.append((name, name))
                taken.add(name)
    return columns + [(n, n) for n in dict.fromkeys(layer["norm"]) if n not in taken]


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """The DTN paper's and the Derf paper's normaliser comparisons with our measurements beside the published numbers.

    Rows ``(model, figure)`` for ViT-S and ViT-S* (the DTN paper's layout) and ViT-B and ViT-L (the Derf README: stock
    timm ViTs, every LayerNorm replaced): the published top-1 (%), ours (``not measured``: this tool does not train
    on ImageNet), and from the rows the median forward and forward + backward time of one layer (ms) and their ratio
    to LayerNorm's, at that model's layer shape (:data:`COMPARISON_ROWS`; any batch), each ratio followed by its
    spread over repetitions (``... time / LN time, over repetitions``: :data:`SPREAD_NOTE`). Columns: the DTN paper's
    normalisers (:data:`PAPER_NORMS`), then those another row block publishes (``dyt``, ``derf``), then every other
    normaliser the rows measured, by its name here.

    Cells: ``not published`` where the row's source has no number, ``not provided`` for a normaliser this package
    does not implement (SN, which the source does not expand), ``not measured`` where the rows hold no number.

    Args:
        df: bench-norms rows.

    Returns:
        The table (object dtype: numbers and those labels).
    """
    from dtn_bench.bench.norms import AUTHORS
    from dtn_bench.norms import NORMS

    implemented = set(NORMS.names()) | {AUTHORS}
    columns = _comparison_columns(df[df["metric"] == "time_ms"])
    records, index = [], []
    for label, key, tokens, dim, heads, table in COMPARISON_ROWS:
        ms = _median_ms(df, tokens, dim, heads)
        at = _at_shape(df, tokens, dim, heads)
        published = []
        for _, name in columns:
            entry = table.get((key, name))
            published.append(NOT_PUBLISHED if entry is None or entry.value is None else float(entry.value))
        records.append(published)
        index.append((label, "top-1 (%), paper"))
        records.append([NOT_MEASURED if name in implemented else NOT_PROVIDED for _, name in columns])
        index.append((label, "top-1 (%), ours"))
        for pass_, text in (("fwd", "fwd"), ("fwd_bwd", "fwd+bwd")):
            times, ratios, spreads = [], [], []
            base = ms.get(("layernorm", pass_))
            base_reps = _time_reps(at, "layernorm", pass_)
            for _, name in columns:
                if name not in implemented:
                    times.append(NOT_PROVIDED)
                    ratios.append(NOT_PROVIDED)
                    spreads.append(NOT_PROVIDED)
                    continue
                value = ms.get((name, pass_))
                times.append(NOT_MEASURED if value is None else value)
                measured = value is not None and base is not None
                ratios.append(value / base if measured else NOT_MEASURED)
                spreads.append(spread_text(paired_ratio_spread(_time_reps(at, name, pass_), base_reps)) if measured
                               else NOT_MEASURED)
            records += [times, ratios, spreads]
            index += [(label, f"{text} ms per layer, ours"), (label, f"{text} time / LN time, ours"),
                      (label, f"{text} time / LN time, ours, over repetitions")]
    return pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["model", "figure"]),
                        columns=[c for c, _ in columns], dtype=object)


def comparison_note(df: pd.DataFrame) -> str:
    """What the comparison's columns and rows are, and the layer shape(s) the rows measured.

    Args:
        df: bench-norms rows.

    Returns:
        One paragraph (below the table in Markdown, in its caption in LaTeX).
    """
    t = df[(df["metric"] == "time_ms") & (df["stat"] == "median")]
    shapes = []
    if not t.empty and {"batch", "tokens", "dim", "heads"} <= set(t.columns):
        for b, tk, d, h in t[["batch", "tokens", "dim", "heads"]].drop_duplicates().itertuples(index=False):
            shapes.append(f"batch {int(b)} x {int(tk)} tokens x {int(d)} channels, {int(h)} heads")
    models = "; ".join(f"{label}: {tokens} tokens x {dim} channels, {heads} heads"
                       for label, _, tokens, dim, heads, _ in COMPARISON_ROWS)
    return ("Columns: the DTN paper's normalisers (LN layernorm, BN batchnorm, IN instancenorm, GN groupnorm, SN not "
            "expanded by the source, ScN scalenorm, PN PowerNorm), then dyt (DyT) and derf (Derf), then the other "
            "normalisers measured here by their names (dtn_authors: the authors' dense DTN algorithm). top-1 (%), "
            f"paper: ImageNet-1k accuracy; ViT-S, ViT-S*: {NORM_COMPARISON_TOP1[('vit_s', 'dtn')].source} (the DTN "
            "paper's layout, the normaliser in blocks 0-9); ViT-B, ViT-L: "
            f"{DERF_IMAGENET_TOP1[('vit_base_patch16_224', 'derf')].source} (stock timm ViTs with every LayerNorm "
            "replaced, final norm included; the layer shape is the 14x14 patch grid, the class token is one more "
            "token); ours: not measured (this tool does not train on ImageNet). ms per layer: median time of one "
            "normaliser layer from these rows (fwd: inference; fwd+bwd: "
            "training pass), shown only where the rows' layer shape is the model's "
            f"({models}; any batch); time / LN time: over LayerNorm's at that shape (the ratio of the median times); "
            f"{SPREAD_NOTE} Measured here: "
            f"{'; '.join(shapes) if shapes else 'no layer timings'}. not provided: not implemented in this package; "
            "not measured: no such row; not published: the paper has no number.")


def render_report(df: pd.DataFrame, fmt: str = "md") -> str:
    """The layer and summary tables and the paper-layout normaliser comparison in one document.

    Args:
        df: bench-norms rows.
        fmt: ``"md"`` (the comparison's note below it) or ``"tex"`` (the note in its caption).

    Returns:
        The document.
    """
    layer_note = f"fwd / LN, fwd+bwd / LN: the ratio of the median times; {SPREAD_NOTE}"
    summary_note = ("value: the speed-up and the throughput ratio from the median (best: the fastest) times of each "
                    "run, the mean over combined runs; over repetitions: median (min-max) of the per-repetition "
                    "speed-ups and ratios (repetition k of one side over repetition k of the other in the same run), "
                    f"of the repetitions themselves for a throughput; {NO_REPETITIONS}: the run kept only summary "
                    "statistics.")
    parts = [render(table, fmt, title=title, note=note, caption=f"{title}. {note}")
             for title, table, note in (("Normaliser time per layer (median)", layer_table(df), layer_note),
                                        ("Summary", summary_table(df), summary_note)) if not table.empty]
    text = "\n\n".join(parts) + "\n"
    note = comparison_note(df)
    comparison = render(comparison_table(df), fmt, title=COMPARISON_TITLE, note=note,
                        caption=f"{COMPARISON_TITLE}. {note}")
    return text + "\n" + comparison


def bar_plot(df: pd.DataFrame):
    """Median fwd and fwd+bwd time per normaliser, log scale.

    Args:
        df: bench-norms rows.

    Returns:
        The matplotlib figure.
    """
    from dtn_bench.plots import grouped_bars

    lt = layer_table(df)
    cols = [c for c in ("fwd ms", "fwd+bwd ms") if c in lt.columns]
    return grouped_bars(lt[cols], ylabel="time per layer (ms, log)", title="Normaliser cost", log=True)
