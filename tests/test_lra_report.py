"""The ListOps report's paired DTN - LN differences over seeds.

Intervals worked out by hand, what the table says when it cannot give one (one seed, unpaired seeds, no shared
seed), the bootstrap option and ``table listops --ci``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_one_line_error, assert_one_line_message

from dtn_bench.errors import DTNBenchError
from dtn_bench.lra import report
from dtn_bench.lra.config import ListOpsConfig
from dtn_bench.lra.suite import LISTOPS_SUITE
from dtn_bench.stats import paired_bootstrap

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "lra-listops" / "cpu-2core-quick"
T_975_2 = 4.302652729911275  # t_{0.975, 2}, from a table of the Student-t distribution
HEAD = "DTN - LN (95% CI)"


def _rows(accuracies: dict[tuple[str, str], dict[int, float]], checkpoint: str = "last") -> pd.DataFrame:
    """Test-accuracy rows: ``{(model, norm): {seed: accuracy in percent}}``."""
    return pd.DataFrame([
        {"suite": "lra-listops", "model": model, "norm": norm, "metric": "accuracy", "value": pct / 100,
         "unit": "fraction", "split": "test", "checkpoint": checkpoint, "seed": seed, "step": 10}
        for (model, norm), seeds in accuracies.items() for seed, pct in seeds.items()])


# differences DTN - LN per seed: Transformer 1, 2, 3 (the interval contains 0); BigBird 2, 3, 4 (it does not)
THREE_SEEDS = {
    ("transformer", "layernorm"): {0: 30.0, 1: 31.0, 2: 32.0},
    ("transformer", "dtn"): {0: 31.0, 1: 33.0, 2: 35.0},
    ("bigbird", "layernorm"): {0: 25.0, 1: 26.0, 2: 27.0},
    ("bigbird", "dtn"): {0: 27.0, 1: 29.0, 2: 31.0},
}


def test_t_interval_over_three_paired_seeds_by_hand():
    df = _rows(THREE_SEEDS)
    half = T_975_2 * 1.0 / math.sqrt(3)  # sd of (1, 2, 3) and of (2, 3, 4) is 1
    by_model = {c.model: c for c in report.seed_comparisons(df)}
    tr, bb = by_model["transformer"].difference, by_model["bigbird"].difference
    assert (tr.mean, tr.low, tr.high, tr.n, tr.method) == (pytest.approx(2.0), pytest.approx(2.0 - half),
                                                           pytest.approx(2.0 + half), 3, "t")
    assert (bb.mean, bb.low, bb.high) == (pytest.approx(3.0), pytest.approx(3.0 - half), pytest.approx(3.0 + half))
    table = report.paper_table(df)
    assert list(table.columns) == ["LN", "DTN", HEAD, "LRA paper (LN)", "DTN paper (DTN)"]
    assert table.loc["Transformer", HEAD] == f"2.00 [{2 - half:.2f}, {2 + half:.2f}], not significant"
    assert table.loc["Transformer", HEAD] == "2.00 [-0.48, 4.48], not significant"
    assert table.loc["BigBird", HEAD] == "3.00 [0.52, 5.48]"  # excludes 0: no "not significant"
    md = report.render_report(df, "md")
    assert "| 2.00 [-0.48, 4.48], not significant |" in md
    assert "95% Student-t interval" in md and '"not significant": the interval contains 0' in md
    tex = report.render_report(df, "tex")
    assert "2.00 [-0.48, 4.48], not significant" in tex and r"DTN - LN (95\% CI)" in tex


def test_every_other_normaliser_is_compared_with_layernorm():
    df = _rows({**THREE_SEEDS, ("transformer", "rmsnorm"): {0: 30.0, 1: 30.0, 2: 30.0}})
    table = report.paper_table(df)
    assert list(table.columns)[:5] == ["LN", "DTN", "RMSNorm", HEAD, "RMSNorm - LN (95% CI)"]
    half = T_975_2 / math.sqrt(3)  # differences 0, -1, -2: mean -1, sd 1
    assert table.loc["Transformer", "RMSNorm - LN (95% CI)"] == \
        f"-1.00 [{-1 - half:.2f}, {-1 + half:.2f}], not significant"
    assert table.loc["BigBird", "RMSNorm - LN (95% CI)"] == "-"  # no RMSNorm run of BigBird


def test_one_seed_says_no_interval_can_be_given():
    df = _rows({("transformer", "layernorm"): {0: 33.9}, ("transformer", "dtn"): {0: 35.5}})
    for ci in report.CI_METHODS:
        (c,) = report.seed_comparisons(df, ci=ci)
        assert not c.difference.has_interval and c.difference.reason == "one seed: no interval"
        assert report.paper_table(df, ci=ci).loc["Transformer", report.difference_header("dtn", ci=ci)] == \
            "1.60 (one seed: no interval)"


def test_unpaired_seeds_are_left_out_and_named():
    accuracies = {("transformer", "layernorm"): {0: 30.0, 1: 31.0, 2: 40.0},
                  ("transformer", "dtn"): {0: 31.0, 1: 33.0, 3: 50.0}}
    df = _rows(accuracies)
    (c,) = report.seed_comparisons(df)
    assert c.difference.n == 2 and c.difference.mean == pytest.approx(1.5)  # seeds 0 and 1: differences 1, 2
    assert (c.only_norm, c.only_reference) == ((3,), (2,))
    note = "Transformer, DTN - LN: seed 3 only in DTN; seed 2 only in LN, left out (unpaired)"
    assert c.note() == note and report.difference_notes(df) == [note]
    table = report.paper_table(df)
    assert table.loc["Transformer", "LN"] == f"33.67 ± {pd.Series([30.0, 31.0, 40.0]).std():.2f}"  # all its seeds
    assert f"{note}." in report.render_report(df, "md")
    assert f"{note}." in report.render_report(df, "tex")  # in the caption
    assert LISTOPS_SUITE.report.console(df)[1:] == [note]


def test_no_shared_seed_is_a_note_not_an_interval():
    df = _rows({("transformer", "layernorm"): {0: 30.0, 1: 31.0}, ("transformer", "dtn"): {2: 31.0, 3: 33.0}})
    (c,) = report.seed_comparisons(df)
    assert c.difference is None and c.cell() == "no shared seeds"
    note = "Transformer, DTN - LN: no seed has both (seeds 2, 3 only in DTN; seeds 0, 1 only in LN), so no difference"
    assert c.note() == note
    assert report.paper_table(df).loc["Transformer", HEAD] == "no shared seeds"
    assert f"{note}." in report.render_report(df, "md")


def test_a_seed_measured_twice_counts_once_with_its_mean():
    df = pd.concat([_rows(THREE_SEEDS), _rows({("transformer", "dtn"): {0: 33.0}})])  # seed 0 again: mean 32
    (c, _) = report.seed_comparisons(df)
    assert c.difference.n == 3 and c.difference.mean == pytest.approx((2 + 2 + 3) / 3)


def test_bootstrap_when_asked():
    df = _rows(THREE_SEEDS)
    (c, _) = report.seed_comparisons(df, ci="bootstrap")
    d = c.difference
    assert d.method == "bootstrap" and d.mean == pytest.approx(2.0)
    assert 1.0 <= d.low < 2.0 < d.high <= 3.0  # a percentile interval of means of resampled differences 1, 2, 3
    same = paired_bootstrap([31.0, 33.0, 35.0], [30.0, 31.0, 32.0], n_boot=report.N_BOOT, seed=0)
    assert (d.low, d.high) == pytest.approx((same.low, same.high))  # seeded: the table re-renders identically
    table = report.paper_table(df, ci="bootstrap")
    head = "DTN - LN (95% CI, bootstrap)"
    assert head in table.columns and table.loc["Transformer", head].startswith("2.00 [")
    md = report.render_report(df, "md", ci="bootstrap")
    assert "paired percentile-bootstrap interval (10,000 resamples of the seeds)" in md
    assert md == report.render_report(df, "md", ci="bootstrap")
    with pytest.raises(DTNBenchError) as e:
        report.paper_table(df, ci="wald")
    assert_one_line_message(e.value, "--ci 'wald': choose t or bootstrap")


def test_the_report_declares_its_ci_option():
    df = _rows(THREE_SEEDS)
    assert LISTOPS_SUITE.report.options == ("ci",)
    docs = LISTOPS_SUITE.report.documents(df, ("table.md", "table.csv"), ci="bootstrap")
    assert "(95% CI, bootstrap)" in docs["table.md"] and "(95% CI, bootstrap)" in docs["table.csv"]
    with pytest.raises(DTNBenchError, match="takes no option level"):
        LISTOPS_SUITE.report.documents(df, level=0.9)


def test_duplicate_seeds_are_a_one_line_error(invoke):
    with pytest.raises(DTNBenchError) as e:
        ListOpsConfig(seeds=(0, 0, 1)).validate()
    assert_one_line_message(e.value, "--seeds 0,0,1: duplicate seed: 0 (2 times)")
    code, _, err = invoke("lra", "listops", "--preset", "quick", "--seeds", "0,0,1", "--steps", "1")
    assert_one_line_error(code, err, "duplicate seed: 0 (2 times)")


def test_the_committed_run_config_still_loads():
    settings = json.loads((COMMITTED / "config.json").read_text())
    settings.pop("malloc_tuned")  # recorded with the settings: what the run's allocator tuning did
    ListOpsConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}).validate()


# ---------------------------------------------------------------------------------------------------------------------
# `dtn-bench table listops --ci`
def _copy(dst: Path, keep=None, **changes) -> Path:
    """The committed run's rows (only those ``keep(df)`` selects) and config under another run id."""
    df = pd.read_csv(COMMITTED / "rows.csv")
    if keep is not None:
        df = df[keep(df)]
    for column, change in changes.items():
        df[column] = change(df) if callable(change) else change
    df["run_id"] = dst.name
    dst.mkdir(parents=True)
    df.to_csv(dst / "rows.csv", index=False)
    (dst / "config.json").write_text((COMMITTED / "config.json").read_text())
    return dst


