"""`dtn-bench table SUITE RUN...`: tables and plots re-rendered from finished runs (rendering only)."""

from __future__ import annotations

import io
import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import assert_one_line_error

from dtn_bench.bench import report as norms_report
from dtn_bench.bench import scaling
from dtn_bench.lra import report as lra_report
from dtn_bench.profile import report as profile_report
from dtn_bench.results.io import read_rows
from dtn_bench.results.tables import to_csv

REPO = Path(__file__).resolve().parents[1]


def test_table_norms_from_the_committed_reference_run(tmp_path, invoke):
    run = REPO / "results" / "bench-norms" / "cpu-2core-xeon"
    code, _, err = invoke("table", "norms", str(run), "--out", str(tmp_path / "t"))
    assert code == 0, err
    md = (tmp_path / "t" / "table.md").read_text()
    assert "dtn_authors" in md and "DTN speed-up vs authors' algorithm" in md
    assert md == (run / "table.md").read_text()  # the same rows render the same tables
    assert "**Normaliser comparison, DTN paper layout" in md.split("**Summary**")[1]
    assert (tmp_path / "t" / "norms.png").stat().st_size > 0
    code, out, err = invoke("table", "norms", str(run), "--format", "tex")
    assert code == 0 and "\\begin{tabular}" in out, err


def test_table_lra_scaling_renders_slopes(tmp_path, invoke):
    res = tmp_path / "res"
    code, _, err = invoke("bench", "lra-scaling", "--preset", "quick", "--lengths", "64,128", "--models",
                          "transformer", "--norms", "layernorm", "--out", str(res), "--run-id", "s")
    assert code == 0, err
    code, _, err = invoke("table", "lra-scaling", str(res / "bench-lra-scaling" / "s"), "--out", str(tmp_path / "t"))
    assert code == 0, err
    assert (tmp_path / "t" / "table.md").read_text() == (res / "bench-lra-scaling" / "s" / "table.md").read_text()
    assert (tmp_path / "t" / "scaling.png").is_file()


def test_table_of_the_wrong_suite_is_an_error(invoke):
    run = REPO / "results" / "bench-norms" / "cpu-2core-xeon"
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, "no lra-listops rows")
    code, _, err = invoke("table", "norms", str(run), "--format", "html")
    assert_one_line_error(code, err, "--format")


# ---------------------------------------------------------------------------------------------------------------------
# CSV, comparable settings, the normaliser comparison, `table all`
RESULTS = REPO / "results"
RUNS = {
    "profile": RESULTS / "profile" / "cpu-2core-xeon",
    "listops": RESULTS / "lra-listops" / "cpu-2core-quick",
    "norms": RESULTS / "bench-norms" / "cpu-2core-xeon",
    "lra-scaling": RESULTS / "bench-lra-scaling" / "cpu-2core-xeon",
}
PAPER_COLUMNS = ["LN", "BN", "IN", "GN", "SN", "ScN", "PN", "DTN"]


def _copy_run(src: Path, dst: Path, config: dict | None = None, **changes) -> Path:
    """A copy of a committed run (rows.csv, config.json) under another run id, with columns changed (a value, or a
    function of the rows) and config fields overridden."""
    df = pd.read_csv(src / "rows.csv")
    for column, change in changes.items():
        df[column] = change(df) if callable(change) else change
    df["run_id"] = dst.name
    dst.mkdir(parents=True)
    df.to_csv(dst / "rows.csv", index=False)
    (dst / "config.json").write_text(json.dumps({**json.loads((src / "config.json").read_text()), **(config or {})}))
    return dst


