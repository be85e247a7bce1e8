"""``dtn-bench bench lra-scaling``: a small run through the CLI, the log-log slope, and one-line input errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import run_cli

from dtn_bench.bench import scaling as sb
from dtn_bench.errors import DTNBenchError
from dtn_bench.suites import SUITES, load_preset

RUN_FILES = ["rows.csv", "rows.parquet", "config.json", "table.md", "table.tex", "scaling.png"]
SMALL = ["--preset", "quick", "--models", "bigbird,transformer", "--norms", "layernorm,dtn", "--lengths", "128,256",
         "--dim", "32", "--heads", "2", "--depth", "1"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    code = run_cli(["bench", "lra-scaling", *SMALL, "--out", str(out), "--run-id", "small"])
    return code, out / sb.SUITE / "small"


def test_small_run_writes_every_file(small_run):
    code, run = small_run
    assert code == 0
    for name in RUN_FILES:
        assert (run / name).is_file(), name
        assert (run / name).stat().st_size > 0, name


def test_small_run_rows(small_run):
    _, run = small_run
    rows = pd.read_parquet(run / "rows.parquet")
    assert set(rows["suite"]) == {sb.SUITE}
    t = rows[(rows["metric"] == "time_ms") & (rows["stat"] == "median")]
    got = {(r.model, r.norm, int(r.length)) for r in t.itertuples()}
    want = {(m, n, L) for m in ("bigbird", "transformer") for n in ("layernorm", "dtn") for L in (128, 256)}
    assert got == want
    assert (t["value"] > 0).all()
    assert set(t["preset"]) == {"quick"}
    assert set(t["dim"]) == {32} and set(t["depth"]) == {1} and set(t["heads"]) == {2} and set(t["batch"]) == {1}
    alloc = rows[rows["metric"] == "alloc_mib"]
    assert len(alloc) == len(want) and (alloc["value"] > 0).all()
    assert set(alloc["unit"]) == {"MiB"}
    assert set(rows["metric"]) == {"time_ms", "alloc_mib"}  # measurements only: the slopes are derived when rendered
    reps = rows[(rows["metric"] == "time_ms") & (rows["stat"] == "rep")]  # every timed step (quick preset: one)
    assert {(r.model, r.norm, int(r.length)) for r in reps.itertuples()} == want and set(reps["repetition"]) == {0}
    assert len(reps) == len(want)
    assert set(rows["slope_min"]) == {1024} and set(rows["slope_max"]) == {4096}  # the fit range, for the report
    slopes = sb.slopes(rows)
    for metric in ("loglog_slope_time", "loglog_slope_alloc"):
        s = slopes[slopes["metric"] == metric]
        assert {(r.model, r.norm) for r in s.itertuples()} == {(m, n) for m, n, _ in want}
        assert s["value"].notna().all()
        # no measured length lies in 1024..4096: the slope falls back to every measured length
        assert set(s["length_min"]) == {128} and set(s["length_max"]) == {256} and set(s["points"]) == {2}
    csv = pd.read_csv(run / "rows.csv")
    assert len(csv) == len(rows)


def test_small_run_tables(small_run):
    _, run = small_run
    md = (run / "table.md").read_text()
    assert "| model / norm" in md
    for label in ("bigbird / layernorm", "bigbird / dtn", "transformer / layernorm", "transformer / dtn"):
        assert label in md
    assert "128" in md and "256" in md and "time slope" in md and "alloc slope" in md
    assert "(one repetition)" in md and "| no repetitions recorded" not in md  # the spreads of the one repetition
    assert "Training-step time over LayerNorm's" in md
    tex = (run / "table.tex").read_text()
    assert "\\begin{tabular}" in tex or "tabular" in tex


def test_slope_known_answer():
    lengths = [1024, 2048, 4096]
    assert sb.loglog_slope(lengths, [3.0 * L**1.5 for L in lengths]) == pytest.approx(1.5)
    assert sb.loglog_slope([512, 1024, 2048, 4096], [0.5 * L**2 for L in (512, 1024, 2048, 4096)]) == pytest.approx(2)
    assert math.isnan(sb.loglog_slope([1024], [1.0]))


def test_slope_lengths():
    assert sb.slope_lengths([512, 1024, 2048, 4096], 1024, 4096) == [1024, 2048, 4096]
    assert sb.slope_lengths([256, 512, 1024], 1024, 4096) == [256, 512, 1024]


def _pair_rows(run_id: str = "a", **settings) -> pd.DataFrame:
    """Median step times of one (model, norm) pair: 7 L^1.5 from 1024 tokens on, 1 ms at 512."""
    return pd.DataFrame([dict(model="reformer", norm="dtn", metric="time_ms", stat="median", length=L,
                              value=(7.0 * L**1.5 if L >= 1024 else 1.0), run_id=run_id, **settings)
                         for L in (512, 1024, 2048, 4096)])


def test_slopes_use_the_range():
    out = sb.slopes(_pair_rows())  # rows without slope_min / slope_max: the config's defaults, 1024..4096
    assert len(out) == 1
    r = out.iloc[0]
    assert r["metric"] == "loglog_slope_time"
    assert r["value"] == pytest.approx(1.5)
    assert (r["length_min"], r["length_max"], r["points"]) == (1024, 4096, 3)
    out = sb.slopes(_pair_rows(slope_min=512, slope_max=2048))  # the range the rows record
    assert (out.iloc[0]["length_min"], out.iloc[0]["length_max"], out.iloc[0]["points"]) == (512, 2048, 3)
    assert out.iloc[0]["value"] != pytest.approx(1.5)


def test_slopes_are_per_run_and_ranges_must_agree_before_runs_combine():
    both = pd.concat([_pair_rows("a"), _pair_rows("b", slope_min=512, slope_max=4096)], ignore_index=True)
    out = sb.slopes(both)
    assert list(out["points"]) == [3, 4]  # one slope per run, each over its own range
    with pytest.raises(DTNBenchError, match=r"table lra-scaling: the runs differ in length_min \(1024, 512\)"):
        sb.SCALING_SUITE.report.check_combinable(both, [], "table lra-scaling")
    sb.SCALING_SUITE.report.check_combinable(pd.concat([_pair_rows("a"), _pair_rows("b")]), [], "table lra-scaling")


def _rep_rows(norm: str, times: dict[int, list[float]], run_id: str = "a") -> pd.DataFrame:
    """One (model, norm) pair's typed-in step times per length and repetition, with their medians."""
    rows = []
    for length, ts in times.items():
        common = dict(model="transformer", norm=norm, metric="time_ms", length=length, run_id=run_id)
        rows.append(dict(common, stat="median", value=sorted(ts)[len(ts) // 2]))
        rows += [dict(common, stat="rep", repetition=k, value=t) for k, t in enumerate(ts)]
    return pd.DataFrame(rows)


def test_time_slope_and_ratio_spreads_of_typed_in_repetitions():
    # repetition 0 grows as L^1, repetition 1 as L^2, repetition 2 as L^1.5 (from the same time at 1024)
    times = {L: [L / 1024, (L / 1024) ** 2, (L / 1024) ** 1.5] for L in (1024, 2048, 4096)}
    ln = {L: [1.0, 2.0, 4.0] for L in (1024, 2048, 4096)}
    df = pd.concat([_rep_rows("dtn", times), _rep_rows("layernorm", ln)], ignore_index=True)
    s = sb.slopes(df).set_index("norm").loc["dtn", "spread"]
    assert (s.min, s.median, s.max, s.n) == pytest.approx((1.0, 1.5, 2.0, 3))
    table = sb.slope_table(df)
    assert table.loc["transformer / dtn", "time slope over repetitions"] == "1.50 (1.00-2.00)"
    assert table.loc["transformer / layernorm", "time slope over repetitions"] == "0.00 (0.00-0.00)"
    # at 2048, dtn over LN per repetition: 2/1, 4/2, 2^1.5/4 -> 2.0, 2.0, 0.707
    ratio = sb.ratio_table(df)
    assert ratio.loc[("transformer / dtn", 2048), "step time / LN"] == pytest.approx(2 ** 1.5 / 2.0)
    assert ratio.loc[("transformer / dtn", 2048), "over repetitions"] == "2.00 (0.71-2.00)"
    assert "1.50 (1.00-2.00)" in sb.render_report(df, "md")
    old = df[df["stat"] != "rep"]
    assert sb.slope_table(old).loc["transformer / dtn", "time slope over repetitions"] == "no repetitions recorded"


def test_reformer_buckets_keep_chunks_fixed():
    assert sb.reformer_buckets(128, 64) == 2
    assert sb.reformer_buckets(1024, 64) == 16
    assert sb.reformer_buckets(4096, 64) == 64
    assert sb.reformer_buckets(10, 64) == 2


def test_alloc_tracker_counts_new_storage_only():
    x = torch.ones(1024)  # 4 KiB
    with sb.AllocTracker() as tr:
        y = x * 2  # new: 4 KiB
        y.add_(1)  # in place: not counted
        y.view(32, 32)  # view: not counted
    assert tr.bytes == 4096


def test_presets_and_suite_registered():
    assert sb.SUITE in SUITES
    quick = load_preset(sb.SUITE, "quick")
    assert quick["lengths"] == [256, 512, 1024] and quick["batch"] == 1 and quick["iters"] == 1
    default = load_preset(sb.SUITE, "default")
    assert default["lengths"] == [512, 1024, 2048, 4096] and default["batch"] == 2 and default["iters"] == 2
    cfg = sb.ScalingBenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in default.items()})
    cfg.validate()
    assert sb.steps(cfg) == 3 * 2 * 4  # one item per (model, norm, length): the slopes are not rows


def test_config_validate_rejects_non_int_lengths():
    with pytest.raises(DTNBenchError, match="lengths"):
        sb.ScalingBenchConfig(lengths=(512.5,)).validate()


@pytest.mark.parametrize(
    "args, expect",
    [
        pytest.param(["--models", "transformer,bigbrid"], "did you mean: bigbird", id="model"),
        pytest.param(["--norms", "layernorm,dnt"], "did you mean", id="norm"),
        pytest.param(["--lengths", "0,256"], "--lengths", id="length-zero"),
        pytest.param(["--lengths", "-128"], "--lengths", id="length-negative"),
        pytest.param(["--lengths", "128,abc"], "--lengths", id="length-not-int"),
        pytest.param(["--lengths", "1.5"], "--lengths", id="length-float"),
        pytest.param(["--batch", "0"], "--batch", id="batch"),
        pytest.param(["--batch-size", "0"], "--batch", id="batch-size"),
        pytest.param(["--device", "cuda"], "CUDA", id="cuda"),
        pytest.param(["--dim", "30", "--heads", "4"], "not divisible", id="dim-heads"),
        pytest.param(["--preset", "quik"], "did you mean: quick", id="preset"),
    ],
)
def test_bad_input(monkeypatch, capsys, wide_console, tmp_path, args, expect):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results"
    preset = [] if "--preset" in args else ["--preset", "quick"]
    code = run_cli(["bench", "lra-scaling", *preset, *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err
    assert expect in err
    assert not (out / sb.SUITE).exists()
    assert not Path(out).exists() or not any(Path(out).rglob("rows.csv"))