def _seed(n: int):
    return lambda df: df["seed"].where(df["seed"] < 0, n)


def _seed_0(df):
    return df["seed"] <= 0  # seed 0 and the baseline (seed -1)


def test_table_listops_ci_bootstrap(tmp_path, invoke):
    one = _copy(tmp_path / "s0", keep=_seed_0)  # the committed run's seed 0: Transformer DTN - LN = 34.5 - 32.6
    code, out, err = invoke("table", "listops", str(one), "--ci", "bootstrap", "--format", "csv")
    assert code == 0, err
    t = pd.read_csv(io.StringIO(out)).set_index("model")
    assert t.loc["Transformer", "DTN - LN (95% CI, bootstrap)"] == "1.90 (one seed: no interval)"

    def dtn_up(points):  # DTN's accuracies raised by `points` (percent) in a copy
        return lambda df: df["value"].where((df["metric"] != "accuracy") | (df["norm"] != "dtn"),
                                            df["value"] + points / 100)

    runs = [str(one), *(str(_copy(tmp_path / f"s{n}", keep=_seed_0, seed=_seed(n), value=dtn_up(n)))
                        for n in (1, 2))]
    cells = {}
    for ci, head in (("t", HEAD), ("bootstrap", "DTN - LN (95% CI, bootstrap)")):
        code, _, err = invoke("table", "listops", *runs, "--ci", ci, "--out", str(tmp_path / ci))
        assert code == 0, err
        assert head in (tmp_path / ci / "table.md").read_text()
        cells[ci] = pd.read_csv(tmp_path / ci / "table.csv").set_index("model").loc["Transformer", head]
    half = T_975_2 / math.sqrt(3)  # Transformer DTN - LN over seeds 0, 1, 2: 1.90, 2.90, 3.90 (mean 2.90, sd 1)
    assert cells["t"] == f"2.90 [{2.9 - half:.2f}, {2.9 + half:.2f}]" == "2.90 [0.42, 5.38]"  # excludes 0
    assert cells["bootstrap"].startswith("2.90 [") and cells["bootstrap"] != cells["t"]
    # the committed run itself: seeds 0, 1, 2 with differences 1.9, 0.0, 2.0 (mean 1.30, sd 1.127)
    code, out, err = invoke("table", "listops", str(COMMITTED), "--format", "csv")
    assert code == 0, err
    half = T_975_2 * math.sqrt(((1.9 - 1.3) ** 2 + 1.3**2 + 0.7**2) / 2) / math.sqrt(3)
    assert pd.read_csv(io.StringIO(out)).set_index("model").loc["Transformer", HEAD] == \
        f"1.30 [{1.3 - half:.2f}, {1.3 + half:.2f}], not significant" == "1.30 [-1.50, 4.10], not significant"
    code, _, err = invoke("table", "listops", str(COMMITTED), "--ci", "wald")
    assert_one_line_error(code, err, "--ci 'wald': choose t or bootstrap")
    code, _, err = invoke("table", "norms", str(REPO / "results" / "bench-norms" / "cpu-2core-xeon"), "--ci", "t")
    assert code == 2 and "--ci" in err  # only suites whose report declares it take --ci


def test_table_listops_of_runs_without_a_shared_seed(tmp_path, invoke):
    ln = _copy(tmp_path / "ln", keep=lambda df: (df["norm"] != "dtn") & _seed_0(df))
    dtn = _copy(tmp_path / "dtn", keep=lambda df: (df["norm"] != "layernorm") & _seed_0(df), seed=_seed(1))
    code, out, err = invoke("table", "listops", str(ln), str(dtn))
    assert code == 0, err
    assert "no shared seeds" in out
    for model in ("Transformer", "BigBird", "Reformer"):
        assert f"{model}, DTN - LN: no seed has both (seed 1 only in DTN; seed 0 only in LN), so no difference." in out