@pytest.mark.parametrize("suite, main_table, columns", [
    ("profile", lambda df: profile_report.table1(df),
     ["Model", "Norm", "H", "C", "FLOPs ours (G)", "FLOPs paper (G)", "Norm GMACs", "Norm GMACs dense",
      "Params ours (M)", "Params paper (M)", "Top-1 paper (%)"]),
    ("listops", lambda df: lra_report.paper_table(df, "last"),
     ["model", "LN", "DTN", "DTN - LN (95% CI)", "LRA paper (LN)", "DTN paper (DTN)"]),
    ("norms", lambda df: norms_report.comparison_table(df), ["model", "figure", *PAPER_COLUMNS]),
    ("lra-scaling", lambda df: scaling.summary_table(df),
     ["model / norm", *(f"step ms (median), length {n}" for n in (512, 1024, 2048, 4096)),
      "log-log slope of step time", "log-log slope of step time over repetitions", "log-log slope of alloc_mib",
      "slopes fitted over lengths"]),
])
def test_table_csv_is_the_paper_table_printed_and_written(suite, main_table, columns, tmp_path, invoke):
    run = RUNS[suite]
    code, out, err = invoke("table", suite, str(run), "--format", "csv")
    assert code == 0, err
    code, _, err = invoke("table", suite, str(run), "--out", str(tmp_path))
    assert code == 0, err
    written = (tmp_path / "table.csv").read_text()
    assert out == written  # stdout is the CSV alone, exactly as written
    assert list(pd.read_csv(tmp_path / "table.csv").columns)[:len(columns)] == columns
    assert written == to_csv(main_table(read_rows(run)))  # the same table as the Markdown one, at full precision
    assert {p.name for p in tmp_path.iterdir()} >= {"table.md", "table.tex", "table.csv"}


def test_table_csv_shows_published_numbers_beside_ours(invoke):
    code, out, _ = invoke("table", "profile", str(RUNS["profile"]), "--format", "csv")
    assert code == 0
    t = pd.read_csv(io.StringIO(out), dtype=str).set_index(["Model", "Norm"])
    assert t.loc[("ViT-S", "dtn"), "FLOPs paper (G)"] == "4.88"
    assert t.loc[("ViT-T", "layernorm"), "FLOPs paper (G)"] == "1.26"  # the authors' README: ViT-T 1.26G, 5.7M
    assert t.loc[("ViT-T", "layernorm"), "Params paper (M)"] == "5.7"
    assert t.loc[("ViT-T", "dtn"), "Params paper (M)"] == "not published"
    code, out, _ = invoke("table", "listops", str(RUNS["listops"]), "--format", "csv")
    assert code == 0
    t = pd.read_csv(io.StringIO(out), dtype=str).set_index("model")
    assert t.loc["BigBird", "LRA paper (LN)"] == "36.05" and t.loc["BigBird", "DTN paper (DTN)"] == "not published"


@pytest.mark.parametrize("suite, changes, config, expect", [
    ("profile", {"autocast": "bf16"}, None, "table profile: the runs differ in autocast (none, bf16); render them "
     "separately"),
    ("profile", {"mode": "train"}, None, "differ in mode (inference, train)"),
    ("profile", {"channels_last": True}, None, "differ in channels_last (False, True)"),
    ("profile", {"dtype": "bfloat16"}, None, "differ in dtype (float32, bfloat16)"),
    ("profile", {"compile_mode": "max-autotune"}, None, "differ in compile_mode (none, max-autotune)"),
    ("profile", {"dtn_kernel": "triton"}, None, "differ in dtn_kernel (eager, triton)"),
    ("profile", {"device_name": "NVIDIA H100 80GB HBM3"}, None, "differ in device_name (cpu: x86_64, NVIDIA H100"),
    ("profile", {"threads": 2}, None, "differ in threads (1, 2)"),
    ("listops", {"preset": "lra"}, None, "table listops: the runs differ in preset (quick, lra)"),
    ("listops", {"step": lambda df: df["step"].where(df["checkpoint"] != "last", 400)}, None,
     "differ in training steps (500, 400)"),
    ("listops", {"seed": lambda df: df["seed"].where(df["seed"] < 0, df["seed"] + 10)}, {"lr": 0.01},
     "table listops: the runs differ in lr (0.001, 0.01)"),
    ("norms", {"dim": lambda df: df["dim"].where(df["dim"].isna(), 432)}, None, "differ in dim (384, 432)"),
    ("norms", {"batch": lambda df: df["batch"].where(df["model"] != "vit_s_ln", 16)}, None,
     "differ in batch (32, 16)"),
    ("norms", {"device": "cuda: NVIDIA H100"}, None, "differ in device (cpu: x86_64, cuda: NVIDIA H100)"),
    ("lra-scaling", {"batch": 4}, None, "table lra-scaling: the runs differ in batch (2, 4)"),
    ("lra-scaling", {"n_buckets": lambda df: df["n_buckets"] * 2}, None, "differ in n_buckets (8, 16)"),
])
def test_table_refuses_runs_measured_under_different_settings(suite, changes, config, expect, tmp_path, invoke):
    run = RUNS[suite]
    if suite == "profile" and "dtn_kernel" in changes:  # the committed run predates the column: give it one
        run = _copy_run(run, tmp_path / "eager", dtn_kernel="eager")
    other = _copy_run(RUNS[suite], tmp_path / "other", config, **changes)
    code, out, err = invoke("table", suite, str(run), str(other), "--out", str(tmp_path / "t"))
    assert code == 2, out
    assert_one_line_error(code, err, expect)
    assert not (tmp_path / "t").exists()
    code, _, err = invoke("table", "all", str(run), str(other), "--out", str(tmp_path / "all"))
    assert_one_line_error(code, err, expect.split(": ")[-1])
    assert not (tmp_path / "all").exists()


