"""Paired comparisons of ImageNet-C runs on the same images, from the runs' per-image correctness.

``dtn-bench table imagenet-c RUN_A RUN_B ...`` renders the paper-style table from the rows (``table.md``) and, when
the rows hold more than one model (one row of that table each), this comparison beside it (``paired.md`` /
``.tex`` / ``.csv``; with ``--mcnemar`` also ``mcnemar.md`` / ``.tex`` / ``.csv``):

- every model against the reference, the first model given (runs given LN first, DTN second compare
  ``vit_t_dtn - vit_t_ln``, the sign of the table's ``DTN - LN`` row): the paired percentile bootstrap 95% interval
  of ``mCE_model - mCE_reference`` over images (:func:`dtn_bench.stats.bootstrap_mce_difference` with
  :data:`dtn_bench.metrics.ALEXNET_ERRORS`; ``n_boot`` resamples, 1000 by default, seed 0; one image resample shared
  by every pair when every pair holds the same images), ``not significant`` when the interval contains 0. The mCE
  is over the benchmark pairs both models have per-image data for (the published mCE needs all 15 corruptions x 5
  severities; with fewer, the interval is over the pairs present, as the table's CE needs all 5 severities);
- with ``mcnemar``, McNemar's test (:func:`dtn_bench.stats.mcnemar`, exact below 25 discordant images, else
  chi-square with continuity correction) per (corruption, severity) both hold, the clean set and extras included:
  ``b`` = images the model gets right and the reference wrong, ``c`` the reverse, significant at 0.05.

A model's per-image data come from its run folders' ``correct/`` (:mod:`dtn_bench.shifts.correctness`); a pair
measured by several of its runs is taken from the first given. Runs made before per-image data were kept, or a
model pair whose runs hold different images in a pair, get the row's note ``no per-image data: no interval`` (or
which images differ) instead of an interval; with ``mcnemar`` they are a one-line error naming the runs. An
unreadable image (left out of the rows' error) counts as wrong in the bits, and the note says how many there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from dtn_bench.errors import DTNBenchError
from dtn_bench.metrics import ALEXNET_ERRORS, CORRUPTIONS, SEVERITIES
from dtn_bench.shifts.correctness import RunBits, read_run
from dtn_bench.stats import PairedDifference, bootstrap_mce_difference, mcnemar

DEFAULT_N_BOOT = 1000
SEED = 0
NO_DATA = "no per-image data: no interval"
DOCUMENTS = ("paired.md", "paired.tex", "paired.csv")
MCNEMAR_DOCUMENTS = ("mcnemar.md", "mcnemar.tex", "mcnemar.csv")
ALL_PAIRS = len(CORRUPTIONS) * len(SEVERITIES)


@dataclass
class Model:
    """One row of the paper-style table (a model variant) with the run folders and per-image data behind it.

    ``robustbench``: its rows are on RobustBench's 5,000-image list (its mCE normalised by AlexNet on that subset).
    """

    name: str
    runs: list[Path] = field(default_factory=list)
    bits: dict[tuple[str, int], RunBits] = field(default_factory=dict)
    robustbench: bool = False

    def baseline(self) -> dict:
        """The AlexNet errors its mCE divides by."""
        from dtn_bench.metrics import robustbench_alexnet_errors

        return robustbench_alexnet_errors("2d") if self.robustbench else ALEXNET_ERRORS

    @property
    def run_names(self) -> str:
        """Its run folders, comma-separated."""
        return ", ".join(map(str, self.runs))


@dataclass
class Comparison:
    """``model`` against ``reference``: the mCE difference with its interval, or why there is none."""

    model: Model
    reference: Model
    cells: list[tuple[str, int]]
    difference: PairedDifference | None = None
    reason: str | None = None
    joint: bool = True
    unreadable: int = 0

    @property
    def label(self) -> str:
        """``model - reference``."""
        return f"{self.model.name} - {self.reference.name}"


def _folders(runs: list[Path]) -> list[Path]:
    from dtn_bench.results.io import _rows_files

    seen, out = set(), []
    for run in runs:
        for file in _rows_files(Path(run)):
            if file.resolve() not in seen:
                seen.add(file.resolve())
                out.append(file.parent)
    return out


def models(runs: list[Path]) -> list[Model]:
    """The models (table rows) of ``runs`` in the order given, each with its run folders and per-image data."""
    from dtn_bench.imagenet_c.report import _pair_rows, display_name
    from dtn_bench.results.io import read_rows

    folders = _folders(runs)
    frames = [read_rows(f).assign(_folder=i) for i, f in enumerate(folders)]
    rows = _pair_rows(pd.concat(frames, ignore_index=True, sort=False))
    out = []
    from dtn_bench.metrics import ROBUSTBENCH_SUBSET_LABEL

    for (model, norm, data, tag), part in rows.groupby(["model", "norm", "data", "variant"], sort=False):
        m = Model(display_name(str(model), str(norm), str(tag)), robustbench=ROBUSTBENCH_SUBSET_LABEL in str(data))
        for i in dict.fromkeys(part["_folder"]):
            m.runs.append(folders[i])
            bits = read_run(folders[i])
            for key in bits.pairs if bits is not None else ():
                m.bits.setdefault(key, bits)
        out.append(m)
    return out


def compare(model: Model, reference: Model, *, n_boot: int = DEFAULT_N_BOOT, seed: int = SEED) -> Comparison:
    """The paired bootstrap interval of ``mCE_model - mCE_reference`` over the benchmark pairs both hold."""
    shared = _ordered(k for k in reference.bits if k in model.bits)
    cells = [k for k in shared if k[0] in CORRUPTIONS]
    out = Comparison(model, reference, cells)
    missing = [m for m in (reference, model) if not m.bits]
    if missing:
        out.reason = f"{NO_DATA} ({'; '.join(m.run_names for m in missing)})"
        return out
    differ = _differing(model, reference, shared)
    if differ:
        out.reason = differ
        return out
    if not cells:
        out.reason = "no benchmark pair with per-image data in both: no interval"
        return out
    if model.robustbench != reference.robustbench:
        out.reason = "one is on RobustBench's subset, the other not (different mCE normalisations): no interval"
        return out
    entries = {k: reference.bits[k].pairs[k] for k in cells}
    out.joint = len({e.images_sha256 for e in entries.values()}) == 1
    out.unreadable = sum(len(m.bits[k].pairs[k].unreadable) for m in (model, reference) for k in cells)
    out.difference = bootstrap_mce_difference({k: model.bits[k].correct(k) for k in cells},
                                              {k: reference.bits[k].correct(k) for k in cells}, reference.baseline(),
                                              n_boot=n_boot, seed=seed, joint=out.joint)
    return out


def _ordered(keys) -> list[tuple[str, int]]:
    """Pairs in the canonical order: clean, the 15, the extras; severities ascending."""
    from dtn_bench.metrics import EXTRA_CORRUPTIONS

    order = {c: i for i, c in enumerate(("clean", *CORRUPTIONS, *EXTRA_CORRUPTIONS))}
    return sorted(keys, key=lambda k: (order.get(k[0], len(order)), k))


def _differing(model: Model, reference: Model, shared: list[tuple[str, int]]) -> str | None:
    """Why the two hold different images (naming the pairs and runs), or ``None`` when every shared pair agrees."""
    if not shared:
        return f"{model.name} and {reference.name} share no pair with per-image data: no interval"
    bad = [k for k in shared if model.bits[k].pairs[k].images_sha256 != reference.bits[k].pairs[k].images_sha256]
    if not bad:
        return None
    pairs = ", ".join(f"{c}/{s}" for c, s in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return (f"different images in {pairs} ({model.bits[bad[0]].run} against {reference.bits[bad[0]].run}): "
            f"no interval")


def comparisons(runs: list[Path], *, n_boot: int = DEFAULT_N_BOOT, seed: int = SEED) -> list[Comparison]:
    """Every model of ``runs`` against the first (none when the runs hold one model)."""
    found = models(runs)
    return [compare(m, found[0], n_boot=n_boot, seed=seed) for m in found[1:]]


def _pairs_text(c: Comparison) -> str:
    n = len(c.cells)
    return f"{n} (all 15 x 5)" if n == ALL_PAIRS and not c.reason else f"{n} of the {ALL_PAIRS}"


def paired_table(found: list[Comparison], *, numeric: bool = False) -> pd.DataFrame:
    """One row per comparison: pairs, images per pair, the mCE difference [95% CI] and whether it is significant.

    With ``numeric`` (the CSV), the difference and interval ends are numbers and the runs are named.
    """
    records = []
    for c in found:
        d = c.difference
        sizes = {c.reference.bits[k].pairs[k].n for k in c.cells}
        images = (next(iter(sizes)) if len(sizes) == 1 else "varies") if sizes else None
        if numeric:
            records.append({"comparison": c.label, "model": c.model.name, "reference": c.reference.name,
                            "pairs": len(c.cells), "images_per_pair": images,
                            "mce_difference": None if d is None else d.mean,
                            "ci_low": None if d is None else d.low, "ci_high": None if d is None else d.high,
                            "significant": None if d is None or not d.has_interval else d.significant,
                            "note": c.reason or (d.reason if d is not None else None) or "",
                            "model_runs": c.model.run_names, "reference_runs": c.reference.run_names})
            continue
        if d is None:
            shown, verdict = c.reason, None
        else:
            shown = d.format(2)
            verdict = ("significant" if d.significant else "not significant") if d.has_interval else None
        records.append({"comparison": c.label, "pairs": _pairs_text(c), "images/pair": images,
                        "mCE difference [95% CI]": shown, "significant": verdict})
    return pd.DataFrame(records).set_index("comparison")


def _note(found: list[Comparison], n_boot: int, seed: int) -> str:
    shared = ("one image resample shared by every pair" if all(c.joint for c in found) else
              "each pair resampled on its own where the pairs hold different image lists")
    note = (f"mCE difference (percent points, AlexNet-normalised): model minus reference (the first model given), "
            f"paired percentile bootstrap over images ({n_boot} resamples, seed {seed}, {shared}); 'not "
            f"significant' when the 95% interval contains 0. Over the benchmark pairs both runs hold per-image data "
            f"for (the published mCE needs all 15 corruptions x 5 severities).")
    unreadable = sum(c.unreadable for c in found)
    if unreadable:
        note += (f" {unreadable} unreadable image(s) in the compared runs count as wrong here (the rows leave them "
                 f"out of the error).")
    return note


def mcnemar_table(found: list[Comparison]) -> pd.DataFrame:
    """McNemar's test per (corruption, severity) both runs of each comparison hold.

    Raises:
        DTNBenchError: a comparison without per-image data, or whose runs hold different images (one line, naming
            the runs).
    """
    records = []
    for c in found:
        missing = [m for m in (c.reference, c.model) if not m.bits]
        if missing:
            names = "; ".join(m.run_names for m in missing)
            raise DTNBenchError(f"table imagenet-c --mcnemar: no per-image data in {names} (runs made before "
                                f"per-image correctness was kept): rerun them")
        shared = _ordered(k for k in c.reference.bits if k in c.model.bits)
        differ = _differing(c.model, c.reference, shared)
        if differ:
            raise DTNBenchError(f"table imagenet-c --mcnemar: {c.label}: {differ.removesuffix(': no interval')}")
        for key in shared:
            r = mcnemar(c.model.bits[key].correct(key), c.reference.bits[key].correct(key))
            records.append({"comparison": c.label, "corruption": key[0], "severity": key[1],
                            "b (model right, ref. wrong)": r.b, "c (model wrong, ref. right)": r.c,
                            "p": float(r.p_value), "test": r.method,
                            "significant at 0.05": "significant" if r.significant else "not significant"})
    return pd.DataFrame(records)


MCNEMAR_NOTE = ("McNemar's test of the model against the reference on the same images, per (corruption, severity): "
                "b = images the model gets right and the reference wrong, c = the reverse; exact binomial test when "
                "b + c < 25, else chi-square with continuity correction (1 df); p two-sided.")


def documents(df: pd.DataFrame, runs: list[Path], *, n_boot: int | None = None, mcnemar: bool = False,
              seed: int = SEED) -> dict[str, str]:
    """The comparison documents of ``table imagenet-c``: ``paired.md`` / ``.tex`` / ``.csv`` (and ``mcnemar.*``).

    Args:
        df: the rows (unused: the models are read per run folder, to find each one's per-image data).
        runs: the run folders (rows files, folders of runs) given.
        n_boot: bootstrap resamples (default 1000).
        mcnemar: add the McNemar tables.
        seed: bootstrap seed.

    Returns:
        ``{file name: text}``; empty when the runs hold one model.

    Raises:
        DTNBenchError: ``n_boot`` below 1; with ``mcnemar``, runs without per-image data or with different images.
    """
    from dtn_bench.results.tables import render

    n_boot = DEFAULT_N_BOOT if n_boot is None else n_boot
    if n_boot < 1:
        raise DTNBenchError(f"table imagenet-c: --n-boot must be >= 1, got {n_boot}")
    found = comparisons(runs, n_boot=n_boot, seed=seed)
    if not found:
        return {}
    title = "Paired mCE difference, bootstrap 95% interval over images"
    note = _note(found, n_boot, seed)
    table = paired_table(found)
    out = {"paired.md": render(table, "md", floatfmt=".2f", title=title, note=note),
           "paired.tex": render(table, "tex", caption=f"{title}. {note}", label="tab:imagenet-c-paired"),
           "paired.csv": render(paired_table(found, numeric=True), "csv")}
    if mcnemar:
        tests = mcnemar_table(found)
        shown = tests.assign(p=tests["p"].map(lambda p: f"{p:.3g}")).set_index("comparison")
        out["mcnemar.md"] = render(shown, "md", title="McNemar per corruption and severity", note=MCNEMAR_NOTE)
        out["mcnemar.tex"] = render(shown, "tex", caption=f"McNemar per corruption and severity. {MCNEMAR_NOTE}",
                                    label="tab:imagenet-c-mcnemar")
        out["mcnemar.csv"] = render(tests, "csv")
    return out
