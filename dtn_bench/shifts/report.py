"""The ``shifts`` report, rendered from the rows only: one table across sets, and the paired comparison of models.

For each model (one row per weights / settings variant) the table shows its clean top-1 on ImageNet val, then for
each set its headline metric and its drop from clean:

- a set of one split (ImageNet-A, -R, -Sketch, -V2): its top-1 accuracy (%);
- a corruption set: its mCE where a normalisation exists and every benchmark pair was evaluated - ImageNet-C by
  AlexNet's full-set errors (:data:`~dtn_bench.metrics.HENDRYCKS`), or by AlexNet's errors on RobustBench's
  5,000-image subset when the run evaluated that list (:data:`~dtn_bench.metrics.ROBUSTBENCH`; ImageNet-3DCC only
  then) - else its unnormalised mean top-1 error (%); every mCE column is labelled with its normalisation;
- ``Δtop-1``: the set's top-1 (a corruption set: its mean accuracy over the pairs evaluated) minus the clean top-1,
  percent points, as timm's ``top1_diff`` (``results/generate_csv_results.py``); ImageNet-A and -R against clean val
  over the same 200 classes scored through the same mask (timm's ``results-imagenet-{a,r}-clean.csv``).

The per-set table adds the images, top-5, the transform each set went through and the classes it was scored on.
With two or more models, :func:`documents` gives the paired bootstrap 95% interval of each model's difference from
the first given, over the images both runs hold (their per-image bits, :mod:`dtn_bench.shifts.correctness`): top-1
for a split, the mCE (or the mean accuracy) for a corruption set (:mod:`dtn_bench.stats`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import HENDRYCKS, ROBUSTBENCH, ROBUSTBENCH_SUBSET_LABEL, SEVERITIES, UNNORMALISED, mce_over
from dtn_bench.results.tables import is_missing
from dtn_bench.runner import ConsoleTable, Report
from dtn_bench.shifts.sets import NO_CORRUPTION, SETS

SUITE = "shifts"
VAL = "imagenet-val"
VARIANT_COLUMNS = ("checkpoint_sha256", "weights", "amp", "allow_resize", "subset", "placement")
"""Row columns that tell results of different weights or settings apart (rows that differ in one never mix)."""
DEFAULT_N_BOOT = 1000
DELTA = "Δtop-1"
MASKED = frozenset(s.classes for s in SETS.values() if s.subset_of_1k)
"""The label spaces scored through a mask (ImageNet-A 200, ImageNet-R 200)."""


@dataclass
class SetResult:
    """One set's numbers for one model (fractions unless said).

    Attributes:
        set: the set's name.
        classes: the label space it was scored in.
        errors: ``(corruption, severity) -> (top-1 error, top-5 error or None, images)``.
        transform: how its images went in.
        subset: which images (``full``, a subset, RobustBench's list).
    """

    set: str
    classes: str
    errors: dict[tuple[str, int], tuple[float, float | None, int]] = field(default_factory=dict)
    transform: str = ""
    subset: str = "full"

    @property
    def split(self) -> bool:
        """Whether the set is one split."""
        return (NO_CORRUPTION, 0) in self.errors

    @property
    def images(self) -> int:
        """Images over its units."""
        return sum(n for _, _, n in self.errors.values())

    def benchmark_errors(self) -> dict[str, dict[int, float]]:
        """``corruption -> severity -> top-1 error`` of its benchmark corruptions."""
        bench = SETS[self.set].benchmark
        out: dict[str, dict[int, float]] = {}
        for (c, s), (e, _, _) in self.errors.items():
            if c in bench:
                out.setdefault(c, {})[s] = e
        return out

    def top1(self) -> float | None:
        """Top-1 accuracy (%): the split's, or the mean over the benchmark pairs evaluated."""
        if self.split:
            return 100.0 * (1.0 - self.errors[(NO_CORRUPTION, 0)][0])
        errs = [e for per in self.benchmark_errors().values() for e in per.values()]
        return 100.0 * (1.0 - sum(errs) / len(errs)) if errs else None

    def top5(self) -> float | None:
        """Top-5 accuracy (%) likewise, where counted."""
        vals = [t for (c, _), (_, t, _) in self.errors.items() if t is not None and (self.split or c in
                                                                                     SETS[self.set].benchmark)]
        return 100.0 * (1.0 - sum(vals) / len(vals)) if vals else None

    def normalisation(self) -> str | None:
        """How the set's mCE is normalised (``None``: it has no mCE, the headline is the mean error)."""
        sset = SETS[self.set]
        if self.subset == ROBUSTBENCH_SUBSET_LABEL and sset.robustbench_alexnet_errors is not None:
            return ROBUSTBENCH
        if sset.alexnet_errors is not None:
            return HENDRYCKS
        return None

    def mce(self) -> float | None:
        """The mCE (%) under :meth:`normalisation`, when every benchmark corruption has all 5 severities."""
        norm = self.normalisation()
        if norm is None:
            return None
        sset = SETS[self.set]
        errors = self.benchmark_errors()
        if not all(c in errors and all(s in errors[c] for s in SEVERITIES) for c in sset.benchmark):
            return None
        baseline = sset.robustbench_alexnet_errors if norm == ROBUSTBENCH else sset.alexnet_errors
        return mce_over({c: [errors[c][s] for s in SEVERITIES] for c in sset.benchmark}, baseline, sset.benchmark)

    def headline(self) -> tuple[str, float | None, str]:
        """``(metric name, value, normalisation)`` the table shows for the set."""
        if self.split:
            return "top-1", self.top1(), ""
        mce = self.mce()
        if mce is not None:
            return "mCE", mce, self.normalisation()
        top1 = self.top1()
        return "mean err", None if top1 is None else 100.0 - top1, UNNORMALISED


@dataclass
class ModelResult:
    """One model variant's sets: ``(set, classes) -> SetResult``, and its display name."""

    name: str
    sets: dict[tuple[str, str], SetResult] = field(default_factory=dict)

    def clean(self, classes: str | None = None) -> float | None:
        """Clean top-1 (%) on ImageNet val in ``classes`` (default: the model's own classes, no mask)."""
        for (s, k), r in self.sets.items():
            if s == VAL and (k == classes if classes is not None else k not in MASKED):
                return r.top1()
        return None

    def drop(self, r: SetResult) -> float | None:
        """The set's top-1 minus clean top-1 over the same classes (timm's ``top1_diff``), percent points."""
        if r.set == VAL:
            return None
        base = self.clean(r.classes if SETS[r.set].subset_of_1k else None)
        top1 = r.top1()
        return None if base is None or top1 is None or SETS[r.set].wnids is None else top1 - base


def _rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty or "set" not in df.columns:
        return df.iloc[0:0]
    sel = df[(df["suite"] == SUITE) & df["metric"].isin(("top1_err", "top5_err", "n_images"))]
    variant = pd.Series("", index=sel.index, dtype=object)
    for col in VARIANT_COLUMNS:  # every column, in order ("" where missing): _name reads them by position
        values = sel[col].map(lambda v: "" if is_missing(v) else str(v)) if col in sel.columns else ""
        variant = variant + "|" + values
    return sel.assign(variant=variant)


def _name(model: str, norm: str, variant: str, several: bool) -> str:
    from dtn_bench.shifts.plan import own_norm

    name = model if norm in (own_norm(model), "default") else f"{model}+{norm}"
    placement = variant.split("|")[6] if variant.count("|") >= 6 else ""
    if placement not in ("", "pre"):  # a placement other than pre is always named, as imagenet-c and cifar-c do
        name += f" [{placement}]"
    ckpt = variant.split("|")[1] if variant.count("|") >= 1 else ""
    if ckpt.startswith("random init"):
        return f"{name} [{ckpt}]"
    if several:
        parts = variant.split("|")[1:]
        return f"{name} @{parts[0][:6]}" + ("".join(f" [{p}]" for p in parts[2:4] if p not in ("fp32", "False")))
    return name


def summarize(df: pd.DataFrame) -> dict[tuple[str, str, str], ModelResult]:
    """``(model, norm, variant) -> ModelResult`` from the rows of one or more runs (repeated units averaged)."""
    rows = _rows(df)
    out: dict[tuple[str, str, str], ModelResult] = {}
    variants: dict[tuple[str, str], set] = {}
    for (model, norm, variant), _ in rows.groupby(["model", "norm", "variant"], sort=False):
        variants.setdefault((str(model), str(norm)), set()).add(variant)
    for (model, norm, variant), part in rows.groupby(["model", "norm", "variant"], sort=False):
        several = len(variants[(str(model), str(norm))]) > 1
        m = ModelResult(_name(str(model), str(norm), str(variant), several))
        means = part.groupby(["set", "classes", "corruption", "severity", "metric"], sort=False)["value"].mean()
        first = part.drop_duplicates(["set", "classes"]).set_index(["set", "classes"])
        for (s, k, c, sev, metric), v in means.items():
            r = m.sets.setdefault((str(s), str(k)), SetResult(str(s), str(k), transform=str(
                first.loc[(s, k)].get("transform", "")), subset=str(first.loc[(s, k)].get("subset", "full"))))
            e1, e5, n = r.errors.get((str(c), int(sev)), (float("nan"), None, 0))
            if metric == "top1_err":
                e1 = float(v)
            elif metric == "top5_err":
                e5 = float(v)
            else:
                n = round(v)
            r.errors[(str(c), int(sev))] = (e1, e5, n)
        out[(str(model), str(norm), str(variant))] = m
    return out


def _set_order(models) -> list[tuple[str, str]]:
    """The ``(set, classes)`` of every model but clean val, in table order."""
    keys = {k for m in models for k in m.sets if k[0] != VAL}
    return sorted(keys, key=lambda k: (list(SETS).index(k[0]), k[1]))


def shifts_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table: one row per model variant; clean top-1, then per set its headline and Δtop-1 (percent).

    Raises:
        DTNBenchError: no ``shifts`` rows in ``df``.
    """
    models = list(summarize(df).values())
    if not models:
        raise DTNBenchError("no shifts rows (top1_err per set) in the given results")
    keys = _set_order(models)
    columns = [("ImageNet val", "clean top-1")]
    for s, _ in keys:
        label = SETS[s].label
        heads = {m.sets[(s, k)].headline()[0] for m in models for k in [k for (x, k) in keys if x == s]
                 if (s, k) in m.sets}
        columns += [(label, h) for h in sorted(heads)] + [(label, DELTA)]
    records = []
    for m in models:
        rec = {("ImageNet val", "clean top-1"): m.clean()}
        for key in keys:
            r = m.sets.get(key)
            if r is None:
                continue
            name, value, _ = r.headline()
            rec[(SETS[key[0]].label, name)] = value
            rec[(SETS[key[0]].label, DELTA)] = m.drop(r)
        records.append([rec.get(c) for c in dict.fromkeys(columns)])
    cols = pd.MultiIndex.from_tuples(list(dict.fromkeys(columns)))
    return pd.DataFrame(records, index=pd.Index([m.name for m in models], name="model"), columns=cols, dtype=object)


def set_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, set): classes, images, top-1, top-5, headline and its normalisation, Δtop-1, transform."""
    records, index = [], []
    for m in summarize(df).values():
        for key, r in sorted(m.sets.items(), key=lambda kv: (list(SETS).index(kv[0][0]), kv[0][1])):
            name, value, norm = r.headline()
            records.append({"classes": r.classes, "images": r.images, "top-1": r.top1(), "top-5": r.top5(),
                            "headline": name, "value": value, "normalisation": norm or "—",
                            DELTA: m.drop(r), "transform": r.transform, "images of": r.subset})
            index.append((m.name, SETS[key[0]].label))
    if not records:
        raise DTNBenchError("no shifts rows (top1_err per set) in the given results")
    return pd.DataFrame(records, index=pd.MultiIndex.from_tuples(index, names=["model", "set"])).astype(object)


def _note(df: pd.DataFrame) -> str:
    norms = sorted({r.headline()[2] for m in summarize(df).values() for r in m.sets.values()} - {""})
    return ("Percent. clean top-1: ImageNet val in the model's classes. Per set: its top-1 (one split), or its mCE "
            "where a normalisation exists and every benchmark pair was evaluated, else its unnormalised mean top-1 "
            "error; Δtop-1: the set's top-1 (a corruption set: mean accuracy over its pairs) minus clean top-1, "
            "percent points, as timm's top1_diff (ImageNet-A/-R against clean val over the same 200 classes, scored "
            "through the same mask; — without clean val). Normalisations: " + "; ".join(norms) + ".")


def render(df: pd.DataFrame, fmt: str) -> str:
    """The table and the per-set table as Markdown (``md``) or LaTeX (``tex``)."""
    from dtn_bench.results.tables import to_latex, to_markdown

    table, sets = shifts_table(df), set_table(df)
    note = _note(df)
    if fmt == "md":
        return (to_markdown(table, floatfmt=".2f", title=title(df), note=note) + "\n"
                + to_markdown(sets, floatfmt=".2f", title="Per set"))
    if fmt == "tex":
        flat = table.copy()
        flat.columns = [f"{a} {b}".strip() for a, b in table.columns]
        return (to_latex(flat, floatfmt=".2f", caption=f"{title(df)}. {note}",
                         label="tab:shifts") + "\n"
                + to_latex(sets, floatfmt=".2f", caption="Per set", label="tab:shifts-sets"))
    raise DTNBenchError(f"unknown table format {fmt!r}: md or tex")


def console(df: pd.DataFrame) -> list:
    """The console summaries after a run: one line per model and set (narrow enough for a terminal), the note."""
    sets = set_table(df)[["classes", "images", "top-1", "headline", "value", DELTA]]
    sets.index = [" / ".join(map(str, k)) for k in sets.index]
    return [ConsoleTable.from_frame(sets.map(_cell), f"{title(df)} (%)", "model / set"), _note(df)]


def title(df: pd.DataFrame) -> str:
    """The table's title; demo rows say they are stand-ins, sets written by ``dtn-bench corrupt`` are named."""
    data = df["data"].astype(str) if "data" in df.columns else pd.Series([], dtype=str)
    if data.str.contains("demo stand-in").any():
        return "Robustness under distribution shift (demo stand-ins: procedural images, not the releases)"
    made = sorted({SETS[s].label for s, d in zip(df["set"], data, strict=True) if "generated by dtn-bench" in d}
                  if len(data) else set())
    return "Robustness under distribution shift" + (f" ({', '.join(made)} generated by dtn-bench corrupt, not the "
                                                    "releases)" if made else "")


def _cell(v) -> str:
    if v is None or isinstance(v, float) and v != v:
        return "—"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------------------------------
@dataclass
class _Bits:
    """One model variant's run folders and per-image bits by unit key ``(set, classes, corruption, severity)``."""

    name: str
    runs: list[Path] = field(default_factory=list)
    bits: dict[tuple, object] = field(default_factory=dict)


def _models(runs: list[Path]) -> tuple[list[_Bits], dict]:
    from dtn_bench.imagenet_c.paired import _folders
    from dtn_bench.results.io import read_rows
    from dtn_bench.shifts.correctness import read_run

    folders = _folders(runs)
    frames = [read_rows(f).assign(_folder=i) for i, f in enumerate(folders)]
    rows = _rows(pd.concat(frames, ignore_index=True, sort=False))
    sums = summarize(rows)
    out = []
    for (model, norm, variant), part in rows.groupby(["model", "norm", "variant"], sort=False):
        b = _Bits(sums[(str(model), str(norm), str(variant))].name)
        for i in dict.fromkeys(part["_folder"]):
            b.runs.append(folders[i])
            bits = read_run(folders[i])
            for key in bits.pairs if bits is not None else ():
                b.bits.setdefault(key, bits)
        out.append(b)
    return out, sums


def _difference(model: _Bits, ref: _Bits, r_model: SetResult, r_ref: SetResult, n_boot: int):
    """The paired difference of one set (model - reference) with its interval, or the reason there is none."""
    from dtn_bench.stats import bootstrap_group_means, bootstrap_mce_difference, paired_bootstrap

    keys = [k for k in ref.bits if k[:2] == (r_ref.set, r_ref.classes) and k in model.bits]
    if not keys:
        return None, "no per-image data in both: no interval"
    differ = [k for k in keys if model.bits[k].pairs[k].images_sha256 != ref.bits[k].pairs[k].images_sha256]
    if differ:
        return None, f"different images in {differ[0][2]}/{differ[0][3]}: no interval"
    a = {k: model.bits[k].correct(k) for k in keys}
    b = {k: ref.bits[k].correct(k) for k in keys}
    if r_ref.split:
        (k,) = keys
        d = paired_bootstrap(a[k].astype(float), b[k].astype(float), n_boot=n_boot, unit="image")
        return _scaled(d, 100.0), "top-1 difference (percent points)"
    norm, bench = r_ref.normalisation(), SETS[r_ref.set].benchmark
    cells = [k for k in keys if k[2] in bench]
    if norm is not None and r_ref.mce() is not None and r_model.mce() is not None:
        sset = SETS[r_ref.set]
        baseline = sset.robustbench_alexnet_errors if norm == ROBUSTBENCH else sset.alexnet_errors
        d = bootstrap_mce_difference({k[2:]: a[k] for k in cells}, {k[2:]: b[k] for k in cells}, baseline,
                                     n_boot=n_boot, joint=len({a[k].size for k in cells}) == 1)
        return d, f"mCE difference ({norm})"
    d = bootstrap_group_means([a[k] for k in cells], [b[k] for k in cells],
                              lambda ma, mb: 100.0 * (ma - mb).mean(axis=1), n_boot=n_boot,
                              joint=len({a[k].size for k in cells}) == 1)
    return d, "mean accuracy difference (percent points)"


def _scaled(d, factor: float):
    from dataclasses import replace

    return replace(d, mean=d.mean * factor, low=None if d.low is None else d.low * factor,
                   high=None if d.high is None else d.high * factor)


def paired_table(runs: list[Path], *, n_boot: int = DEFAULT_N_BOOT, numeric: bool = False) -> pd.DataFrame:
    """Every model against the first given, per set both hold: the difference, its 95% interval, significance."""
    found, sums = _models(runs)
    models = list(sums.values())
    records = []
    for mb, m in zip(found[1:], models[1:], strict=True):
        ref, r0 = found[0], models[0]
        for key in [k for k in r0.sets if k in m.sets]:
            d, what = _difference(mb, ref, m.sets[key], r0.sets[key], n_boot)
            label = SETS[key[0]].label + (f" ({key[1]})" if key[0] == VAL and key[1] in MASKED else "")
            rec = {"comparison": f"{m.name} - {r0.name}", "set": label}
            if numeric:
                rec.update(difference=None if d is None else d.mean, ci_low=None if d is None else d.low,
                           ci_high=None if d is None else d.high, what=what,
                           significant=None if d is None or not d.has_interval else d.significant)
            else:
                rec.update({"difference [95% CI]": what if d is None else d.format(2), "of": "" if d is None else what,
                            "significant": None if d is None or not d.has_interval else (
                                "significant" if d.significant else "not significant")})
            records.append(rec)
    return pd.DataFrame(records)


def documents(df: pd.DataFrame, runs: list[Path], *, n_boot: int | None = None, mcnemar: bool = False
              ) -> dict[str, str]:
    """``paired.md`` / ``.tex`` / ``.csv`` of ``table shifts`` (empty when the runs hold one model).

    Raises:
        DTNBenchError: ``n_boot`` below 1, or ``mcnemar`` (not offered for shifts).
    """
    from dtn_bench.results.tables import render as render_doc

    n_boot = DEFAULT_N_BOOT if n_boot is None else n_boot
    if n_boot < 1:
        raise DTNBenchError(f"table shifts: --n-boot must be >= 1, got {n_boot}")
    if mcnemar:
        raise DTNBenchError("table shifts: --mcnemar is offered by table imagenet-c; shifts gives paired intervals")
    table = paired_table(runs, n_boot=n_boot)
    if table.empty:
        return {}
    title = "Paired differences from the first model, bootstrap 95% interval over images"
    note = (f"model minus reference (the first model given), over the images both runs hold: top-1 (percent points; "
            f"positive: more accurate) for a split, the mCE (negative: more robust) or the mean accuracy for a "
            f"corruption set; paired percentile bootstrap ({n_boot} resamples, seed 0); 'not significant' when "
            f"the interval contains 0.")
    shown = table.set_index(["comparison", "set"])
    return {"paired.md": render_doc(shown, "md", floatfmt=".2f", title=title, note=note),
            "paired.tex": render_doc(shown, "tex", caption=f"{title}. {note}", label="tab:shifts-paired"),
            "paired.csv": render_doc(paired_table(runs, n_boot=n_boot, numeric=True), "csv")}


@dataclass(frozen=True)
class ShiftsReport(Report):
    """The ``shifts`` report: the table from the rows, and the paired comparison from the run folders."""

    comparison: object = None
    comparison_options: tuple[str, ...] = ()


SHIFTS_REPORT = ShiftsReport(render, shifts_table, "shifts table", console=console,
                             csv=lambda df: _csv(df), comparison=documents, comparison_options=("n_boot",))


def _csv(df: pd.DataFrame) -> str:
    from dtn_bench.results.tables import to_csv

    table = shifts_table(df)
    table.columns = [f"{a} / {b}" for a, b in table.columns]
    return to_csv(table)


__all__ = ["SHIFTS_REPORT", "ModelResult", "SetResult", "documents", "paired_table", "render", "set_table",
           "shifts_table", "summarize"]
