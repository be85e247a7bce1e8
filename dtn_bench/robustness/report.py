"""Robustness tables and plots, rendered from the rows of ``robustness`` runs (and their per-image bits) only.

Every figure of the main table is a weighted sum of per-pair top-1 errors ``E_{c,s}`` of one run (a normaliser and a
seed), in percent (:func:`columns`):

- ``clean err``: ``100 E_clean``;
- ``mean CE``: ``100 / K * sum E_{c,s}`` over the ``K`` benchmark pairs (the 15 corruptions x the severities;
  unnormalised, as no AlexNet errors exist for CIFAR-10/100-C or Tiny-ImageNet-C); on ImageNet-C the ``mCE``
  instead, ``sum w_{c,s} E_{c,s}`` with the AlexNet weights of :func:`dtn_bench.stats.mce_weights` (= Hendrycks'
  mCE over complete corruptions);
- ``noise`` / ``blur`` / ``weather`` / ``digital``: the mean error over each family's pairs
  (:data:`dtn_bench.metrics.GROUPS`).

A normaliser's cell is the mean ± sample std over its seeds (a seed measured by several runs counts once, with their
mean). Each normaliser is compared with LayerNorm in two ways, both from :mod:`dtn_bench.stats`:

- **over seeds**: the per-seed differences ``d_s = X_s - LN_s`` of the seeds both have, their mean with the Student t
  95% interval (``n - 1`` degrees of freedom); one shared seed gives no interval;
- **over images**: the same figure as a mean over test images of a per-image score ``v_i = sum w_{c,s} wrong_{c,s,i}``
  (so that its mean over images is the figure itself), averaged over the shared seeds, and the paired percentile
  bootstrap of ``mean(v^X - v^LN)`` with the images resampled (:data:`N_BOOT` resamples, generator seed 0): the
  uncertainty from the choice of test images, the trained models held fixed. It needs the runs' per-image bits (kept
  in the run folder's evaluations) on the same images.

"not significant": the interval holds 0. Errors are lower-is-better, so a negative difference favours the normaliser.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dtn_bench.metrics import ALEXNET_ERRORS, CORRUPTIONS, GROUPS
from dtn_bench.results.tables import render

REFERENCE = "layernorm"
NORM_LABELS = {"layernorm": "LN", "dtn": "DTN", "dyt": "DyT", "derf": "Derf", "rmsnorm": "RMSNorm",
               "scalenorm": "ScaleNorm", "batchnorm": "BN", "powernorm": "PowerNorm", "dtn_var": "DTN (var only)",
               "identity": "Identity"}
N_BOOT = 2000
"""Bootstrap resamples of the over-images intervals (generator seed 0: a table re-renders identically)."""
CLEAN = ("clean", 0)


def label(norm: str) -> str:
    """How tables name a normaliser (``LN``, ``DTN``, ``DyT``)."""
    return NORM_LABELS.get(norm, norm)


# ------------------------------------------------------------------------------------------------------------------
# the errors of each run
def eval_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The evaluation errors: ``norm``, ``seed``, ``corruption``, ``severity``, ``err`` (fraction), per run and pair.

    A (norm, seed, pair) measured by several runs counts once, with the mean of its runs.
    """
    if df.empty or "stage" not in df.columns:
        return pd.DataFrame(columns=["norm", "seed", "corruption", "severity", "err"])
    sel = df[(df["stage"] == "evaluate") & (df["metric"] == "top1_err")]
    out = sel.assign(seed=sel["seed"].astype(int), severity=sel["severity"].astype(int), err=sel["value"])
    return out.groupby(["norm", "seed", "corruption", "severity"], sort=False, as_index=False)["err"].mean()


def is_imagenet(df: pd.DataFrame) -> bool:
    """Whether the rows are of ImageNet-C (their headline figure is the AlexNet-normalised mCE)."""
    return "corruption_set" in df.columns and bool((df["corruption_set"] == "ImageNet-C").any())


@dataclass(frozen=True)
class Column:
    """A figure of the main table: ``100 * sum w E`` over its cells (module docstring)."""

    name: str
    weights: dict[tuple[str, int], float]