@pytest.mark.parametrize("suite", list(RUNS))
def test_table_combines_repeated_runs_of_the_same_settings(suite, tmp_path, invoke):
    seed = {"seed": lambda df: df["seed"].where(df["seed"] < 0, df["seed"] + 10)} if suite == "listops" else {}
    again = _copy_run(RUNS[suite], tmp_path / "again", **seed)
    code, alone, err = invoke("table", suite, str(RUNS[suite]))
    assert code == 0, err
    code, both, err = invoke("table", suite, str(RUNS[suite]), str(again))
    assert code == 0, err
    if suite == "listops":  # the copy is seeds 10-12 with the same numbers: Transformer LN 32.6, 33.8, 33.7 twice
        assert "| 33.37 ± 0.67 " in alone and "| 33.37 ± 0.60 " in both
    else:
        assert both == alone


def test_table_listops_combines_seeds_and_profile_combines_models(tmp_path, invoke):
    def seed_1(df):  # seeds 0, 1, 2 -> 10, 11, 12
        return df["seed"].where(df["seed"] < 0, df["seed"] + 10)

    def better(df):
        return df["value"].where(df["metric"] != "accuracy", df["value"] + 0.01)

    other = _copy_run(RUNS["listops"], tmp_path / "seed1", seed=seed_1, value=better)
    code, out, err = invoke("table", "listops", str(RUNS["listops"]), str(other), "--format", "csv")
    assert code == 0, err
    t = pd.read_csv(io.StringIO(out)).set_index("model")
    assert t.loc["Transformer", "LN"] == "33.87 ± 0.81"  # 32.6, 33.8, 33.7 and each + 1 (sample sd)
    # the same differences 1.9, 0.0, 2.0 twice: mean 1.30, sd 1.008, t_{0.975, 5} = 2.570582 (a t table)
    half = 2.570582 * math.sqrt(2 * ((1.9 - 1.3) ** 2 + 1.3**2 + 0.7**2) / 5) / math.sqrt(6)
    assert t.loc["Transformer", "DTN - LN (95% CI)"] == f"1.30 [{1.3 - half:.2f}, {1.3 + half:.2f}]"

    def rename(df):
        return df["model"].replace({"vit_s": "vit_b_star"})

    b = _copy_run(RUNS["profile"], tmp_path / "vit_b", model=rename, model_label=lambda df: df["model_label"].replace(
        {"ViT-S": "ViT-B*"}))
    code, out, err = invoke("table", "profile", str(RUNS["profile"]), str(b), "--format", "csv")
    assert code == 0, err
    t = pd.read_csv(io.StringIO(out), dtype=str).set_index(["Model", "Norm"])
    assert t.loc[("ViT-B*", "dtn"), "FLOPs paper (G)"] == "18.13"
    assert t.loc[("ViT-S", "dtn"), "FLOPs paper (G)"] == "4.88"


