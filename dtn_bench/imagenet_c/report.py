"""ImageNet-C reports, rendered from result rows only: summaries, the paper-style table, plots.

The paper-style table has one row per (model, normaliser[, data], variant): clean error, mCE, relative mCE and the
15 CE columns grouped Noise / Blur / Weather / Digital (all in percent), a published-mCE column, and a ``DTN - LN``
row for each architecture evaluated with both. CE needs all 5 severities of its corruption; mCE and relative mCE
need all 15 corruptions (relative ones also a clean error); anything missing shows as an em dash.

Combining runs: rows of one (model, norm, data) are combined only when they come from the same weights and settings
(:data:`VARIANT_COLUMNS`: checkpoint SHA-256 - or ``random init (seed N)`` -, EMA or raw weights, autocast, resizing).
Each other variant gets its own row, named with a tag: ``vit_t_ln @3fa2c1`` (the checkpoint's first 6 hex digits; only
when the checkpoints differ), ``[random init (seed 0)]`` (always), ``[EMA]`` / ``[raw]``, ``[bf16]`` / ``[resized]``
(when those differ). Runs of
one variant that cover different pairs fill one row together; a pair measured more than once (the same run read
twice, a repeated run) is averaged and its images are counted once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import (
    ALEXNET_CLEAN_ERROR,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    GROUPS,
    ROBUSTBENCH,
    ROBUSTBENCH_SUBSET_LABEL,
    SEVERITIES,
    ce,
    mce,
    mce_over,
    mean_corruption_accuracy,
    mean_corruption_error,
    relative_ce,
    relative_mce,
    robustbench_alexnet_errors,
)
from dtn_bench.results.tables import is_missing

SHORT = {
    "gaussian_noise": "Gauss.", "shot_noise": "Shot", "impulse_noise": "Impulse", "defocus_blur": "Defocus",
    "glass_blur": "Glass", "motion_blur": "Motion", "zoom_blur": "Zoom", "snow": "Snow", "frost": "Frost",
    "fog": "Fog", "brightness": "Bright", "contrast": "Contrast", "elastic_transform": "Elastic",
    "pixelate": "Pixel", "jpeg_compression": "JPEG", "speckle_noise": "Speckle", "gaussian_blur": "G. blur",
    "spatter": "Spatter", "saturate": "Saturate",
}
VARIANT_COLUMNS = ("checkpoint_sha256", "weights", "amp", "allow_resize", "placement")
"""Row columns that tell results of different weights or settings apart; rows that differ in one never mix."""
VARIANT_DEFAULTS = {"checkpoint_sha256": "none", "weights": "raw", "amp": "fp32", "allow_resize": "False",
                    "placement": "pre"}
"""What a missing value of a variant column means (rows of earlier versions; the settings' defaults)."""
PAIR_ROW_METRICS = ("top1_err", "top5_err", "n_images", "n_unreadable")
NOTE = ("Percent. CE and mCE: AlexNet-normalised (Hendrycks & Dietterich 2019); relative mCE: mean form with AlexNet "
        f"clean error {ALEXNET_CLEAN_ERROR:.3%} (torchvision); clean err: top-1 error on clean images. CE needs all 5 "
        "severities, mCE all 15 corruptions, relative mCE also a clean error (— otherwise). The DTN paper publishes no "
        "ImageNet-C mCE per model.")

ROBUSTBENCH_NOTE = (f"Rows marked {ROBUSTBENCH_SUBSET_LABEL!r}: CE and mCE {ROBUSTBENCH} (RobustBench "
                    "model_info/imagenet/corruptions/unaggregated_results.csv, AlexNet row; robustbench/eval.py), as "
                    "RobustBench ranks them; no relative mCE and no extras' CE (RobustBench has no AlexNet figures "
                    "for them).")
"""Added to the note when a table holds runs on RobustBench's 5,000-image list."""

TAG_NOTES = (
    (" @", "@xxxxxx: the first hex digits of the checkpoint's SHA-256 (runs of different checkpoints never mix)."),
    ("[random init", "[random init (seed N)]: no checkpoint, randomly initialised weights (errors near chance)."),
    ("[EMA]", "[EMA] / [raw]: the checkpoint's EMA weights (the default when it has them) or its raw ones (--no-ema)."),
)


@dataclass
class Summary:
    """ImageNet-C numbers of one (model, norm, data), derived from its per-pair rows.

    Attributes:
        errors: corruption -> severity -> top-1 error (fraction).
        clean_error: clean top-1 error (fraction) or ``None``.
        top5_errors: corruption -> severity -> top-5 error (fraction), where measured (models with >= 5 classes).
        clean_top5_error: clean top-5 error (fraction) or ``None`` (not known for a given ``--clean-error``).
        ce: CE (%) of each corruption with all 5 severities (extras included, labelled by name).
        relative_ce: relative CE (%) where a clean error is known (the 15 only).
        mce: mCE (%) when all 15 corruptions have all 5 severities.
        relative_mce: relative mCE (%) when also a clean error is known.
        mean_corruption_error: unnormalised mean error over the 15 x 5 (fraction), when complete.
        mean_corruption_accuracy: ``1 - mean_corruption_error`` (fraction), when complete.
        mean_top5_error: unnormalised mean top-5 error over the 15 x 5 (fraction), when complete.
        images: images evaluated over all pairs; unreadable: unreadable files over all pairs (a pair measured twice
            counts once).
        checkpoint: the weights (``checkpoint_sha256`` of the rows: a SHA-256, ``random init (seed N)`` or ``none``).
        tag: what tells this variant apart in tables (see the module docstring); ``""`` when nothing needs to.
        robustbench: evaluated on RobustBench's 5,000-image list (the data label says so): CE and mCE are then
            normalised by AlexNet's errors on that subset (:func:`~dtn_bench.metrics.robustbench_alexnet_errors`).
    """

    errors: dict[str, dict[int, float]] = field(default_factory=dict)
    clean_error: float | None = None
    ce: dict[str, float] = field(default_factory=dict)
    relative_ce: dict[str, float] = field(default_factory=dict)
    mce: float | None = None
    relative_mce: float | None = None
    mean_corruption_error: float | None = None
    mean_corruption_accuracy: float | None = None
    top5_errors: dict[str, dict[int, float]] = field(default_factory=dict)
    clean_top5_error: float | None = None
    mean_top5_error: float | None = None
    images: int = 0
    unreadable: int = 0
    checkpoint: str = "none"
    tag: str = ""
    robustbench: bool = False


def _pair_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The per-pair rows of ``df`` with a ``data`` label and a ``variant`` tag (see :func:`_tag_variants`)."""
    if df.empty or "corruption" not in df.columns or "severity" not in df.columns:
        return df.iloc[0:0].assign(variant=pd.Series(dtype=object))
    sel = df[(df["suite"] == "imagenet-c") & df["metric"].isin(PAIR_ROW_METRICS) & df["severity"].notna()]
    data = sel["data"].fillna("ImageNet-C") if "data" in sel.columns else pd.Series("ImageNet-C", sel.index)
    sel = sel.assign(data=data.astype(str))
    for col in VARIANT_COLUMNS:
        values = sel[col] if col in sel.columns else pd.Series(None, index=sel.index, dtype=object)
        default = VARIANT_DEFAULTS[col]  # rows written before the column existed
        sel = sel.assign(**{f"_{col}": values.map(lambda v, d=default: d if is_missing(v) else str(v))})
    return _tag_variants(sel)


def _tag_variants(rows: pd.DataFrame) -> pd.DataFrame:
    """Adds ``variant``: the tag telling apart rows of one (model, norm, data) that differ in :data:`VARIANT_COLUMNS`.

    The checkpoint shows as ``@<6 hex>`` (more digits if 6 do not tell the checkpoints apart) when the group holds
    several checkpoints, a random init always as ``[random init (seed N)]``; the weight set (``[EMA]`` / ``[raw]``),
    autocast (``[bf16]``) and resizing (``[resized]``) show when they differ.
    """
    keys = [f"_{c}" for c in VARIANT_COLUMNS]
    tags = pd.Series("", index=rows.index, dtype=object)
    for _, part in rows.groupby(["model", "norm", "data"], sort=False):
        variants = list(part[keys].drop_duplicates().itertuples(index=False, name=None))
        ckpts, sets, amps, resizes = ({v[i] for v in variants} for i in range(4))  # placement: always tagged
        hashes = {c for c in ckpts if c != "none" and not c.startswith("random init")}
        digits = 6
        while len({c[:digits] for c in hashes}) < len(hashes):
            digits += 2
        for variant in variants:
            ckpt, weights, amp, resize, placement = variant
            parts = [f"[{placement}]"] if placement != "pre" else []
            if ckpt.startswith("random init"):
                parts.append(f"[{ckpt}]")
            elif len(ckpts) > 1:
                parts.append(f"@{ckpt[:digits]}" if ckpt in hashes else "[no checkpoint recorded]")
            if len(sets) > 1 and weights != "none":
                parts.append("[EMA]" if weights == "ema" else f"[{weights}]")
            if len(amps) > 1:
                parts.append(f"[{amp or 'fp32'}]")
            if len(resizes) > 1:
                parts.append("[resized]" if resize == "True" else "[not resized]")
            same = (part[keys] == pd.Series(variant, index=keys)).all(axis=1)
            tags[part.index[same.to_numpy()]] = " ".join(parts)
    return rows.assign(variant=tags)


def _mean_per_pair(rows: pd.DataFrame, metric: str) -> dict[tuple[str, int], float]:
    """(corruption, severity) -> the mean of ``metric`` over the rows of that pair (repeats averaged)."""
    sel = rows[rows["metric"] == metric]
    return {(str(c), int(sev)): float(v)
            for (c, sev), v in sel.groupby(["corruption", "severity"], sort=False)["value"].mean().items()}


def summarize(df: pd.DataFrame) -> dict[tuple[str, str, str, str], Summary]:
    """Summaries keyed ``(model, norm, data, variant tag)`` from ImageNet-C rows (one run or several combined).

    Rows that differ in :data:`VARIANT_COLUMNS` (other weights, autocast or resizing) get separate summaries, told
    apart by the tag (``""`` when one variant needs none). Repeated rows of one pair (the same run read twice, a
    repeated run) are averaged and their images counted once. CE, mCE and the means are computed here, with the pure
    functions of :mod:`dtn_bench.metrics`; the rows hold the per-pair measurements only.

    Args:
        df: rows of one or more runs (other suites' rows and metrics are ignored).

    Returns:
        ``{(model, norm, data, tag): Summary}`` in the order the rows first show them.
    """
    rows = _pair_rows(df)
    out: dict[tuple[str, str, str, str], Summary] = {}
    if rows.empty:
        return out
    for (model, norm, label, tag), part in rows.groupby(["model", "norm", "data", "variant"], sort=False):
        s = Summary(checkpoint=str(part["_checkpoint_sha256"].iloc[0] or "none"), tag=str(tag),
                    robustbench=ROBUSTBENCH_SUBSET_LABEL in str(label))
        _measured(s, part)
        _derived(s)
        out[(str(model), str(norm), str(label), str(tag))] = s
    return out


def _measured(s: Summary, part: pd.DataFrame) -> None:
    """The per-pair errors and counts of one variant's rows into ``s`` (the clean set apart)."""
    for (c, sev), v in _mean_per_pair(part, "top1_err").items():
        if c == "clean":
            s.clean_error = v
        else:
            s.errors.setdefault(c, {})[sev] = v
    for (c, sev), v in _mean_per_pair(part, "top5_err").items():
        if c == "clean":
            s.clean_top5_error = v
        else:
            s.top5_errors.setdefault(c, {})[sev] = v
    s.images = round(sum(_mean_per_pair(part, "n_images").values()))
    s.unreadable = round(sum(_mean_per_pair(part, "n_unreadable").values()))


def _complete(errors: dict[str, dict[int, float]]) -> dict[str, list[float]]:
    """The corruptions with all 5 severities, as ``{corruption: [error at severity 1..5]}``."""
    return {c: [e[k] for k in SEVERITIES] for c, e in errors.items() if all(k in e for k in SEVERITIES)}


def _derived(s: Summary) -> None:
    """CE, relative CE, mCE, relative mCE and the unnormalised means of ``s``, where its errors allow them."""
    complete = _complete(s.errors)
    if s.robustbench:  # RobustBench's subset: its AlexNet errors on that subset, the 15 only, no relative mCE
        base = robustbench_alexnet_errors("2d")
        s.ce = {c: mce_over({c: errs}, base, [c]) for c, errs in complete.items() if c in base}
    else:
        for c, errs in complete.items():
            s.ce[c] = ce(c, errs)
            if s.clean_error is not None and c in CORRUPTIONS:
                s.relative_ce[c] = relative_ce(c, errs, s.clean_error)
    if all(c in complete for c in CORRUPTIONS):
        s.mce = mce_over(complete, robustbench_alexnet_errors("2d"), CORRUPTIONS) if s.robustbench else mce(complete)
        s.mean_corruption_error = mean_corruption_error(complete)
        s.mean_corruption_accuracy = mean_corruption_accuracy(complete)
        if s.clean_error is not None and not s.robustbench:
            s.relative_mce = relative_mce(complete, s.clean_error)
    top5 = _complete(s.top5_errors)
    if all(c in top5 for c in CORRUPTIONS):
        s.mean_top5_error = mean_corruption_error(top5)


def display_name(model: str, norm: str, tag: str = "") -> str:
    """``model`` (``model+norm`` when ``norm`` is not the model's own), then the variant tag if any."""
    name = model if norm in (_own_norm(model), "default") else f"{model}+{norm}"
    return f"{name} {tag}" if tag else name


def _arch(model: str) -> str:
    from dtn_bench.models import MODELS

    return MODELS.get(model).meta["arch"] if model in MODELS else model


def paper_table(df: pd.DataFrame, *, extra: bool = True, data_index: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The paper-style table (percent) and the data labels it covers.

    Rows: ``model`` (with ``+norm`` when the norm is not the model's own, and the variant tag when several weights
    or settings are combined, e.g. ``vit_t_ln @3fa2c1``) and, when runs on different data are combined (or with
    ``data_index``), the data label; a ``<arch>: DTN - LN`` row for each architecture and data with exactly one
    LayerNorm and one DTN row. Columns (two levels: group, name): clean err, mCE, rel. mCE, published mCE, 15 CE
    columns grouped Noise / Blur / Weather / Digital, and the extras' CE when present and ``extra``.
    """
    sums = summarize(df)
    if not sums:
        raise DTNBenchError("no ImageNet-C rows (top1_err per corruption and severity) in the given results")
    from dtn_bench.results.published import published

    labels = list(dict.fromkeys(k[2] for k in sums))
    extras = [c for c in EXTRA_CORRUPTIONS if extra and any(c in s.errors for s in sums.values())]
    columns = [("", "clean err"), ("", "mCE"), ("", "rel. mCE"), ("", "published mCE")]
    columns += [(g.capitalize(), SHORT[c]) for g, cs in GROUPS.items() for c in cs]
    columns += [("Extra", SHORT[c]) for c in extras]
    records, index, keys = [], [], []
    for (model, norm, label, tag), s in sums.items():
        name = display_name(model, norm, tag)
        pub = published("imagenet_c_mce", (_arch(model), norm)).value
        rec = [_pct(s.clean_error), s.mce, s.relative_mce, "not published" if pub is None else pub]
        rec += [s.ce.get(c) for c in CORRUPTIONS] + [s.ce.get(c) for c in extras]
        records.append(rec)
        index.append((name, label))
        keys.append((_arch(model), norm, label))
    for i, (arch, norm, label) in enumerate(keys):
        if norm != "layernorm" or keys.count((arch, norm, label)) != 1 or keys.count((arch, "dtn", label)) != 1:
            continue  # several variants of either side: which pair to subtract is not ours to guess
        j = keys.index((arch, "dtn", label))
        diff = [_sub(b, a) for a, b in zip(records[i], records[j], strict=True)]
        diff[3] = None
        records.append(diff)
        index.append((f"{arch}: DTN - LN", label))
    multi = len(labels) > 1 or data_index
    idx = pd.MultiIndex.from_tuples(index, names=["model", "data"]) if multi else pd.Index(
        [n for n, _ in index], name="model")
    table = pd.DataFrame(records, index=idx, columns=pd.MultiIndex.from_tuples(columns), dtype=object)
    return table, labels


def _own_norm(model: str) -> str:
    from dtn_bench.models import MODELS

    return MODELS.get(model).meta["norm"] if model in MODELS else "default"


def _pct(v: float | None) -> float | None:
    return None if v is None else 100.0 * v


def _sub(b, a):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a is not None and b is not None:
        return float(b) - float(a)
    return None


def title(labels: list[str]) -> str:
    """Table title naming the data (``demo data - not ImageNet-C``, subsets) it was measured on."""
    return f"ImageNet-C robustness ({'; '.join(labels)})"


def render_table(df: pd.DataFrame, fmt: str, *, floatfmt: str = ".1f") -> str:
    """The paper-style table as Markdown (``md``), LaTeX (``tex``) or CSV (``csv``).

    LaTeX: booktabs, grouped column headers. CSV: 9 decimals, the published column beside ours, columns
    ``group / name``, the data label always a column.
    """
    from dtn_bench.results.tables import latex_escape, to_csv, to_latex, to_markdown

    if fmt == "csv":
        return to_csv(paper_table(df, data_index=True)[0])
    table, labels = paper_table(df)
    heading = title(labels)
    names = [str(k[0] if isinstance(k, tuple) else k) for k in table.index]
    note = NOTE + ("".join(f" {text}" for mark, text in TAG_NOTES if any(mark in n for n in names)))
    if any(ROBUSTBENCH_SUBSET_LABEL in str(label) for label in labels):
        note += " " + ROBUSTBENCH_NOTE
    if fmt == "md":
        return to_markdown(table, floatfmt=floatfmt, title=heading, note=note)
    if fmt != "tex":
        raise DTNBenchError(f"unknown table format {fmt!r}: md, tex or csv")
    flat = table.copy()
    flat.columns = [name for _, name in table.columns]
    tex = to_latex(flat, floatfmt=floatfmt, caption=f"{heading}. {note}", label="tab:imagenet-c")
    n_index = table.index.nlevels
    cells, rules, col = [""] * n_index, [], n_index + 1
    for group in dict.fromkeys(g for g, _ in table.columns):
        width = sum(1 for g, _ in table.columns if g == group)
        cells.append(rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}" if group else " & ".join(
            [""] * width))
        if group:
            rules.append(rf"\cmidrule(lr){{{col}-{col + width - 1}}}")
        col += width
    header = " & ".join(cells) + r" \\ " + " ".join(rules)
    return tex.replace("\\toprule\n", "\\toprule\n" + header + "\n", 1)


def severity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Top-1 error (%) per (model, norm, data, variant tag, corruption) x severity, clean as severity 0."""
    rows = _pair_rows(df)
    rows = rows[rows["metric"] == "top1_err"]
    if rows.empty:
        raise DTNBenchError("no ImageNet-C top1_err rows in the given results")
    rows = rows.assign(value=100.0 * rows["value"], severity=rows["severity"].astype(int))
    from dtn_bench.results.tables import pivot

    return pivot(rows, ["model", "norm", "data", "variant", "corruption"], "severity")


def ce_bars(df: pd.DataFrame):
    """Per-corruption CE bars, one bar per model (LN vs DTN side by side); mean error (%) where CE is undefined."""
    from dtn_bench.plots import grouped_bars

    sums = summarize(df)
    if not sums:
        raise DTNBenchError("no ImageNet-C rows to plot")
    use_ce = all(s.ce for s in sums.values())
    cols = {}
    for (model, norm, label, tag), s in sums.items():
        name = display_name(model, norm, tag)
        if len(sums) > 1 and len({k[2] for k in sums}) > 1:
            name += f" [{label}]"
        if use_ce:
            cols[name] = {SHORT[c]: v for c, v in s.ce.items()}
        else:
            cols[name] = {SHORT[c]: 100.0 * sum(e.values()) / len(e) for c, e in s.errors.items()}
    table = pd.DataFrame(cols)
    order = [SHORT[c] for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) if SHORT[c] in table.index]
    table = table.reindex(order)
    labels = list(dict.fromkeys(k[2] for k in sums))
    what = "CE (%, AlexNet = 100)" if use_ce else "mean top-1 error over the evaluated severities (%)"
    return grouped_bars(table, ylabel=what, title=f"Per-corruption {what.split(' (')[0]} - {'; '.join(labels)}")


def severity_lines(df: pd.DataFrame):
    """Top-1 error (%) against severity, one panel per corruption, one line per model (clean error dashed)."""
    from dtn_bench.plots import _plt

    plt = _plt()
    table = severity_table(df)
    corruptions = [c for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) if c in set(table.index.get_level_values(4))]
    if not corruptions:
        raise DTNBenchError("no corrupted pairs to plot")
    ncol = min(4, len(corruptions))
    nrow = -(-len(corruptions) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    sevs = [s for s in table.columns if s != 0]
    labels = list(dict.fromkeys(table.index.get_level_values(2)))
    for k, c in enumerate(corruptions):
        ax = axes[k // ncol][k % ncol]
        for (model, norm, label, tag, corr), r in table.iterrows():
            if corr != c:
                continue
            name = display_name(model, norm, tag)
            if len(labels) > 1:
                name += f" [{label}]"
            line = ax.plot(sevs, [r.get(s) for s in sevs], marker="o", label=name)
            key = (model, norm, label, tag, "clean")
            clean = table.loc[key] if key in table.index else None
            if clean is not None and 0 in table.columns:
                ax.axhline(clean[0], ls="--", lw=0.8, color=line[0].get_color())
        ax.set_title(c, fontsize=9)
        ax.set_xticks(sevs)
        ax.grid(alpha=0.3)
    for k in range(len(corruptions), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    axes[0][0].set_ylabel("top-1 error (%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Error vs severity (dashed: clean) - {'; '.join(labels)}", fontsize=10)
    fig.tight_layout()
    return fig