def columns(cells: Sequence[tuple[str, int]], imagenet: bool = False) -> list[Column]:
    """The main table's figures over the pairs ``cells`` present: clean, mean CE (mCE), each family.

    Weights are in percent per unit error: a column's value is ``sum w E`` with ``E`` a fraction.
    """
    from dtn_bench.stats import mce_weights

    out = []
    if CLEAN in cells:
        out.append(Column("clean err", {CLEAN: 100.0}))
    bench = [c for c in cells if c[0] in CORRUPTIONS]
    if bench:
        if imagenet:
            w = mce_weights(bench, ALEXNET_ERRORS)
            out.append(Column("mCE", dict(zip(bench, w.tolist(), strict=True))))
        else:
            out.append(Column("mean CE", {c: 100.0 / len(bench) for c in bench}))
    for family, names in GROUPS.items():
        part = [c for c in bench if c[0] in names]
        if part:
            out.append(Column(family, {c: 100.0 / len(part) for c in part}))
    return out


def _cells(errors: pd.DataFrame) -> list[tuple[str, int]]:
    cells = list(dict.fromkeys(zip(errors["corruption"], errors["severity"].astype(int), strict=True)))
    order = {c: i for i, c in enumerate(("clean", *CORRUPTIONS))}
    return sorted(cells, key=lambda c: (order.get(c[0], len(order)), c[0], c[1]))


def seed_values(df: pd.DataFrame) -> tuple[pd.DataFrame, list[Column]]:
    """Each run's figures: a frame indexed by ``(norm, seed)`` with one column per :func:`columns` figure.

    A run that lacks a cell of a figure has no value (NaN) for it.
    """
    errors = eval_rows(df)
    cols = columns(_cells(errors), is_imagenet(df))
    if errors.empty:
        return pd.DataFrame(), cols
    table = errors.pivot_table(index=["norm", "seed"], columns=["corruption", "severity"], values="err",
                               sort=False)
    out = pd.DataFrame(index=table.index)
    for col in cols:
        keys = [k for k in col.weights if k in table.columns]
        if len(keys) < len(col.weights):
            out[col.name] = np.nan
            continue
        part = table[keys]
        out[col.name] = (part * np.array([col.weights[k] for k in keys])).sum(axis=1, min_count=len(keys))
    return out, cols


def _summary_cell(values: pd.Series) -> float | str:
    values = values.dropna()
    if values.empty:
        return "-"
    if len(values) == 1:
        return float(values.iloc[0])
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


# ------------------------------------------------------------------------------------------------------------------
# differences from LayerNorm
@dataclass(frozen=True)
class Comparison:
    """One normaliser minus LayerNorm on one figure: over seeds and over images.

    Attributes:
        norm: the normaliser.
        column: the figure.
        seeds: the paired difference over seeds (``None``: no shared seed).
        images: the paired difference over images (``None``: ``images_reason`` says why).
        images_reason: why there is no over-images difference.
        only_norm: seeds only the normaliser has; only_reference: seeds only LayerNorm has.
    """

    norm: str
    column: str
    seeds: object
    images: object
    images_reason: str = ""
    only_norm: tuple = ()
    only_reference: tuple = ()


def cell(difference, reason: str = "") -> str:
    """A difference cell: ``-1.23 [-2.10, -0.36]``, ``0.40 [-0.90, 1.70], not significant``, or why there is none."""
    if difference is None:
        return reason or "no shared seeds"
    text = difference.format()
    return text + (", not significant" if difference.has_interval and not difference.significant else "")