def test_table_norms_paper_comparison(tmp_path, invoke):
    run = RUNS["norms"]
    code, out, err = invoke("table", "norms", str(run), "--format", "csv")
    assert code == 0, err
    t = pd.read_csv(io.StringIO(out), dtype=str).set_index(["model", "figure"])
    # then DyT and Derf (the Derf README's rows publish them), then the others measured
    assert list(t.columns) == [*PAPER_COLUMNS, "dyt", "derf", "dtn_var", "rmsnorm", "dtn_authors"]
    paper = t.xs("top-1 (%), paper", level="figure")
    assert paper.loc["ViT-S", PAPER_COLUMNS].tolist() == "79.9 77.3 77.7 78.3 80.1 80.0 79.8 80.6".split()
    assert paper.loc["ViT-S*", PAPER_COLUMNS].tolist() == "80.6 77.2 77.6 79.5 81.0 80.6 80.4 81.7".split()
    assert set(paper[["dtn_var", "rmsnorm", "dtn_authors"]].to_numpy().ravel()) == {"not published"}
    # the Derf README (stock timm ViT-B / ViT-L, every LayerNorm replaced): LN, DyT, Derf; nothing else published
    assert paper.loc["ViT-B", ["LN", "dyt", "derf"]].tolist() == ["82.3", "82.5", "82.8"]
    assert paper.loc["ViT-L", ["LN", "dyt", "derf"]].tolist() == ["83.1", "83.6", "83.8"]
    assert set(paper.loc["ViT-B", ["BN", "DTN", "PN"]]) == set(paper.loc["ViT-S", ["dyt", "derf"]]) == {"not published"}
    ours = t.xs("top-1 (%), ours", level="figure")
    assert set(ours[["LN", "BN", "DTN", "rmsnorm"]].to_numpy().ravel()) == {"not measured"}
    not_paper = t.drop(index="top-1 (%), paper", level="figure")
    assert set(not_paper["SN"].to_numpy()) == {"not provided"}  # the source does not expand SN
    assert set(not_paper["PN"].to_numpy()) == {"not measured"}  # implemented (powernorm), not in this run
    rows = pd.read_csv(run / "rows.csv")
    fwd = rows[(rows["metric"] == "time_ms") & (rows["stat"] == "median") & (rows["pass"] == "fwd")].set_index("norm")
    assert float(t.loc[("ViT-S", "fwd ms per layer, ours"), "DTN"]) == pytest.approx(fwd.loc["dtn", "value"])
    assert float(t.loc[("ViT-S", "fwd time / LN time, ours"), "GN"]) == pytest.approx(
        fwd.loc["groupnorm", "value"] / fwd.loc["layernorm", "value"])
    assert t.loc[("ViT-S*", "fwd ms per layer, ours"), "DTN"] == "not measured"  # measured at ViT-S's layer shape
    star = _copy_run(run, tmp_path / "star", dim=lambda df: df["dim"].where(df["dim"].isna(), 432),
                     heads=lambda df: df["heads"].where(df["heads"].isna(), 9))
    code, out, err = invoke("table", "norms", str(star), "--format", "csv")
    assert code == 0, err
    t = pd.read_csv(io.StringIO(out), dtype=str).set_index(["model", "figure"])
    assert float(t.loc[("ViT-S*", "fwd ms per layer, ours"), "DTN"]) == pytest.approx(fwd.loc["dtn", "value"])
    assert t.loc[("ViT-S", "fwd ms per layer, ours"), "DTN"] == "not measured"
    code, md, _ = invoke("table", "norms", str(run))
    assert "Normaliser comparison" in md and "not provided: not implemented in this package" in md


