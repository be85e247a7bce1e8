"""CIFAR-10-C / CIFAR-100-C / Tiny-ImageNet-C reports, rendered from the rows only.

For these datasets no AlexNet (or other baseline) errors exist, so there is no normalised CE or mCE: the figures are
unnormalised, as RobustBench and Hendrycks' CIFAR / Tiny-ImageNet test scripts report them:

- per pair: top-1 error ``E(c, s)`` (fraction; tables in percent);
- per corruption: the mean error over its evaluated severities;
- **mean corruption error**: the mean of ``E(c, s)`` over every evaluated pair of the 15 benchmark corruptions (the
  4 extras are shown per corruption, never in the mean); **mean corruption accuracy** = 1 - it. Complete only with
  all 15 x 5 pairs (tables say how many pairs it covers otherwise);
- clean error / accuracy, when a clean array was evaluated (pair ``("clean", 0)``).

Rows of one (model, norm, data) that differ in their weights or autocast (``checkpoint_sha256``, ``weights``,
``amp``) get separate summaries; a pair measured twice is averaged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import CORRUPTIONS, EXTRA_CORRUPTIONS, SEVERITIES

SUITE = "cifar-c"
VARIANT_COLUMNS = ("checkpoint_sha256", "weights", "amp", "placement")
NOTE = ("Percent, unnormalised: no AlexNet normalisation exists for CIFAR-10-C, CIFAR-100-C or Tiny-ImageNet-C, so "
        "there is no CE / mCE; mean corr. err is the mean top-1 error over the evaluated pairs of the 15 corruptions "
        "(extras never in it), as RobustBench reports; corruption columns: mean error over the evaluated severities.")


@dataclass
class Summary:
    """The numbers of one (model, norm, data, variant), derived from its per-pair rows.

    Attributes:
        errors: corruption -> severity -> top-1 error (fraction).
        clean_error: clean top-1 error (fraction) or ``None``.
        corruption_errors: corruption -> mean error over its evaluated severities (fraction).
        mean_corruption_error: mean error over the evaluated pairs of the 15 (fraction), or ``None``.
        mean_corruption_accuracy: ``1 - mean_corruption_error``.
        pairs: how many pairs of the 15 the mean covers; complete: all 15 x 5.
        images: images over all pairs.
    """

    errors: dict[str, dict[int, float]] = field(default_factory=dict)
    clean_error: float | None = None
    corruption_errors: dict[str, float] = field(default_factory=dict)
    mean_corruption_error: float | None = None
    mean_corruption_accuracy: float | None = None
    pairs: int = 0
    complete: bool = False
    images: int = 0

    @property
    def clean_accuracy(self) -> float | None:
        """``1 - clean_error``, when known."""
        return None if self.clean_error is None else 1.0 - self.clean_error


def _pair_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "corruption" not in df.columns:
        return df.iloc[0:0]
    sel = df[(df["suite"] == SUITE) & df["metric"].isin(("top1_err", "n_images")) & df["severity"].notna()]
    variant = pd.Series("", index=sel.index, dtype=object)
    for col in VARIANT_COLUMNS:
        if col in sel.columns:
            variant = variant + "|" + sel[col].astype(str)
    return sel.assign(variant=variant, data=sel["data"].astype(str) if "data" in sel.columns else "")


def summarize(df: pd.DataFrame) -> dict[tuple[str, str, str, str], Summary]:
    """Summaries keyed ``(model, norm, data, variant)`` (``variant``: the weights / autocast columns joined)."""
    rows = _pair_rows(df)
    out: dict[tuple[str, str, str, str], Summary] = {}
    for key, part in rows.groupby(["model", "norm", "data", "variant"], sort=False):
        s = Summary()
        means = part.groupby(["metric", "corruption", "severity"], sort=False)["value"].mean()
        for (metric, c, sev), v in means.items():
            if metric == "n_images":
                s.images += round(v)
            elif c == "clean":
                s.clean_error = float(v)
            else:
                s.errors.setdefault(str(c), {})[int(sev)] = float(v)
        _derive(s)
        out[tuple(str(k) for k in key)] = s
    return out


def _derive(s: Summary) -> None:
    s.corruption_errors = {c: sum(e.values()) / len(e) for c, e in s.errors.items()}
    bench = [v for c in CORRUPTIONS for v in s.errors.get(c, {}).values()]
    s.pairs = len(bench)
    s.complete = s.pairs == len(CORRUPTIONS) * len(SEVERITIES)
    if bench:
        s.mean_corruption_error = sum(bench) / len(bench)
        s.mean_corruption_accuracy = 1.0 - s.mean_corruption_error


def _name(model: str, norm: str, variant: str, variants: int) -> str:
    from dtn_bench.models.small import own_norm

    name = model if norm in (own_norm(model), "default") else f"{model}+{norm}"
    if variant.endswith(("|post", "|peri")):  # placement, the last variant column, when not pre
        name += f" [{variant.rsplit('|', 1)[1]}]"
    if variants > 1:
        ckpt = variant.split("|")[1] if variant.count("|") >= 1 else ""
        name += f" @{ckpt[:6]}" if ckpt and not ckpt.startswith("random") else f" [{ckpt}]"
    return name


def _order(cs) -> list[str]:
    return [c for c in (*CORRUPTIONS, *EXTRA_CORRUPTIONS) if c in cs] + sorted(
        c for c in cs if c not in CORRUPTIONS and c not in EXTRA_CORRUPTIONS)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, data): clean err / acc, mean corr. err / acc, pairs, per-corruption mean error (%)."""
    sums = summarize(df)
    if not sums:
        raise DTNBenchError("no cifar-c rows (top1_err per corruption and severity) in the given results")
    corrs = _order({c for s in sums.values() for c in s.errors})
    per = {}
    for k in sums:
        per.setdefault(k[:3], []).append(k)
    records, index = [], []
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    for (model, norm, data, variant), s in sums.items():
        rec = {"clean err": pct(s.clean_error), "clean acc": pct(s.clean_accuracy),
               "mean corr. err": pct(s.mean_corruption_error), "mean corr. acc": pct(s.mean_corruption_accuracy),
               "pairs": f"{s.pairs}/75" + ("" if s.complete else " (incomplete)")}
        rec.update({c: pct(s.corruption_errors.get(c)) for c in corrs})
        records.append(rec)
        index.append((_name(model, norm, variant, len(per[(model, norm, data)])), data))
    return pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["model", "data"]), dtype=object)