def comparisons(df: pd.DataFrame, runs: Sequence[Path] = (), n_boot: int = N_BOOT) -> list[Comparison]:
    """Every normaliser against LayerNorm on every figure (the module docstring); ``runs``: folders with the bits."""
    from dtn_bench.stats import pair_by_key, paired_t_interval

    values, cols = seed_values(df)
    if values.empty or REFERENCE not in values.index.get_level_values("norm"):
        return []
    bits = run_bits(df, runs)
    out = []
    for norm in dict.fromkeys(values.index.get_level_values("norm")):
        if norm == REFERENCE:
            continue
        for col in cols:
            a = values.loc[norm, col.name].dropna()
            b = values.loc[REFERENCE, col.name].dropna()
            seeds, va, vb = pair_by_key(a.items(), b.items(), strict=False)
            seeds_diff = paired_t_interval(va, vb, unit="seed") if seeds else None
            images, reason = _image_difference(bits, norm, seeds, col, n_boot)
            out.append(Comparison(norm, col.name, seeds_diff, images, reason,
                                  tuple(s for s in a.index if s not in seeds),
                                  tuple(s for s in b.index if s not in seeds)))
    return out


# ------------------------------------------------------------------------------------------------------------------
# per-image bits
def _run_folders(runs: Sequence[Path], run_ids: set[str]) -> dict[str, Path]:
    """Run id -> its folder, for the robustness runs under ``runs`` (run folders, rows files or folders of runs)."""
    from dtn_bench.results.io import _rows_files

    found: dict[str, Path] = {}
    for path in runs:
        for file in _rows_files(Path(path)):
            if file.parent.name in run_ids:
                found.setdefault(file.parent.name, file.parent)
    return found


def run_bits(df: pd.DataFrame, runs: Sequence[Path]) -> dict[tuple[str, int], object]:
    """``(norm, seed)`` -> the :class:`~dtn_bench.shifts.correctness.RunBits` of its evaluation (first found)."""
    from dtn_bench.shifts.correctness import read_run

    if not runs or "evaluation" not in df.columns:
        return {}
    sel = df[(df["stage"] == "evaluate") & (df["evaluation"].fillna("-") != "-")]
    folders = _run_folders(runs, set(map(str, sel["run_id"].dropna())))
    out: dict[tuple[str, int], object] = {}
    for (norm, seed, run_id, evaluation), _ in sel.groupby(["norm", "seed", "run_id", "evaluation"], sort=False):
        key = (str(norm), int(seed))
        if key in out or str(run_id) not in folders:
            continue
        bits = read_run(folders[str(run_id)] / str(evaluation))
        if bits is not None:
            out[key] = bits
    return out


def _scores(bits, col: Column) -> tuple[np.ndarray, set[str]] | None:
    """Per-image ``v_i = sum w wrong_i`` of one run, and the image lists it covers (``None``: a cell is missing)."""
    if any(k not in bits.pairs for k in col.weights):
        return None
    total = None
    for key, w in col.weights.items():
        wrong = ~bits.correct(key)
        total = w * wrong if total is None else total + w * wrong
    return total, {bits.pairs[k].images_sha256 for k in col.weights}


def _image_difference(bits: dict, norm: str, seeds: list, col: Column, n_boot: int):
    """The over-images paired bootstrap of ``col`` (``(difference, "")`` or ``(None, reason)``)."""
    from dtn_bench.stats import paired_bootstrap

    if not seeds:
        return None, "no shared seeds"
    per_a, per_b, images = [], [], set()
    for s in seeds:
        if (norm, s) not in bits or (REFERENCE, s) not in bits:
            return None, "no per-image data"
        a, b = _scores(bits[(norm, s)], col), _scores(bits[(REFERENCE, s)], col)
        if a is None or b is None:
            return None, "no per-image data"
        images |= a[1] | b[1]
        per_a.append(a[0])
        per_b.append(b[0])
    if len(images) != 1 or len({len(x) for x in per_a + per_b}) != 1:
        return None, "not the same images"
    return paired_bootstrap(np.mean(per_a, axis=0), np.mean(per_b, axis=0), n_boot=n_boot, seed=0,
                            unit="image"), ""


