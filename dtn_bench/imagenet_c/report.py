"""ImageNet-C reports, rendered from result rows only: summaries, the paper-style table, plots.

The paper-style table has one row per (model, normaliser[, data]): clean error, mCE, relative mCE and the 15 CE
columns grouped Noise / Blur / Weather / Digital (all in percent), a published-mCE column, and a ``DTN - LN`` row
for each architecture evaluated with both. CE needs all 5 severities of its corruption; mCE and relative mCE need
all 15 corruptions (relative ones also a clean error); anything missing shows as an em dash.
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
    SEVERITIES,
    ce,
    mce,
    mean_corruption_error,
    relative_ce,
    relative_mce,
)

SHORT = {
    "gaussian_noise": "Gauss.", "shot_noise": "Shot", "impulse_noise": "Impulse", "defocus_blur": "Defocus",
    "glass_blur": "Glass", "motion_blur": "Motion", "zoom_blur": "Zoom", "snow": "Snow", "frost": "Frost",
    "fog": "Fog", "brightness": "Bright", "contrast": "Contrast", "elastic_transform": "Elastic",
    "pixelate": "Pixel", "jpeg_compression": "JPEG", "speckle_noise": "Speckle", "gaussian_blur": "G. blur",
    "spatter": "Spatter", "saturate": "Saturate",
}
NOTE = ("Percent. CE and mCE: AlexNet-normalised (Hendrycks & Dietterich 2019); relative mCE: mean form with AlexNet "
        f"clean error {ALEXNET_CLEAN_ERROR:.3%} (torchvision); clean err: top-1 error on clean images. CE needs all 5 "
        "severities, mCE all 15 corruptions, relative mCE also a clean error (— otherwise). The DTN paper publishes no "
        "ImageNet-C mCE per model.")


@dataclass
class Summary:
    """ImageNet-C numbers of one (model, norm, data), derived from its per-pair rows.

    Attributes:
        errors: corruption -> severity -> top-1 error (fraction).
        clean_error: clean top-1 error (fraction) or ``None``.
        ce: CE (%) of each corruption with all 5 severities (extras included, labelled by name).
        relative_ce: relative CE (%) where a clean error is known (the 15 only).
        mce: mCE (%) when all 15 corruptions have all 5 severities.
        relative_mce: relative mCE (%) when also a clean error is known.
        mean_corruption_error: unnormalised mean error over the 15 x 5 (fraction), when complete.
        images: images evaluated over all pairs; unreadable: unreadable files over all pairs.
    """

    errors: dict[str, dict[int, float]] = field(default_factory=dict)
    clean_error: float | None = None
    ce: dict[str, float] = field(default_factory=dict)
    relative_ce: dict[str, float] = field(default_factory=dict)
    mce: float | None = None
    relative_mce: float | None = None
    mean_corruption_error: float | None = None
    images: int = 0
    unreadable: int = 0


def _pair_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "corruption" not in df.columns:
        return df.iloc[0:0]
    sel = df[(df["suite"] == "imagenet-c") & df["metric"].isin(["top1_err", "n_images", "n_unreadable"])]
    return sel[sel["severity"].notna()] if "severity" in sel.columns else sel.iloc[0:0]


def summarize(df: pd.DataFrame) -> dict[tuple[str, str, str], Summary]:
    """Summaries keyed ``(model, norm, data)`` from ImageNet-C rows (one run or several combined).

    Repeated rows of one pair (the same run read twice) are averaged.
    """
    rows = _pair_rows(df)
    out: dict[tuple[str, str, str], Summary] = {}
    if rows.empty:
        return out
    data = rows["data"].fillna("ImageNet-C") if "data" in rows.columns else pd.Series("ImageNet-C", rows.index)
    rows = rows.assign(data=data)
    for (model, norm, label), part in rows.groupby(["model", "norm", "data"], sort=False):
        s = Summary()
        top1 = part[part["metric"] == "top1_err"]
        for r in top1.groupby(["corruption", "severity"], sort=False)["value"].mean().items():
            (c, sev), v = r
            if c == "clean":
                s.clean_error = float(v)
            else:
                s.errors.setdefault(str(c), {})[int(sev)] = float(v)
        s.images = int(part.loc[part["metric"] == "n_images", "value"].sum())
        s.unreadable = int(part.loc[part["metric"] == "n_unreadable", "value"].sum())
        complete = {c: [e[k] for k in SEVERITIES] for c, e in s.errors.items() if all(k in e for k in SEVERITIES)}
        for c, errs in complete.items():
            s.ce[c] = ce(c, errs)
            if s.clean_error is not None and c in CORRUPTIONS:
                s.relative_ce[c] = relative_ce(c, errs, s.clean_error)
        if all(c in complete for c in CORRUPTIONS):
            s.mce = mce(complete)
            s.mean_corruption_error = mean_corruption_error(complete)
            if s.clean_error is not None:
                s.relative_mce = relative_mce(complete, s.clean_error)
        out[(str(model), str(norm), str(label))] = s
    return out


def _arch(model: str) -> str:
    from dtn_bench.models import MODELS

    return MODELS.get(model).meta["arch"] if model in MODELS else model


def paper_table(df: pd.DataFrame, *, extra: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """The paper-style table (percent) and the data labels it covers.

    Rows: ``model`` (with ``+norm`` when the norm is not the model's own) and, when runs on different data are
    combined, the data label; a ``<arch>: DTN - LN`` row for each architecture with both a LayerNorm and a DTN row.
    Columns (two levels: group, name): clean err, mCE, rel. mCE, published mCE, 15 CE columns grouped Noise / Blur /
    Weather / Digital, and the extras' CE when present and ``extra``.
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
    for (model, norm, label), s in sums.items():
        own = _own_norm(model)
        name = model if norm in (own, "default") else f"{model}+{norm}"
        pub = published("imagenet_c_mce", (_arch(model), norm)).value
        rec = [_pct(s.clean_error), s.mce, s.relative_mce, "not published" if pub is None else pub]
        rec += [s.ce.get(c) for c in CORRUPTIONS] + [s.ce.get(c) for c in extras]
        records.append(rec)
        index.append((name, label))
        keys.append((_arch(model), norm, label))
    for i, (arch, norm, label) in enumerate(keys):
        if norm != "layernorm":
            continue
        for j, (arch2, norm2, label2) in enumerate(keys):
            if (arch2, norm2, label2) == (arch, "dtn", label):
                diff = [_sub(b, a) for a, b in zip(records[i], records[j], strict=True)]
                diff[3] = None
                records.append(diff)
                index.append((f"{arch}: DTN - LN", label))
    multi = len(labels) > 1
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
    """The paper-style table as Markdown (``md``) or LaTeX (``tex``, booktabs, grouped column headers)."""
    from dtn_bench.results.tables import latex_escape, to_latex, to_markdown

    table, labels = paper_table(df)
    heading = title(labels)
    if fmt == "md":
        return to_markdown(table, floatfmt=floatfmt, title=heading, note=NOTE)
    if fmt != "tex":
        raise DTNBenchError(f"unknown table format {fmt!r}: md or tex")
    flat = table.copy()
    flat.columns = [name for _, name in table.columns]
    tex = to_latex(flat, floatfmt=floatfmt, caption=f"{heading}. {NOTE}", label="tab:imagenet-c")
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
    """Top-1 error (%) per (model, norm, data, corruption) x severity, clean as severity 0."""
    rows = _pair_rows(df)
    rows = rows[rows["metric"] == "top1_err"]
    if rows.empty:
        raise DTNBenchError("no ImageNet-C top1_err rows in the given results")
    rows = rows.assign(value=100.0 * rows["value"], severity=rows["severity"].astype(int))
    from dtn_bench.results.tables import pivot

    return pivot(rows, ["model", "norm", "data", "corruption"], "severity")


def ce_bars(df: pd.DataFrame):
    """Per-corruption CE bars, one bar per model (LN vs DTN side by side); mean error (%) where CE is undefined."""
    from dtn_bench.plots import grouped_bars

    sums = summarize(df)
    if not sums:
        raise DTNBenchError("no ImageNet-C rows to plot")
    use_ce = all(s.ce for s in sums.values())
    cols = {}
    for (model, norm, label), s in sums.items():
        name = model if norm == _own_norm(model) else f"{model}+{norm}"
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
    corruptions = [c for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) if c in set(table.index.get_level_values(3))]
    if not corruptions:
        raise DTNBenchError("no corrupted pairs to plot")
    ncol = min(4, len(corruptions))
    nrow = -(-len(corruptions) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    sevs = [s for s in table.columns if s != 0]
    labels = list(dict.fromkeys(table.index.get_level_values(2)))
    for k, c in enumerate(corruptions):
        ax = axes[k // ncol][k % ncol]
        for (model, norm, label, corr), r in table.iterrows():
            if corr != c:
                continue
            name = model if norm == _own_norm(model) else f"{model}+{norm}"
            line = ax.plot(sevs, [r.get(s) for s in sevs], marker="o", label=name)
            clean = table.loc[(model, norm, label, "clean")] if (model, norm, label, "clean") in table.index else None
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


def write_report(writer) -> None:
    """table.md, table.tex, severity.md, ce_bars.png and severity.png of a run folder, from its rows."""
    df = writer.rows()
    if _pair_rows(df).empty:
        return
    writer.write_text("table.md", render_table(df, "md"))
    writer.write_text("table.tex", render_table(df, "tex"))
    from dtn_bench.plots import _plt

    for name, fig in (("ce_bars.png", ce_bars(df)), ("severity.png", severity_lines(df))):
        writer.savefig(fig, name)
        _plt().close(fig)