def pair_table(df: pd.DataFrame) -> pd.DataFrame:
    """Top-1 error (%) per (model, data, corruption) x severity (``clean`` as severity 0)."""
    sums = summarize(df)
    if not sums:
        raise DTNBenchError("no cifar-c rows (top1_err per corruption and severity) in the given results")
    per = {}
    for k in sums:
        per.setdefault(k[:3], []).append(k)
    records, index = [], []
    for (model, norm, data, variant), s in sums.items():
        name = _name(model, norm, variant, len(per[(model, norm, data)]))
        if s.clean_error is not None:
            records.append({0: 100.0 * s.clean_error})
            index.append((name, data, "clean"))
        for c in _order(s.errors):
            records.append({sev: 100.0 * v for sev, v in sorted(s.errors[c].items())})
            index.append((name, data, c))
    table = pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["model", "data", "corruption"]))
    return table.reindex(columns=sorted(table.columns)).astype(object)


def render(df: pd.DataFrame, fmt: str) -> str:
    """The summary and the per-pair tables as Markdown (``md``) or LaTeX (``tex``), with the normalisation note."""
    from dtn_bench.results.tables import to_latex, to_markdown

    summary, pairs = summary_table(df), pair_table(df)
    labels = "; ".join(dict.fromkeys(summary.index.get_level_values("data")))
    if fmt == "md":
        return (to_markdown(summary, floatfmt=".2f", title=f"Corruption robustness ({labels})", note=NOTE) + "\n\n"
                + to_markdown(pairs, floatfmt=".2f", title="Top-1 error (%) per corruption and severity"))
    if fmt == "tex":
        return (to_latex(summary, floatfmt=".2f", caption=f"Corruption robustness ({labels}). {NOTE}",
                         label="tab:cifar-c") + "\n"
                + to_latex(pairs, floatfmt=".2f", caption="Top-1 error (\\%) per corruption and severity",
                           label="tab:cifar-c-pairs"))
    raise DTNBenchError(f"unknown table format {fmt!r}: md or tex")


def console(df: pd.DataFrame) -> list:
    """The console summaries after a run: the per-pair table, the summary table and the note."""
    from dtn_bench.runner import ConsoleTable

    pairs = pair_table(df)
    pairs.index = [" / ".join(map(str, k)) for k in pairs.index]
    summary = summary_table(df)
    summary.index = [" / ".join(map(str, k)) for k in summary.index]
    return [ConsoleTable.from_frame(pairs.map(_cell), "Top-1 error (%) per corruption and severity",
                                    "model / data / corruption"),
            ConsoleTable.from_frame(summary.map(_cell), "Corruption robustness (%)", "model / data"), NOTE]


def _cell(v) -> str:
    if v is None or isinstance(v, float) and v != v:
        return "—"
    return f"{v:.2f}" if isinstance(v, float) else str(v)