# ------------------------------------------------------------------------------------------------------------------
# tables
def main_table(df: pd.DataFrame, runs: Sequence[Path] = ()) -> pd.DataFrame:
    """The paper-style table: a row per normaliser (mean ± std over seeds) and two per difference from LayerNorm."""
    values, cols = seed_values(df)
    if values.empty:
        return pd.DataFrame()
    names = [c.name for c in cols]
    rows: dict[str, dict] = {}
    for norm in dict.fromkeys(values.index.get_level_values("norm")):
        part = values.loc[norm]
        rows[label(norm)] = {"n": f"{len(part)} seed{'s' if len(part) > 1 else ''}",
                             **{c: _summary_cell(part[c]) for c in names}}
    found = comparisons(df, runs)
    for norm in dict.fromkeys(c.norm for c in found):
        mine = {c.column: c for c in found if c.norm == norm}
        head = f"{label(norm)} - {label(REFERENCE)}"
        n_seeds = next((c.seeds.n for c in mine.values() if c.seeds is not None), 0)
        n_images = next((c.images.n for c in mine.values() if c.images is not None), None)
        rows[f"{head}, over seeds (t 95%)"] = {"n": f"{n_seeds} seeds",
                                               **{c: cell(mine[c].seeds) if c in mine else "-" for c in names}}
        rows[f"{head}, over images (bootstrap 95%)"] = {
            "n": f"{n_images} images" if n_images else "-",
            **{c: cell(mine[c].images, mine[c].images_reason) if c in mine else "-" for c in names}}
    table = pd.DataFrame.from_dict(rows, orient="index").astype(object)
    table.index.name = "normaliser"
    return table.rename(columns={c: f"{c} (%)" if c in ("clean err", "mean CE", "mCE") else c for c in names})


def corruption_table(df: pd.DataFrame) -> pd.DataFrame:
    """Each corruption's mean top-1 error (%) over its severities, per normaliser (mean over seeds)."""
    errors = eval_rows(df)
    errors = errors[errors["corruption"] != "clean"]
    if errors.empty:
        return pd.DataFrame()
    per_seed = errors.groupby(["norm", "seed", "corruption"], sort=False)["err"].mean().mul(100).reset_index()
    table = per_seed.pivot_table(index="norm", columns="corruption", values="err", sort=False)
    order = [c for c in (*CORRUPTIONS, *sorted(set(table.columns) - set(CORRUPTIONS))) if c in table.columns]
    table = table[order]
    table.index = [label(n) for n in table.index]
    table.index.name = "normaliser"
    return table


def training_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per normaliser: the last epoch's validation top-1 (%) of the raw and EMA weights, epochs, training time."""
    if df.empty or "stage" not in df.columns:
        return pd.DataFrame()
    train = df[df["stage"] == "train"]
    acc = train[train["metric"] == "top1_acc"]
    if acc.empty:
        return pd.DataFrame()
    rows = {}
    for norm, g in acc.groupby("norm", sort=False):
        last = g[g["epoch"] == g.groupby("seed")["epoch"].transform("max")]
        row: dict = {"seeds": int(g["seed"].nunique()), "epochs": int(g["epoch"].max()) + 1}
        for weights in ("raw", "ema"):
            part = last[last["weights"] == weights].groupby("seed")["value"].mean().mul(100)
            if not part.empty:
                row[f"val top-1 {weights} (%)"] = _summary_cell(part)
        time_s = train[(train["norm"] == norm) & (train["metric"] == "train_time_s")]
        if not time_s.empty:
            row["train time per run (s)"] = float(time_s.groupby("seed")["value"].sum().mean())
        rows[label(str(norm))] = row
    table = pd.DataFrame.from_dict(rows, orient="index").astype(object)
    table.index.name = "normaliser"
    return table


def _first(df: pd.DataFrame, column: str) -> str:
    if column not in df.columns:
        return "-"
    values = [str(v) for v in pd.unique(df[column].dropna()) if str(v) != "-"]
    return "; ".join(values) if values else "-"