def test_table_all_renders_every_suite(tmp_path, invoke):
    # results/bench-norms holds runs of two machines and results/bench-seq-norms runs at 1 and 2 threads, which do not
    # combine: the Xeon run and the 2-thread run stand for their suites here
    code, _, err = invoke("table", "all", str(RESULTS))
    assert_one_line_error(code, err, "the runs differ in")
    runs = [p for p in sorted(RESULTS.iterdir()) if p.is_dir() and p.name not in ("bench-norms", "bench-seq-norms")]
    runs += [RESULTS / "bench-norms" / "cpu-2core-xeon", RESULTS / "bench-seq-norms" / "cpu-2core"]
    code, out, err = invoke("table", "all", *map(str, runs), "--out", str(tmp_path / "all"))
    assert code == 0, err
    assert "bench-corrupt" in err  # rows of a suite without tables are named and left out
    for suite, command, plot in (("profile", "profile", "latency.png"), ("bench-norms", "norms", "norms.png"),
                                 ("bench-lra-scaling", "lra-scaling", "scaling.png"),
                                 ("lra-listops", "listops", "curves.png"), ("imagenet-c", "imagenet-c", "ce_bars.png")):
        assert f"## {suite}\n" in out
        code, _, err = invoke("table", command, *map(str, runs), "--out", str(tmp_path / command))
        assert code == 0, err
        for name in ("table.md", "table.tex", "table.csv"):
            assert (tmp_path / "all" / suite / name).read_text() == (tmp_path / command / name).read_text(), name
        assert (tmp_path / "all" / suite / plot).read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "all" / "bench-corrupt").exists()
    code, out, err = invoke("table", "all", str(RUNS["profile"]), str(RUNS["norms"]), "--format", "csv")
    assert code == 0, err
    blocks = dict(block.split("\n", 1) for block in out.split("\n\n"))  # "# <suite>" heading, then its CSV
    blocks = {key: text.rstrip("\n") + "\n" for key, text in blocks.items()}
    assert list(blocks) == ["# profile", "# bench-norms"]
    for key, command in (("# profile", "profile"), ("# bench-norms", "norms")):
        _, alone, _ = invoke("table", command, str(RUNS[command]), "--format", "csv")
        assert blocks[key] == alone


def test_table_all_without_rows_of_a_suite_with_tables_is_an_error(tmp_path, invoke):
    code, _, err = invoke("table", "all", str(RESULTS / "bench-corrupt"), "--out", str(tmp_path / "t"))
    assert_one_line_error(code, err, "table all: no rows of a suite with tables", "bench-corrupt")
    assert not (tmp_path / "t").exists()
    code, _, err = invoke("table", "all", str(RUNS["profile"]), "--format", "html")
    assert_one_line_error(code, err, "choose md, tex or csv")


# ---------------------------------------------------------------------------------------------------------------------
# the spread over repetitions beside each ratio: typed-in repetitions against a hand computation
def _norm_rows(run_id: str, reps: dict, models: dict | None = None) -> pd.DataFrame:
    """bench-norms rows of one run: per ``(norm, pass)`` the typed-in repetition times (ms), their median and min;
    per model its repetition throughputs (img/s)."""
    from dtn_bench.results.schema import make_row

    shape = dict(batch=64, tokens=196, dim=384, heads=6, run_id=run_id)
    rows = []
    for (norm, pass_), times in reps.items():
        rows += [make_row("bench-norms", "layer", norm, "time_ms", statistics.median(times), stat="median",
                          **{"pass": pass_}, **shape),
                 make_row("bench-norms", "layer", norm, "time_ms", min(times), stat="min", **{"pass": pass_}, **shape)]
        rows += [make_row("bench-norms", "layer", norm, "time_ms", t, stat="rep", repetition=k, **{"pass": pass_},
                          **shape) for k, t in enumerate(times)]
    for model, tps in (models or {}).items():
        norm = "dtn" if model.endswith("_dtn") else "layernorm"
        common = dict(batch=32, run_id=run_id)
        rows += [make_row("bench-norms", model, norm, "throughput_img_s", statistics.median(tps), stat="median",
                          **common),
                 make_row("bench-norms", model, norm, "throughput_img_s", max(tps), stat="best", **common)]
        rows += [make_row("bench-norms", model, norm, "throughput_img_s", v, stat="rep", repetition=k, **common)
                 for k, v in enumerate(tps)]
    return pd.DataFrame(rows)


TYPED = {("layernorm", "fwd"): [1.0, 2.0, 4.0], ("dtn", "fwd"): [2.0, 3.0, 10.0],
         ("dtn_authors", "fwd"): [20.0, 36.0]}  # the authors' algorithm timed twice: 2 pairs with DTN
TYPED_MODELS = {"vit_s_ln": [10.0, 20.0, 40.0], "vit_s_dtn": [8.0, 15.0, 36.0]}


