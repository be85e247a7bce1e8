"""Paper-style ListOps tables and learning curves, rendered from the rows of an ``lra-listops`` run only.

Accuracies are stored as fractions and shown in percent. With several seeds a cell is ``mean ± std`` (sample
standard deviation, n - 1) over the seeds; with one seed it is the number.

Each normaliser is compared with LayerNorm per model (``DTN - LN (95% CI)``): the test accuracies (percent) of the
two are paired by seed (each seed is measured once: ``dtn-bench table listops`` refuses runs that trained the same
seed, :func:`dtn_bench.lra.suite.check_listops`), and the mean of
the paired differences is shown with its 95% interval (:mod:`dtn_bench.stats`: Student t over the paired seeds by
default, the paired percentile bootstrap with ``ci="bootstrap"``), followed by "not significant" when the interval
contains 0. One paired seed gives no interval ("one seed: no interval"); seeds only one of the two normalisers has
are left out and named in a note; two normalisers without a seed in common get "no shared seeds" and a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.results.published import LRA_LISTOPS, LRA_PAPER, NOT_PUBLISHED
from dtn_bench.results.tables import render, setting_text
from dtn_bench.stats import PairedDifference, pair_by_key, paired_bootstrap, paired_t_interval

MODEL_LABELS = {"transformer": "Transformer", "bigbird": "BigBird", "reformer": "Reformer"}
REFERENCE = "layernorm"
"""The normaliser every other one is compared with (``DTN - LN``)."""
CI_METHODS = ("t", "bootstrap")
"""Intervals of the paired differences over seeds: Student t (default) or the paired percentile bootstrap."""
N_BOOT = 10_000
"""Bootstrap resamples (generator seed 0, so a table re-renders identically)."""


def _label(name: str, labels: dict[str, str]) -> str:
    return labels.get(name, name)


def _norm_label(name: str) -> str:
    from dtn_bench.norms import label

    return label(name)


def _accuracy_pct(df: pd.DataFrame, checkpoint: str, split: str) -> pd.DataFrame:
    """The accuracy rows of one checkpoint kind and split, with their value in percent (``pct``)."""
    if df.empty or "checkpoint" not in df.columns:
        return pd.DataFrame(columns=["model", "norm", "pct"])
    sel = df[(df["metric"] == "accuracy") & (df["split"] == split) & (df["checkpoint"] == checkpoint)]
    return sel.assign(pct=sel["value"] * 100)


def seed_accuracies(df: pd.DataFrame, checkpoint: str = "last", split: str = "test") -> pd.DataFrame:
    """The accuracy (%) per ``(model, norm, seed)``: columns ``model``, ``norm``, ``seed``, ``pct``.

    Rows holding a seed twice (which ``dtn-bench table listops`` refuses) would give the mean of the two. Rows without a
    ``seed`` column give no seeds (an empty frame).
    """
    sel = _accuracy_pct(df, checkpoint, split)
    if sel.empty or "seed" not in sel.columns:
        return pd.DataFrame(columns=["model", "norm", "seed", "pct"])
    return sel.groupby(["model", "norm", "seed"], sort=False, as_index=False)["pct"].mean()


def accuracy_stats(df: pd.DataFrame, checkpoint: str = "last", split: str = "test") -> pd.DataFrame:
    """Mean, std and count over seeds of the accuracy (%) per ``(model, norm)`` for one checkpoint kind and split.

    The count and the spread are over distinct seeds (each measured once: ``dtn-bench table listops`` refuses runs
    that trained the same seed).
    """
    sel = _accuracy_pct(df, checkpoint, split)
    if sel.empty:
        return pd.DataFrame(columns=["mean", "std", "n"])
    if "seed" in sel.columns:
        sel = seed_accuracies(df, checkpoint, split)
    g = sel.groupby(["model", "norm"], sort=False)["pct"]
    return pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})


def check_ci(ci: str) -> str:
    """``ci`` when it is one of :data:`CI_METHODS`; otherwise a one-line :class:`DTNBenchError`."""
    if ci not in CI_METHODS:
        raise DTNBenchError(f"--ci {ci!r}: choose {' or '.join(CI_METHODS)}")
    return ci


def _seeds_text(seeds) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


@dataclass(frozen=True)
class SeedComparison:
    """One normaliser against :data:`REFERENCE` for one model: the paired difference of test accuracy over seeds.

    Attributes:
        model: The model (``transformer``...).
        norm: The compared normaliser (side A).
        reference: The normaliser it is compared with (side B, ``layernorm``).
        difference: ``norm - reference`` in accuracy points over the paired seeds, with its interval; ``None`` when
            the two share no seed.
        only_norm: Seeds only ``norm`` has (left out of the difference).
        only_reference: Seeds only ``reference`` has (left out).
    """

    model: str
    norm: str
    reference: str
    difference: PairedDifference | None
    only_norm: tuple = ()
    only_reference: tuple = ()

    def cell(self) -> str:
        """The table cell: the difference with its interval, or why there is none.

        ``"2.00 [0.76, 3.24]"``, ``"2.00 [-10.71, 14.71], not significant"``, ``"1.60 (one seed: no interval)"``
        or ``"no shared seeds"``.
        """
        d = self.difference
        if d is None:
            return "no shared seeds"
        return d.format() + (", not significant" if d.has_interval and not d.significant else "")

    def note(self) -> str | None:
        """What the difference leaves out, naming the seeds without a partner; ``None`` when every seed is paired."""
        if not self.only_norm and not self.only_reference:
            return None
        a, b = _norm_label(self.norm), _norm_label(self.reference)
        sides = [f"{_seeds_text(s)} only in {n}" for n, s in ((a, self.only_norm), (b, self.only_reference)) if s]
        head = f"{_label(self.model, MODEL_LABELS)}, {a} - {b}"
        if self.difference is None:
            return f"{head}: no seed has both ({'; '.join(sides)}), so no difference"
        return f"{head}: {'; '.join(sides)}, left out (unpaired)"


def difference_header(norm: str, reference: str = REFERENCE, ci: str = "t") -> str:
    """The column head of a paired difference: ``DTN - LN (95% CI)``, ``DTN - LN (95% CI, bootstrap)``."""
    method = "" if ci == "t" else f", {ci}"
    return f"{_norm_label(norm)} - {_norm_label(reference)} (95% CI{method})"


def seed_comparisons(df: pd.DataFrame, checkpoint: str = "last", ci: str = "t", split: str = "test",
                     reference: str = REFERENCE) -> list[SeedComparison]:
    """Every normaliser against ``reference`` per model, paired by seed (the module docstring).

    Args:
        df: ListOps rows.
        checkpoint: ``last`` (LRA's rule) or ``best``.
        ci: ``t`` (Student t over the paired seeds) or ``bootstrap`` (paired percentile bootstrap, :data:`N_BOOT`
            resamples, generator seed 0).
        split: The split whose accuracy is compared.
        reference: The normaliser compared with (side B).

    Returns:
        One comparison per model and other normaliser that both it and ``reference`` were measured for, in the rows'
        order.

    Raises:
        DTNBenchError: an unknown ``ci``.
    """
    check_ci(ci)
    seeds = seed_accuracies(df, checkpoint, split)
    out = []
    for model in dict.fromkeys(seeds["model"]):
        part = seeds[seeds["model"] == model]
        by_norm = {n: list(zip(g["seed"], g["pct"], strict=True)) for n, g in part.groupby("norm", sort=False)}
        if reference not in by_norm:
            continue
        for norm, items in by_norm.items():
            if norm == reference:
                continue
            out.append(_compare(model, norm, reference, items, by_norm[reference], ci))
    return out


def _compare(model: str, norm: str, reference: str, items, reference_items, ci: str) -> SeedComparison:
    names = (_norm_label(norm), _norm_label(reference))
    keys, a, b = pair_by_key(items, reference_items, what="seed", names=names, strict=False)
    only_a = tuple(k for k, _ in items if k not in set(keys))
    only_b = tuple(k for k, _ in reference_items if k not in set(keys))
    if not keys:
        return SeedComparison(model, norm, reference, None, only_a, only_b)
    if ci == "bootstrap":
        diff = paired_bootstrap(a, b, n_boot=N_BOOT, seed=0, unit="seed")
    else:
        diff = paired_t_interval(a, b, unit="seed")
    return SeedComparison(model, norm, reference, diff, only_a, only_b)


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


def paper_table(df: pd.DataFrame, checkpoint: str = "last", ci: str = "t") -> pd.DataFrame:
    """The paper-style table: rows Transformer / BigBird / Reformer.

    Columns: test accuracy (%) per normaliser, ``DTN - LN (95% CI)`` (each other normaliser against LayerNorm, paired
    by seed: :func:`seed_comparisons`), and the published numbers (LRA paper for LN; the DTN paper publishes no
    per-model ListOps number: "not published").

    Args:
        df: ListOps rows.
        checkpoint: ``last`` (LRA's rule) or ``best``.
        ci: The interval of the differences, ``t`` or ``bootstrap``.

    Returns:
        The table (empty without test accuracies).
    """
    check_ci(ci)
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
        table[_norm_label(norm)] = pd.Series(col, index=table.index, dtype=object)
    cells = {(c.model, c.norm): c.cell() for c in seed_comparisons(df, checkpoint, ci)}
    for norm in norms:
        if any((m, norm) in cells for m in models):
            diff = [cells.get((m, norm), "-") for m in models]
            table[difference_header(norm, REFERENCE, ci)] = pd.Series(diff, index=table.index, dtype=object)
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
    time and peak memory (means over seeds), and with 1-D DTN runs the largest window truncation bound of their last
    weights (``DTN.truncation_bound``, max over layers, heads and seeds).
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
            "model": _label(m, MODEL_LABELS), "norm": _norm_label(n),
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
        if (df["metric"] == "dtn_truncation_bound").any():
            bound = df[(df["model"] == m) & (df["norm"] == n) & (df["metric"] == "dtn_truncation_bound")]["value"]
            rows[-1]["DTN window bound (max)"] = f"{bound.max():.2g}" if not bound.empty else "-"
    return pd.DataFrame(rows).set_index(["model", "norm"])


def _whole(value: float | str) -> int | str:
    return int(round(value)) if isinstance(value, float) and not math.isnan(value) else value


def _settings_note(df: pd.DataFrame) -> str:
    parts = []
    for col in ("preset", "data", "max_len", "placement"):
        if col in df.columns:
            values = [setting_text(v) for v in pd.unique(df[col].dropna())]
            if values:
                parts.append(f"{col} {', '.join(values)}")
    return "; ".join(parts)


def _method_text(ci: str) -> str:
    if ci == "bootstrap":
        return f"paired percentile-bootstrap interval ({N_BOOT:,} resamples of the seeds)"
    return "Student-t interval (n - 1 degrees of freedom over the n paired seeds)"


def difference_notes(df: pd.DataFrame, checkpoint: str = "last", ci: str = "t") -> list[str]:
    """The notes of a paper table's differences: the seeds left out of a difference for want of a partner.

    One sentence per model and normaliser with unpaired seeds (or no seed in common), naming them.
    """
    return [n for c in seed_comparisons(df, checkpoint, ci) if (n := c.note()) is not None]


def _section(fmt: str, title: str, table: pd.DataFrame, notes: list[str]) -> str:
    """One titled table: the notes below it in Markdown, after its caption in LaTeX."""
    text = " ".join(f"{n}." for n in notes) or None
    if str(fmt).strip().lower() in ("tex", "latex"):
        return render(table, fmt, title=title, caption=f"{title}. {text}" if text else title)
    return render(table, fmt, title=title, note=text)


def render_report(df: pd.DataFrame, fmt: str = "md", ci: str = "t") -> str:
    """The run's document, Markdown or LaTeX.

    The paper-style table (last checkpoint, LRA's rule), the same for the best-validation checkpoint, and the details
    table. Below a paper table (Markdown; in its caption in LaTeX): how its differences were computed (the first)
    and the seeds they leave out (:func:`difference_notes`).

    Args:
        df: ListOps rows.
        fmt: ``md`` or ``tex``.
        ci: The interval of the differences over seeds, ``t`` (Student t) or ``bootstrap``.

    Returns:
        The document.
    """
    check_ci(ci)
    base = majority_accuracy(df)
    note = _settings_note(df)
    title = f"ListOps test accuracy (%), last checkpoint (LRA's rule) - {note}"
    if base is not None:
        title += f"; majority-class baseline {base:.2f}%"
    last = paper_table(df, "last", ci)
    pairs = dict.fromkeys(f"{_norm_label(c.norm)} - {_norm_label(c.reference)}"
                          for c in seed_comparisons(df, "last", ci))
    how = [f"{', '.join(pairs)}: the mean over the seeds both normalisers have of the paired difference in test "
           f"accuracy (points), with its 95% {_method_text(ci)}; \"not significant\": the interval contains 0"
           ] if pairs else []
    sections = [
        (title, last, how + difference_notes(df, "last", ci)),
        ("ListOps test accuracy (%), best-validation checkpoint", paper_table(df, "best", ci),
         difference_notes(df, "best", ci)),
        ("Runs", details_table(df), []),
    ]
    text = "\n\n".join(_section(fmt, t, table, notes) for t, table, notes in sections if not table.empty) + "\n"
    if str(fmt).lower() in ("md", "markdown") and not last.empty:
        text += (f"\nPublished: {LRA_PAPER}, full LRA ListOps (lengths up to 2,000, 5k steps); numbers from another "
                 "preset or data are not comparable with them. The DTN paper reports only a +0.5 to +0.8 point gain "
                 "with BigBird and Reformer, no per-model table.\n")
    return text


def curves_plot(df: pd.DataFrame):
    """Validation accuracy (%) vs step, one panel per model, one line per normaliser.

    The line is the mean over seeds; with several seeds a shaded band spans their minimum to maximum at each step.
    """
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
            curve = part[part["norm"] == norm]
            keys = ["step", "seed"] if "seed" in curve.columns else ["step"]
            per_seed = curve.groupby(keys)["value"].mean().mul(100).reset_index()
            stats = per_seed.groupby("step")["value"].agg(["mean", "min", "max", "count"])
            seeds = int(stats["count"].max())
            label = _norm_label(norm) + (f" (mean, min-max of {seeds} seeds)" if seeds > 1 else "")
            (line,) = ax.plot(stats.index, stats["mean"], marker="o", markersize=2, label=label)
            if seeds > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2,
                                linewidth=0)
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