def _notes(df: pd.DataFrame, found: list[Comparison]) -> list[str]:
    ev = df[df["stage"] == "evaluate"] if "stage" in df.columns else df.iloc[:0]
    weights = _first(ev, "weights")
    headline = "mCE: the AlexNet-normalised mean corruption error (Hendrycks & Dietterich)" if is_imagenet(df) else \
        "mean CE: the mean top-1 error over the corruption x severity pairs (unnormalised: no AlexNet errors exist " \
        "for this set)"
    notes = [f"Top-1 error (%) of the {weights} weights; clean err: the clean test split; {headline}; noise, blur, "
             "weather, digital: the mean error of each family's pairs; mean ± std over seeds",
             f"X - LN over seeds: the mean per-seed difference with its Student t 95% interval; over images: the same "
             f"difference with the test images resampled (paired percentile bootstrap, {N_BOOT:,} resamples; "
             "per-image errors averaged over the shared seeds, the trained models held fixed); 'not significant': the "
             "interval holds 0; negative: fewer errors than LayerNorm"]
    seen = set()
    for c in found:
        if (c.only_norm or c.only_reference) and c.norm not in seen:
            seen.add(c.norm)
            sides = [f"seeds {', '.join(map(str, s))} only in {n}" for n, s in
                     ((label(c.norm), c.only_norm), (label(REFERENCE), c.only_reference)) if s]
            notes.append(f"{label(c.norm)} - {label(REFERENCE)}: {'; '.join(sides)}, left out (unpaired)")
    return notes


def _title(df: pd.DataFrame) -> str:
    ev = df[df["stage"] == "evaluate"] if "stage" in df.columns else df
    return (f"Robustness of {_first(ev, 'model')} ({_first(ev, 'preset')} preset) on {_first(ev, 'data')}: "
            "top-1 error (%)")


def _section(fmt: str, title: str, table: pd.DataFrame, notes: list[str]) -> str:
    text = " ".join(f"{n}." for n in notes) or None
    if str(fmt).lower() in ("tex", "latex"):
        return render(table, fmt, title=title, caption=f"{title}. {text}" if text else title)
    return render(table, fmt, title=title, note=text)


def render_report(df: pd.DataFrame, fmt: str = "md", runs: Sequence[Path] = ()) -> str:
    """The run's document (Markdown or LaTeX): the main table, each corruption's error, the training."""
    found = comparisons(df, runs)
    sections = [(_title(df), main_table(df, runs), _notes(df, found)),
                ("Top-1 error (%) per corruption (mean over severities and seeds)", corruption_table(df), []),
                (f"Training ({_first(df[df['stage'] == 'train'] if 'stage' in df else df, 'recipe')} recipe, "
                 f"{_first(df[df['stage'] == 'train'] if 'stage' in df else df, 'data')}): validation top-1 of the "
                 "last epoch (mean ± std over seeds)", training_table(df), [])]
    return "\n\n".join(_section(fmt, t, table, notes) for t, table, notes in sections if not table.empty) + "\n"


def difference_table(found: Sequence[Comparison]) -> pd.DataFrame:
    """The differences from LayerNorm in long form (a row per normaliser and figure; the console's narrow view)."""
    rows = [{"difference": f"{label(c.norm)} - {label(REFERENCE)}", "figure": c.column,
             "over seeds (t 95%)": cell(c.seeds), "over images (bootstrap 95%)": cell(c.images, c.images_reason)}
            for c in found]
    return pd.DataFrame(rows).set_index("difference") if rows else pd.DataFrame()


def console(df: pd.DataFrame, runs: Sequence[Path] = ()) -> list:
    """The normalisers' figures, their differences from LayerNorm (long form), the training table, the notes."""
    from dtn_bench.runner import ConsoleTable

    table = main_table(df, runs)
    if table.empty:
        return []
    found = comparisons(df, runs)
    per_norm = table[~table.index.str.contains(f" - {label(REFERENCE)}, ", regex=False)]
    out: list = [ConsoleTable.from_frame(per_norm, _title(df), "normaliser")]
    differences = difference_table(found)
    if not differences.empty:
        out.append(ConsoleTable.from_frame(differences, "Paired differences from LayerNorm (percentage points; "
                                           "negative: fewer errors)", "difference"))
    train = training_table(df)
    if not train.empty:
        out.append(ConsoleTable.from_frame(train, "Training: validation top-1 of the last epoch", "normaliser"))
    return out + _notes(df, found)