def test_norms_spreads_of_typed_in_repetitions_equal_the_hand_computation():
    df = _norm_rows("a", TYPED, TYPED_MODELS)
    # dtn / LN per repetition: 2/1, 3/2, 10/4 = 2.0, 1.5, 2.5 -> median 2.0, min 1.5, max 2.5
    layer = norms_report.layer_table(df)
    assert layer.loc["dtn", "fwd / LN"] == pytest.approx(3.0 / 2.0)  # the ratio of the medians, as before
    assert layer.loc["dtn", "fwd / LN over repetitions"] == "2.00 (1.50-2.50)"
    assert layer.loc["layernorm", "fwd / LN over repetitions"] == "1.00 (1.00-1.00)"
    # the authors over DTN, repetitions 0 and 1 (both timed): 20/2, 36/3 = 10, 12 -> median 11
    sp = norms_report.speedups(df)
    assert sp["value"].item() == pytest.approx(28.0 / 3.0)
    s = sp["spread"].item()
    assert (s.min, s.median, s.max, s.n) == (10.0, 11.0, 12.0, 2)
    # vit_s_dtn / vit_s_ln per repetition: 8/10, 15/20, 36/40 = 0.8, 0.75, 0.9
    ratios = norms_report.throughput_ratios(df)
    assert list(ratios["stat"]) == ["median", "best"]
    assert all((s.min, s.median, s.max) == pytest.approx((0.75, 0.8, 0.9)) for s in ratios["spread"])
    summary = norms_report.summary_table(df)
    spread = summary["over repetitions"]
    assert spread["DTN speed-up vs authors' algorithm (fwd, batch 64)"] == "11.00 (10.00-12.00)"
    assert spread["vit_s_dtn / vit_s_ln throughput (median)"] == "0.80 (0.75-0.90)"
    assert spread["vit_s_dtn inference throughput (batch 32, fp32 eager)"] == "15.00 (8.00-36.00)"
    table = norms_report.comparison_table(df)
    assert table.loc[("ViT-S", "fwd time / LN time, ours, over repetitions"), "DTN"] == "2.00 (1.50-2.50)"
    assert table.loc[("ViT-S", "fwd time / LN time, ours"), "DTN"] == pytest.approx(1.5)
    assert table.loc[("ViT-S*", "fwd time / LN time, ours, over repetitions"), "DTN"] == "not measured"
    md = norms_report.render_report(df, "md")
    assert "2.00 (1.50-2.50)" in md and "0.80 (0.75-0.90)" in md
    assert "2.00 (1.50-2.50)" in norms_report.render_report(df, "tex")
    assert "2.00 (1.50-2.50)" in to_csv(norms_report.comparison_table(df))


def test_norms_spreads_pool_the_pairs_of_combined_runs():
    b = {("layernorm", "fwd"): [1.0], ("dtn", "fwd"): [3.0], ("dtn_authors", "fwd"): [30.0]}
    df = pd.concat([_norm_rows("a", TYPED), _norm_rows("b", b)], ignore_index=True)
    # run a's pairs (2.0, 1.5, 2.5) and run b's (3.0); never run a's repetition 0 with run b's
    assert norms_report.layer_table(df).loc["dtn", "fwd / LN over repetitions"] == "2.25 (1.50-3.00)"
    speed = norms_report.summary_table(df)["over repetitions"]
    assert speed["DTN speed-up vs authors' algorithm (fwd, batch 64)"] == "10.00 (10.00-12.00)"  # 10, 12, 10


def test_rows_without_repetitions_render_the_note():
    old = read_rows(RUNS["norms"])
    assert "rep" not in set(old["stat"])  # the reference run kept the median and the minimum only
    summary = norms_report.summary_table(old)
    assert set(summary["over repetitions"]) == {norms_report.NO_REPETITIONS}
    assert summary.loc["vit_s_dtn / vit_s_ln throughput (median)", "value"] == pytest.approx(0.8988, abs=1e-4)
    layer = norms_report.layer_table(old)
    assert set(layer["fwd / LN over repetitions"]) == {norms_report.NO_REPETITIONS}
    md = (RUNS["norms"] / "table.md").read_text()
    assert "| vit_s_dtn / vit_s_ln throughput (median)               |   0.90 | x     | no repetitions recorded |" in md
    profile = profile_report.overhead_table(read_rows(RUNS["profile"]))
    assert set(profile["dtn / LN over repetitions"]) == {norms_report.NO_REPETITIONS}
    slopes = scaling.slope_table(read_rows(RUNS["lra-scaling"]))
    assert set(slopes["time slope over repetitions"]) == {norms_report.NO_REPETITIONS}
    ratio = scaling.ratio_table(read_rows(RUNS["lra-scaling"]))
    assert set(ratio["over repetitions"]) == {norms_report.NO_REPETITIONS}


def test_corrupt_peer_speedup_spread():
    from dtn_bench.bench import corrupt
    from dtn_bench.results.schema import make_row

    def rows(with_reps: bool) -> pd.DataFrame:
        out = []
        for impl, times in (("dtn-bench", {"snow": [1.0, 2.0], "fog": [3.0, 2.0]}),
                            ("imagecorruptions", {"snow": [4.0, 6.0], "fog": [8.0, 10.0]})):
            for name, ts in times.items():
                common = dict(corruption=name, impl=impl, batch_size=2, threads=1, run_id="r")
                out.append(make_row("bench-corrupt", "-", "-", "time_ms", sum(ts) / 2, stat="median", **common))
                if with_reps:
                    out += [make_row("bench-corrupt", "-", "-", "time_ms", t, stat="rep", repetition=k, **common)
                            for k, t in enumerate(ts)]
        return pd.DataFrame(out)

    # summed per repetition: ours 1+3 = 4, 2+2 = 4; the peer's 4+8 = 12, 6+10 = 16 -> 3.0, 4.0
    sp = corrupt.peer_speedups(rows(True))
    assert sp["value"].item() == pytest.approx(14.0 / 4.0)
    assert sp["over repetitions"].item() == "3.50 (3.00-4.00)"
    assert corrupt.peer_speedups(rows(False))["over repetitions"].item() == norms_report.NO_REPETITIONS
    assert any(line.endswith("; over repetitions: 3.50 (3.00-4.00)") for line in corrupt.pass_lines(rows(True)))


# ---------------------------------------------------------------------------------------------------------------------
# issue 21 section 5: rows validated on read, a seed counts once in listops, --out checked before printing
def _listops_copy(dst: Path, run_id: str | None = None, parquet: bool = True, edit=None) -> Path:
    """The committed listops run copied to ``dst`` (rows.csv, rows.parquet, config.json), its rows edited first."""
    df = pd.read_parquet(RUNS["listops"] / "rows.parquet")
    if run_id is not None:
        df["run_id"] = run_id
    if edit is not None:
        df = edit(df)
    dst.mkdir(parents=True)
    df.to_csv(dst / "rows.csv", index=False, lineterminator="\n")
    if parquet:
        df.to_parquet(dst / "rows.parquet", index=False)
    (dst / "config.json").write_text((RUNS["listops"] / "config.json").read_text())
    return dst


def _test_accuracy(value: float):
    def edit(df):
        last = (df["metric"] == "accuracy") & (df["split"] == "test") & (df["checkpoint"] == "last")
        df.loc[last & (df["seed"] == 0) & (df["model"] == "transformer") & (df["norm"] == "layernorm"), "value"] = value
        return df
    return edit


def test_table_listops_refuses_a_seed_trained_by_two_runs(tmp_path, invoke):
    # hostile pass, failure 1: run b has run a's settings and seeds (another machine), 50% test accuracy; they were
    # averaged as one seed (n = 2 per-seed means where 4 runs were measured)
    a = _listops_copy(tmp_path / "a", "a")
    b = _listops_copy(tmp_path / "b", "b", edit=_test_accuracy(0.5))
    code, out, err = invoke("table", "listops", str(a), str(b), "--format", "csv")
    assert_one_line_error(code, err, "table listops: transformer/layernorm/seed 0 was trained by two runs",
                          f"({a} and {b})", "a seed counts once")
    assert out == ""
    # the same run folder copied and passed twice (T16)
    code, _, err = invoke("table", "listops", str(a), str(_listops_copy(tmp_path / "copy")))
    assert_one_line_error(code, err, "seed 0 was trained by two runs", str(tmp_path / "copy"))
    # one folder given twice is read once: no error
    code, _, err = invoke("table", "listops", str(a), str(a / "rows.parquet"))
    assert code == 0, err