# ------------------------------------------------------------------------------------------------------------------
# plots
def _band(ax, frame: pd.DataFrame, x: str, name: str, **style) -> None:
    """Mean over seeds of ``value`` against ``x``, with the min-max band when there are several seeds."""
    per_seed = frame.groupby([x, "seed"])["value"].mean().reset_index()
    stats = per_seed.groupby(x)["value"].agg(["mean", "min", "max", "count"])
    seeds = int(stats["count"].max()) if len(stats) else 0
    text = name + (f" (mean, min-max of {seeds} seeds)" if seeds > 1 else "")
    (line,) = ax.plot(stats.index, stats["mean"], label=text, **style)
    if seeds > 1:
        ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2, linewidth=0)


def curves_plot(df: pd.DataFrame):
    """Learning curves per normaliser: validation top-1 (EMA weights when there are) and training loss per epoch."""
    from dtn_bench.plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    train = df[df["stage"] == "train"] if "stage" in df.columns else df.iloc[:0]
    acc = train[train["metric"] == "top1_acc"]
    weights = "ema" if (acc.get("weights") == "ema").any() else "raw"
    for norm in dict.fromkeys(train["norm"]):
        mine = train[train["norm"] == norm]
        a = mine[(mine["metric"] == "top1_acc") & (mine["weights"] == weights)]
        _band(axes[0], a.assign(value=a["value"] * 100, epoch=a["epoch"] + 1), "epoch", label(norm))
        loss = mine[(mine["metric"] == "loss") & (mine["split"] == "train")]
        _band(axes[1], loss.assign(epoch=loss["epoch"] + 1), "epoch", label(norm))
    for ax, title, ylabel in ((axes[0], f"validation top-1 ({weights} weights)", "top-1 (%)"),
                              (axes[1], "training loss", "loss (nat)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(f"Learning curves: {_first(train, 'data')}", fontsize=9)
    fig.tight_layout()
    return fig


def severity_plot(df: pd.DataFrame):
    """Top-1 error (%) against severity (0: clean) per normaliser: mean over corruptions, band over seeds."""
    from dtn_bench.plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    errors = eval_rows(df)
    errors = errors[errors["corruption"].isin(("clean", *CORRUPTIONS))]
    for norm in dict.fromkeys(errors["norm"]):
        mine = errors[errors["norm"] == norm]
        per_seed = mine.groupby(["severity", "seed"])["err"].mean().mul(100).reset_index(name="value")
        _band(ax, per_seed, "severity", label(norm), marker="o", markersize=3)
    ax.set_xlabel("severity (0: clean)")
    ax.set_ylabel("top-1 error (%)")
    ax.set_title(f"Error by severity: {_first(df[df['stage'] == 'evaluate'] if 'stage' in df else df, 'data')}",
                 fontsize=8)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def diagnostics_plot(df: pd.DataFrame):
    """The normalisers' diagnostics per epoch (DTN gates, alpha, saturation): mean over layers, band over seeds."""
    from dtn_bench.train.report import diagnostic_panels

    def draw(ax, sel):
        for norm in dict.fromkeys(sel["norm"]):
            mine = sel[sel["norm"] == norm]
            layers = mine.groupby(["epoch", "seed"])["value"].mean().reset_index()
            _band(ax, layers.assign(epoch=layers["epoch"] + 1), "epoch", f"{label(norm)} (mean over layers)")
        ax.legend(fontsize=7)

    train = df[df["stage"] == "train"] if "stage" in df.columns else df.iloc[:0]
    return diagnostic_panels(train, draw, empty="no DTN or point-wise normaliser in these runs: no diagnostics",
                             panel=(4.5, 3.8))


def _report():
    from dtn_bench.runner import Report

    return Report(render_report, main_table, "robustness table (evaluation rows)",
                  {"curves.png": curves_plot, "severity.png": severity_plot, "diagnostics.png": diagnostics_plot},
                  settings=((("model", "data", "recipe", "corruption_set", "preset"), ("stage",)),),
                  console=console, runs=True)


REPORT = _report()
"""The suite's :class:`~dtn_bench.runner.Report`: the documents take the run folders (for the per-image bits)."""