def test_table_refuses_a_duplicated_row_inside_one_run(tmp_path, invoke):
    # T05: one row of the run written twice
    run = _listops_copy(tmp_path / "dup", edit=lambda df: pd.concat([df, df.iloc[[3]]], ignore_index=True))
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, str(run / "rows.parquet"), f"rows 3 and {len(read_rows(RUNS['listops']))} "
                          "measure the same thing twice", "metric=loss, split=val, seed=0")


@pytest.mark.parametrize("value, expect", [
    (5.0, "accuracy = 5.0 (row"),  # T04: printed as 500.0
    (-3.0, "accuracy = -3.0"),  # T13
    (math.inf, "accuracy = inf"),  # T14
])
def test_table_refuses_values_outside_their_metric_range(value, expect, tmp_path, invoke):
    run = _listops_copy(tmp_path / "bad", edit=_test_accuracy(value))
    code, out, err = invoke("table", "listops", str(run), "--format", "csv")
    why = "must be finite" if math.isinf(value) else "a fraction must be in [0, 1]"
    assert_one_line_error(code, err, str(run / "rows.parquet"), expect, why)
    assert out == ""


def test_table_refuses_a_nan_accuracy_and_values_of_other_units(tmp_path, invoke):
    run = _listops_copy(tmp_path / "nan", edit=_test_accuracy(math.nan))  # T12: shown as an empty cell
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, "transformer/layernorm/seed 0 has an accuracy row without a value")
    from dtn_bench.errors import DTNBenchError
    from dtn_bench.results.schema import check_values, make_row
    ok = pd.DataFrame([make_row("s", "m", "n", "loss", math.inf), make_row("s", "m", "n", "top1_err", math.nan),
                       make_row("s", "m", "n", "latency_ms_p50", 0.0), make_row("s", "m", "n", "novel", -2.0, "z")])
    check_values(ok, "x")  # a diverged loss, "no value", zero time, a unit of unknown range
    for row in (make_row("s", "m", "n", "latency_ms_p50", -1.0), make_row("s", "m", "n", "mce", -0.5),
                make_row("s", "m", "n", "novel", -math.inf, "z")):
        with pytest.raises(DTNBenchError, match=f"{row['metric']} = "):
            check_values(pd.DataFrame([row]), "x")


def test_table_reads_neither_an_edited_csv_beside_its_parquet_nor_a_truncated_csv(tmp_path, invoke):
    # T01: a non-numeric value in rows.csv was ignored because rows.parquet is read when it exists
    run = _listops_copy(tmp_path / "edited")
    text = (run / "rows.csv").read_text().splitlines(keepends=True)
    cells = text[4].split(",")
    cells[4] = "abc"
    (run / "rows.csv").write_text("".join(text[:4] + [",".join(cells)] + text[5:]))
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, f"{run}: rows.parquet and rows.csv disagree", "row 3, value", "'abc'")
    # an edited number: the same, naming the row
    run = _listops_copy(tmp_path / "edited2")
    (run / "rows.csv").write_text((run / "rows.csv").read_text().replace("0.326,fraction,test", "0.926,fraction,test"))
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, "rows.parquet and rows.csv disagree", "row 4, value: 0.326 vs 0.926")
    # T07: a rows.csv cut in the middle of a line (no rows.parquet)
    run = _listops_copy(tmp_path / "cut", parquet=False)
    data = (run / "rows.csv").read_bytes()
    (run / "rows.csv").write_bytes(data[: len(data) // 2])
    code, _, err = invoke("table", "listops", str(run))
    assert_one_line_error(code, err, f"results file {run / 'rows.csv'} is truncated")


def test_table_out_that_cannot_be_written_fails_before_printing(tmp_path, invoke):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        code, stdout, err = invoke("table", "listops", str(RUNS["listops"]), "--out", str(out))
        assert_one_line_error(code, err, f"--out {out}")
        assert stdout == ""  # the table was printed before the write failed
    code, stdout, err = invoke("table", "all", str(RUNS["listops"]), "--out", str(blocker))
    assert_one_line_error(code, err, f"--out {blocker} exists and is not a folder")
    assert stdout == ""
